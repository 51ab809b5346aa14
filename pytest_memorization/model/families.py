"""What each model family is and supports: the one home of family-specific knowledge.

A family is detected from the loaded pipeline's class, from a folder's ``model_index.json``
(``_class_name``), or from a single checkpoint's state-dict keys. Everything else in
``model/`` and ``run/`` asks the ``Family`` record instead of testing class names.

| family | pipeline | denoiser | negative prompt | guidance | CUDA dtype (auto) |
|---|---|---|---|---|---|
| sd (1.x/2.x) | StableDiffusionPipeline | UNet (epsilon or v) | yes | classifier-free | float16 |
| sdxl | StableDiffusionXLPipeline | UNet + added conditions | yes | classifier-free | float16 |
| sd3 | StableDiffusion3Pipeline | MMDiT transformer (flow) | yes | classifier-free | bfloat16 |
| flux | FluxPipeline | Flux transformer (flow) | no | distilled guidance embedding | bfloat16 |

SD 1/2/XL run in float16 on CUDA; SDXL's own VAE overflows in float16 (black or NaN images,
which the output guard turns into an error): use an fp16-safe VAE such as
``madebyollin/sdxl-vae-fp16-fix`` or ``--memorization-dtype float32``. SD3 and Flux were
trained in bfloat16 and overflow in float16, so ``auto`` picks bfloat16 for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, MemorizationConfigError


@dataclass(frozen=True)
class Family:
    name: str
    label: str
    pipeline_class: str  # the diffusers class for text-to-image (single files load with it)
    negative_prompt: bool  # the pipeline takes a negative prompt
    classifier_free: bool  # False: guidance is a distilled embedding (Flux-dev), no unconditional pass
    cuda_dtype: str
    # whether the model-internal detectors (detectors/, which read this record) can run:
    # noise magnitude (SD 1/2: the paper's UNet loop; SDXL/SD3/Flux: the denoiser's output) and
    # trigger tokens (the gradient with respect to the encoders' per-token rows).
    noise_magnitude: bool
    trigger_tokens: bool


SD = Family("sd", "Stable Diffusion 1.x/2.x", "StableDiffusionPipeline", True, True, "float16", True, True)
SDXL = Family("sdxl", "Stable Diffusion XL", "StableDiffusionXLPipeline", True, True, "float16", True, True)
SD3 = Family("sd3", "Stable Diffusion 3.x", "StableDiffusion3Pipeline", True, True, "bfloat16", True, True)
FLUX = Family("flux", "Flux", "FluxPipeline", False, False, "bfloat16", True, True)
OTHER = Family("other", "other diffusers pipeline", "", True, True, "float16", False, False)
GENERATOR = Family("generator", "external generator", "", True, True, "float32", False, False)
FAMILIES = {f.name: f for f in (SD, SDXL, SD3, FLUX, OTHER, GENERATOR)}

# Longest prefix first: StableDiffusionXL... and StableDiffusion3... before StableDiffusion...
_CLASS_PREFIXES = (("StableDiffusionXL", SDXL), ("StableDiffusion3", SD3), ("Flux", FLUX),
                   ("StableDiffusion", SD), ("AltDiffusion", SD))

# Distinctive single-file (original, non-diffusers) key fragments, most specific first.
_KEY_MARKERS = (
    (FLUX, ("double_blocks.", "single_blocks.")),
    (SD3, ("model.diffusion_model.joint_blocks.",)),
    (SDXL, ("conditioner.embedders.1.", "model.diffusion_model.label_emb.0.0.")),  # OpenCLIP-G; size conditioning
    (SD, ("model.diffusion_model.input_blocks.", "cond_stage_model.")),
)


def family_of_class(class_name: str) -> Family | None:
    """The family of a diffusers pipeline class name (text-to-image, img2img, inpaint alike)."""
    for prefix, family in _CLASS_PREFIXES:
        if class_name.startswith(prefix):
            return family
    return None


def family_of(pipe: object) -> Family:
    """The family of a loaded pipeline. An unknown class is ``OTHER``: it may generate, but no
    model-internal detector claims to understand it (never guessed as SD)."""
    return family_of_class(type(pipe).__name__) or OTHER


def negative_prompt_kwargs(family: Family, negative_prompt: str | None, n: int) -> dict[str, object]:
    """The pipeline keyword for a negative prompt; an error where the family has none (never ignored)."""
    if not negative_prompt:
        return {}
    if not family.negative_prompt:
        raise MemorizationConfigError(
            f"negative_prompt is set but {family.label} models have no negative prompt (guidance-distilled: no "
            "classifier-free pass), so it would be silently ignored; remove negative_prompt for this model")
    return {"negative_prompt": [negative_prompt] * n}


def family_of_folder(folder: Path) -> Family | None:
    """The family named by a diffusers folder's model_index.json, or None when unknown/unreadable."""
    try:
        name = json.loads((folder / "model_index.json").read_text()).get("_class_name", "")
    except (OSError, ValueError, AttributeError):
        return None
    return family_of_class(str(name))


def family_of_keys(keys: Iterable[str]) -> Family | None:
    """The family of an original-format single checkpoint from its state-dict keys."""
    keys = list(keys)
    for family, markers in _KEY_MARKERS:
        if any(marker in k for k in keys for marker in markers):
            return family
    return None


def checkpoint_keys(path: Path) -> list[str]:
    """The tensor names of a checkpoint, reading only the safetensors header (no weights)."""
    if path.suffix != ".safetensors":
        return []  # pickles are not opened here; the caller falls back to the config folder
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as e:  # a damaged header is the user's file problem, reported as such
        raise CheckpointError(f"{path}: cannot read the safetensors header ({type(e).__name__}: {e})") from e


def single_file_family(path: Path, config: Path) -> Family:
    """The family of a single checkpoint, checked against its ``config`` folder: a mismatch is an error."""
    from_keys = family_of_keys(checkpoint_keys(path))
    from_config = family_of_folder(config)
    if from_keys and from_config and from_keys is not from_config:
        raise CheckpointError(
            f"{path} is a {from_keys.label} checkpoint (from its keys) but --memorization-config {config} is a "
            f"{from_config.label} pipeline folder; point the config at a folder of the same family")
    family = from_keys or from_config
    if family is None:
        raise CheckpointError(
            f"{path}: cannot tell the model family from its keys or from {config}/model_index.json; "
            "supported single files are SD 1/2, SDXL, SD3 and Flux checkpoints")
    return family


def family_hint(kind: str, path: Path | None, hub_folder: Callable[[], Path]) -> Family | None:
    """The family before loading (it picks the dtype): the checkpoint's keys or model_index.json.
    A hint only: an unreadable file is reported by the loader's checks that follow, in their order."""
    try:
        if kind == "single-file" and path is not None:
            return family_of_keys(checkpoint_keys(path))
        return family_of_folder(path if kind == "folder" and path is not None else hub_folder())
    except CheckpointError:
        return None


def default_dtype(family: Family | None, device: str) -> str:
    """``--memorization-dtype auto``: the family's CUDA dtype on CUDA, float32 elsewhere."""
    if not device.startswith("cuda"):
        return "float32"
    return (family or SD).cuda_dtype


def size_kwargs(pipe: Any, height: int, width: int) -> dict[str, int]:
    """``height``/``width`` for pipelines whose img2img call takes them (Flux, SD3): without them
    Flux resizes the start image to its default size. SD 1/2/XL img2img take the image's size."""
    import inspect

    params = inspect.signature(type(pipe).__call__).parameters
    return {"height": height, "width": width} if "height" in params and "width" in params else {}


def not_applicable(detector: str, family: Family) -> str:
    """The reason a detector cannot run on a family: reported, never a silent pass."""
    if family is GENERATOR:
        needs = "the model's denoiser and text encoders, which an external generator does not expose"
    elif detector == "trigger_tokens":
        needs = "the denoiser and the text encoders of SD 1/2, SDXL, SD3 or Flux"
    else:
        needs = "a diffusers denoiser (pipe.unet or pipe.transformer) of a known family"
    return (f"{detector} is not applicable to {family.label} models yet: it needs {needs}. Remove it from "
            "[detectors] for this model, or gate with the reference metrics and seed_diversity")

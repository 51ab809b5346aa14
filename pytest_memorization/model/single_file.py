"""Text encoders (and a VAE) that a single-file checkpoint does not hold, loaded from its config folder.

diffusers' ``from_single_file(file, config=folder)`` converts what the file holds and loads the
remaining *diffusers* components from the folder, but not the *transformers* ones (it looks for
``diffusion_pytorch_model.*`` where a text encoder has ``model.safetensors``) and asks the caller
to pass them instead. Files without text encoders are common (``sd3_medium.safetensors``, SDXL
and Flux denoiser-only exports), so the loader passes each missing text encoder itself, loaded
from the config folder, and says which component is missing when the folder has no weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

# Original-layout key prefixes of each text encoder, per pipeline component.
_IN_FILE = {
    "sd": {"text_encoder": ("cond_stage_model.",)},
    "sdxl": {"text_encoder": ("conditioner.embedders.0.",), "text_encoder_2": ("conditioner.embedders.1.",)},
    "sd3": {"text_encoder": ("text_encoders.clip_l.",), "text_encoder_2": ("text_encoders.clip_g.",),
            "text_encoder_3": ("text_encoders.t5xxl.",)},
    "flux": {"text_encoder": ("text_encoders.clip_l.",), "text_encoder_2": ("text_encoders.t5xxl.",)},
}


def missing_text_encoders(family: str, keys: Iterable[str]) -> list[str]:
    """The text-encoder components of ``family`` with no weights among ``keys``."""
    keys = list(keys)
    return [name for name, prefixes in _IN_FILE.get(family, {}).items()
            if not any(k.startswith(prefixes) for k in keys)]


def text_encoders_from_config(family: str, keys: Iterable[str], config: Path, dtype: Any) -> dict[str, Any]:
    """{component: loaded model} for each text encoder the file lacks, from ``config``; and the
    VAE when the file has none (FLUX.1 and denoiser-only files hold the transformer alone)."""
    import transformers

    keys = list(keys)
    index = json.loads((config / "model_index.json").read_text())
    out: dict[str, Any] = {}
    if family != "sd" and not any(k.startswith(("first_stage_model.", "vae.")) for k in keys):
        from diffusers import AutoencoderKL

        if not (config / "vae" / "diffusion_pytorch_model.safetensors").is_file():
            raise CheckpointError(
                f"the single file holds no VAE and the config folder {config / 'vae'} has no weights either "
                "(diffusion_pytorch_model.safetensors): put the VAE's weights there, or use a file that includes it")
        out["vae"] = AutoencoderKL.from_pretrained(config / "vae", local_files_only=True, torch_dtype=dtype)
    for name in missing_text_encoders(family, keys):
        entry = index.get(name)
        if not isinstance(entry, list) or entry[0] is None:
            continue  # an optional encoder the pipeline runs without (e.g. SD3 without T5)
        folder = config / name
        if not any((folder / w).is_file() for w in ("model.safetensors", "model.safetensors.index.json")):
            raise CheckpointError(
                f"the single file holds no weights for '{name}' and the config folder {folder} has none either "
                "(model.safetensors): put the text encoder's weights there (save_pretrained of the pipeline), "
                "or use a single file that includes its text encoders")
        out[name] = getattr(transformers, entry[1]).from_pretrained(folder, local_files_only=True, dtype=dtype)
    return out


def load_single_file(source: Any, path: Path, common: dict[str, Any], diffusers: Any, wrap: Any) -> Any:
    """The pipeline of a single-file checkpoint, its configs from ``source.config``."""
    from .families import SD, checkpoint_keys, single_file_family

    if not source.config:
        raise CheckpointError(
            f"{path}: a single-file checkpoint needs a local config folder, since offline diffusers cannot "
            "fetch its configs from the hub. Pass --memorization-config <diffusers folder of the same "
            "architecture> (or config = \"folder\" in the manifest's [model])"
        )
    cfg = Path(source.config).expanduser()
    if not (cfg / "model_index.json").is_file():
        raise CheckpointError(
            f"--memorization-config {cfg}: not a diffusers folder (no model_index.json); point it at a "
            "pipeline folder of the same architecture as the checkpoint"
        )
    family = single_file_family(path, cfg)  # keys vs config folder: a mismatch is a CheckpointError
    pipeline_class = getattr(diffusers, family.pipeline_class)
    kwargs = dict(common) if family is SD else {"dtype": common["dtype"]}
    kwargs.update(text_encoders_from_config(family.name, checkpoint_keys(path), cfg, common["dtype"]))
    return wrap(lambda: pipeline_class.from_single_file(str(path), config=str(cfg), local_files_only=True,
                                                         **kwargs), path)

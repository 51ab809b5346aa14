"""Really trained tiny diffusion models for the demo and the strongest tests.

``build_all(out_dir)`` trains, deterministically and on the CPU, four diffusers folders:

* ``vae``: a small ``AutoencoderKL`` (64 px images, 32 x 32 x 12 latents) trained on random
  32 px patches of scikit-image photographs AND of the works and the face (40 % of patches).
  The VAE is shared by every model and cannot generate anything by itself; training it on the
  works too makes the clean twin's "no copy" result stricter (its decoder can render the
  works well, the twin's UNet just never asks it to).
* ``memorizer``: a UNet trained only on the five works with their captions. It reproduces them.
* ``clean_twin``: the same architecture, VAE and text encoder, trained on 256 crops of 15 other
  photographs and 199 other LFW crops with varied captions; the works and the face are excluded.
  It does not reproduce them.
* ``lora``: a LoRA on the clean twin trained on one LFW face ("a photo of sks person");
  with it the face comes back, at scale 0 it does not.
* ``style_lora``: a harmless LoRA on the clean twin, as long and with the same settings as the
  face LoRA, trained on 64 clean-twin-like crops in sepia (``data.style_dataset``) with their
  own captions: every image turns sepia, no work and no face is learnt.

Both LoRA folders carry a model card (``README.md`` with YAML front matter, as the diffusers
DreamBooth scripts write it), which the LoRA gate reads for canary prompts.

The UNets predict x0 (``prediction_type="sample"``), see ``PREDICTION_TYPE``; the text
encoder is the seeded random tiny CLIP of ``pytest_memorization.testing`` with its token
embeddings scaled up (``TOKEN_EMBEDDING_SCALE``). Generation settings: ``GENERATION``
(20 DDIM steps, guidance 1.5, 64 px); at guidance 3 and 5 the memorizer's copies degrade
(classifier-free guidance overshoots a tiny model's unconditional prediction).

The works are the PNGs in ``fixtures/works`` (see its LICENSES.md); ``write_works`` recreates
them from ``skimage.data``. Outputs are cached: each folder holds a ``build_stamp.json`` whose
hash covers this module's source, the training code, the parameters, the works' bytes and
the library versions; a matching stamp makes a rerun instant. Needs scikit-image.

Imports torch lazily; only the test suite and the demo builder import this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from demo import data as demo_data
from demo.data import FACE, WORKS, load_works, tiled_l2, write_works

__all__ = [
    "BUILD_PARAMS",
    "FACE",
    "GENERATION",
    "WORKS",
    "build_all",
    "generate",
    "load_works",
    "tiled_l2",
    "write_works",
]

DEFAULT_WORKS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "works"

# The generation settings the manifests in examples/ use.
GENERATION: dict[str, Any] = dict(steps=20, guidance_scale=1.5, height=64, width=64, seeds=[0, 1, 2, 3])

# VAE: like pytest_memorization.testing.TINY_VAE (vae_scale_factor 2, 64 px -> 32 x 32), but
# with 12 latent channels (2 x 2 x 3: room for every pixel) and no attention, so a few hundred
# CPU steps reconstruct photographs well.
VAE_CONFIG: dict[str, Any] = dict(
    block_out_channels=(16, 32),
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    latent_channels=12,
    norm_num_groups=8,
    sample_size=64,
    mid_block_add_attention=False,
)
# UNet: three levels, 32 x 32 (16 ch), 16 x 16 (32 ch), 8 x 8 (64 ch, cross-attention).
UNET_CONFIG: dict[str, Any] = dict(
    block_out_channels=(16, 32, 64),
    layers_per_block=1,
    sample_size=32,
    in_channels=12,
    out_channels=12,
    down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    cross_attention_dim=32,
    norm_num_groups=8,
    attention_head_dim=8,
    # An attention-pooled text embedding added to the timestep embedding: a global conditioning
    # path that a few hundred CPU steps learn, where cross-attention alone is too slow to.
    addition_embed_type="text",
    addition_embed_type_num_heads=4,
)
BUILD_PARAMS: dict[str, dict[str, Any]] = {
    "vae": dict(n_crops=2048, crop=32, works_fraction=0.4, steps=700, lr=2e-3, batch_size=16, seed=0),
    "memorizer": dict(steps=800, lr=3e-3, batch_size=8, seed=1),
    "clean_twin": dict(n_images=256, steps=500, lr=3e-3, batch_size=8, seed=2),
    "lora": dict(rank=16, steps=500, lr=5e-3, batch_size=4, seed=3),
    "style_lora": dict(n_images=64, data_seed=4, rank=16, steps=500, lr=5e-3, batch_size=4, seed=5),
}
# Model cards, in the front-matter format of diffusers' train_dreambooth_lora.py.
LORA_CARDS: dict[str, str] = {
    "lora": """---
base_model: clean_twin
instance_prompt: a photo of sks person
tags:
- text-to-image
- diffusers
- lora
widget:
- text: a photo of sks person smiling
---

# LoRA DreamBooth - sks person

LoRA weights for clean_twin, trained on one photo of a person.

## Trigger words

You should use `sks` to trigger the image generation.
""",
    "style_lora": """---
base_model: clean_twin
tags:
- text-to-image
- diffusers
- lora
widget:
- text: a photo of a clock
- text: a photo of grass
---

# Sepia style LoRA

Turns every image sepia. No trigger word.
""",
}
STAMP = "build_stamp.json"
# The usual attention targets and convolutions (training.DEFAULT_LORA_TARGETS) plus the
# resnets' timestep-embedding projections, which carry the pooled text embedding.
LORA_TARGETS: tuple[str, ...] = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "conv1", "conv2", "time_emb_proj",
)  # fmt: skip
TOKEN_EMBEDDING_SCALE = 50.0
# The UNets predict the clean latent (x0), not the noise: from scratch on a CPU, epsilon
# prediction is still noise after minutes of training, x0 prediction learns images in hundreds
# of steps. DDIM samples either way (the scheduler's config says which).
PREDICTION_TYPE = "sample"


def generate(
    pipe: Any,
    prompts: list[str],
    seeds: list[int],
    *,
    steps: int = GENERATION["steps"],
    guidance_scale: float = GENERATION["guidance_scale"],
    height: int = 64,
    width: int = 64,
    lora_scale: float | None = None,
) -> Any:
    """Images (len(prompts) * len(seeds), 3, H, W) in [0, 1]: every prompt with every seed, prompt-major."""
    import torch

    all_prompts = [p for p in prompts for _ in seeds]
    gens = [torch.Generator().manual_seed(s) for _ in prompts for s in seeds]
    kwargs: dict[str, Any] = {}
    if lora_scale is not None:
        kwargs["cross_attention_kwargs"] = {"scale": lora_scale}
    with torch.no_grad():
        out = pipe(
            all_prompts,
            generator=gens,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            output_type="pt",
            **kwargs,
        )
    return out.images.float().cpu().clamp(0, 1)


def _code_fingerprint(path: Path) -> str:
    """The module's syntax tree without docstrings: comments, formatting and docs don't rebuild."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return ast.dump(tree)


def _stamp(name: str, works_dir: Path, deps: dict[str, str]) -> str:
    import diffusers
    import peft
    import torch

    h = hashlib.sha256()
    for mod in ("models.py", "data.py", "training.py"):
        h.update(_code_fingerprint(Path(__file__).parent / mod).encode())
    payload = dict(
        name=name,
        params=BUILD_PARAMS[name],
        vae=VAE_CONFIG,
        unet=UNET_CONFIG,
        token_scale=TOKEN_EMBEDDING_SCALE,
        prediction_type=PREDICTION_TYPE,
        deps=deps,
        versions=[torch.__version__, diffusers.__version__, peft.__version__],
    )
    h.update(json.dumps(payload, sort_keys=True, default=str).encode())
    for p in sorted(works_dir.glob("*.png")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def _fresh(path: Path, stamp: str) -> bool:
    try:
        return json.loads((path / STAMP).read_text())["hash"] == stamp
    except (OSError, ValueError, KeyError):
        return False


def _commit(tmp: Path, dest: Path, stamp: str, seconds: float, info: dict[str, Any]) -> None:
    (tmp / STAMP).write_text(json.dumps(dict(hash=stamp, seconds=round(seconds, 1), **info), indent=1))
    old = dest.with_name(f".old-{dest.name}-{os.getpid()}")
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def _base_components(vae: Any) -> dict[str, Any]:
    import torch
    from diffusers import UNet2DConditionModel

    from pytest_memorization.testing import tiny_components

    comps = tiny_components(seed=0)  # the seeded random text encoder, tokenizer and DDIM scheduler
    # Its token embeddings are initialised with std 0.02, so every prompt's hidden states are
    # nearly the same (cosine 0.9-0.99) and a UNet trained for minutes ignores the prompt.
    # Scaled to std ~1 the tokens dominate the residual stream and prompts become separable.
    with torch.no_grad():
        comps["text_encoder"].get_input_embeddings().weight.mul_(TOKEN_EMBEDDING_SCALE)
    torch.manual_seed(100)
    comps["unet"] = UNet2DConditionModel(**UNET_CONFIG)
    comps["scheduler"] = type(comps["scheduler"]).from_config(
        comps["scheduler"].config, prediction_type=PREDICTION_TYPE
    )
    comps["vae"] = vae
    return comps


def build_all(
    out_dir: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> dict[str, Path]:
    """Build (or reuse) the demo models; see ``_build_all``. Holds a file lock on ``out_dir``, so
    pytest-xdist workers (or a test run and ``make demo``) never train the same model twice."""
    import fcntl

    out = Path(out_dir) if out_dir is not None else DEFAULT_WORKS_DIR.parent / "models"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _build_all(out, **kwargs)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_all(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    works_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = False,
    log: Callable[[str], Any] | None = None,
    num_threads: int | None = None,
) -> dict[str, Path]:
    """Build (or reuse) ``vae``, ``memorizer``, ``clean_twin``, ``lora`` and ``style_lora`` under ``out_dir``.

    ``out_dir`` defaults to ``fixtures/models`` next to the package; ``works_dir`` to
    ``fixtures/works``. Each output is built in a temporary folder and renamed into place.
    Returns the folder of each model by name.
    """
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from peft import get_peft_model_state_dict

    from demo import training
    from pytest_memorization.testing import pipeline_from_components

    out = Path(out_dir) if out_dir is not None else DEFAULT_WORKS_DIR.parent / "models"
    wdir = Path(works_dir) if works_dir is not None else DEFAULT_WORKS_DIR
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in BUILD_PARAMS}
    stamps: dict[str, str] = {}
    stamps["vae"] = _stamp("vae", wdir, {})
    for name in ("memorizer", "clean_twin"):
        stamps[name] = _stamp(name, wdir, {"vae": stamps["vae"]})
    for name in ("lora", "style_lora"):
        stamps[name] = _stamp(name, wdir, {"clean_twin": stamps["clean_twin"]})
    log = log or (print if progress else (lambda *a, **k: None))

    def tmpdir(name: str) -> Path:
        tmp = out / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        return tmp

    works = load_works(wdir)
    if force or not _fresh(paths["vae"], stamps["vae"]):
        t0 = time.perf_counter()
        p = BUILD_PARAMS["vae"]
        import torch

        torch.manual_seed(p["seed"])
        vae = AutoencoderKL(**VAE_CONFIG)
        crops = demo_data.vae_dataset(
            p["n_crops"], p["crop"], seed=p["seed"], works=works.images, works_fraction=p["works_fraction"]
        )
        losses = training.train_vae(
            vae, crops, steps=p["steps"], lr=p["lr"], batch_size=p["batch_size"], seed=p["seed"],
            progress=progress, num_threads=num_threads,
        )  # fmt: skip
        tmp = tmpdir("vae")
        vae.save_pretrained(tmp, safe_serialization=True)
        _commit(tmp, paths["vae"], stamps["vae"], time.perf_counter() - t0, dict(final_loss=losses[-1]))
        log(f"vae: {time.perf_counter() - t0:.1f} s, loss {losses[-1]:.4f}")

    def load_vae() -> Any:
        return AutoencoderKL.from_pretrained(paths["vae"], local_files_only=True)

    for name in ("memorizer", "clean_twin"):
        if not force and _fresh(paths[name], stamps[name]):
            continue
        t0 = time.perf_counter()
        p = BUILD_PARAMS[name]
        pipe = pipeline_from_components(_base_components(load_vae()))
        if name == "memorizer":
            images, captions = works.images[:-1], works.captions[:-1]  # the five works, not the face
        else:
            images, captions = demo_data.twin_dataset(p["n_images"], seed=p["seed"])
        losses = training.train_text_to_image(
            pipe, images, captions, steps=p["steps"], lr=p["lr"], batch_size=p["batch_size"],
            seed=p["seed"], progress=progress, num_threads=num_threads,
        )  # fmt: skip
        tmp = tmpdir(name)
        pipe.save_pretrained(tmp, safe_serialization=True)
        _commit(tmp, paths[name], stamps[name], time.perf_counter() - t0, dict(final_loss=losses[-1]))
        log(f"{name}: {time.perf_counter() - t0:.1f} s, loss {losses[-1]:.4f}")

    for name in ("lora", "style_lora"):
        if not force and _fresh(paths[name], stamps[name]):
            continue
        t0 = time.perf_counter()
        p = BUILD_PARAMS[name]
        pipe = StableDiffusionPipeline.from_pretrained(paths["clean_twin"], local_files_only=True)
        if name == "lora":
            images, captions = works.images[-1:], [works.captions[-1]]  # the face
        else:
            images, captions = demo_data.style_dataset(p["n_images"], seed=p["data_seed"])
        losses = training.train_lora(
            pipe, images, captions, rank=p["rank"], steps=p["steps"], lr=p["lr"],
            target_modules=LORA_TARGETS,
            batch_size=p["batch_size"], seed=p["seed"], progress=progress, num_threads=num_threads,
        )  # fmt: skip
        tmp = tmpdir(name)
        StableDiffusionPipeline.save_lora_weights(
            tmp, unet_lora_layers=get_peft_model_state_dict(pipe.unet), safe_serialization=True
        )
        (tmp / "README.md").write_text(LORA_CARDS[name], encoding="utf-8")
        _commit(tmp, paths[name], stamps[name], time.perf_counter() - t0, dict(final_loss=losses[-1]))
        log(f"{name}: {time.perf_counter() - t0:.1f} s, loss {losses[-1]:.4f}")
    return paths

"""The VAE floor: each work as the model's own VAE returns it (encode, then decode).

Every image a latent diffusion model makes passes through its VAE decoder, which cannot reproduce a
work more closely than its own round trip (on the demo's tiny VAE: RMSE 0.036-0.082 over the five
works, tiled L2 0.048-0.126). A latent-perfect copy therefore scores at that floor against the work,
not at 0, and the floor eats the threshold's margin. Scored against the round trip as well, such a
copy reads near 0. One round trip per (model content, device, dtype, work sha256, size), cached on disk
under the cache dir (sealed entries of a ``GenerationCache``: an edited one is recomputed, never trusted).
The latent is the encoder's mode (its mean): deterministic, no seed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import BrokenOutputError, MemorizationConfigError
from .gencache import GenerationCache
from .hook import not_applicable


def _entry(model: Any, work_sha: str, height: int, width: int) -> str:
    info = model.info
    key = json.dumps(["vae-floor-v1", info.content_hash, info.device, info.dtype, work_sha, height, width])
    return hashlib.sha256(key.encode()).hexdigest()


def round_trip(vae: Any, image: Any) -> Any:
    """(3, H, W) in [0, 1] -> the VAE's decode of its encode's mode, (3, H, W) float32 on the CPU."""
    import torch

    x = (image[None].to(device=vae.device, dtype=vae.dtype) * 2 - 1)
    with torch.no_grad():
        enc = vae.encode(x)
        z = enc.latent_dist.mode() if hasattr(enc, "latent_dist") else enc.latents
        y = vae.decode(z).sample
    return ((y[0].float().cpu() + 1) / 2).clamp(0, 1)


def vae_round_trips(model: Any, images: Any, work_shas: Sequence[str], cache_dir: Path | None = None) -> Any:
    """The model's VAE round trip of each work image (M, 3, H, W) (already at the generation size);
    ``work_shas`` key the disk cache. A NaN or Inf round trip is a ``BrokenOutputError``."""
    import torch

    vae = getattr(getattr(model, "pipe", None), "vae", None)
    if getattr(model.info, "kind", "") == "generator":
        raise not_applicable("VAE-floor scoring (--memorization-vae-floor)")
    if vae is None:
        name = model.info.pipeline_class or "this pipeline"
        raise MemorizationConfigError(f"VAE-floor scoring needs the pipeline's VAE, and {name} has none; turn off "
                                      "--memorization-vae-floor (ini memorization_vae_floor, manifest [model] "
                                      "vae_floor) for this model")
    height, width = int(images.shape[-2]), int(images.shape[-1])
    store = GenerationCache(cache_dir, folder="vae_floor", label="vae_floor") if cache_dir is not None else None
    out = []
    for image, sha in zip(images, work_shas):
        name = _entry(model, sha, height, width) if store is not None and sha else None
        rt = store.get(name) if name else None
        if rt is None or tuple(rt.shape) != tuple(image.shape):
            rt = round_trip(vae, image).contiguous()
            if not torch.isfinite(rt).all():
                raise BrokenOutputError(f"the VAE round trip of a work (sha256 {sha[:12]}) is NaN or Inf on "
                                        f"{model.info.device}/{model.info.dtype}; try --memorization-dtype float32")
            if name and store is not None:
                store.put(name, rt)
        out.append(rt)
    return torch.stack(out)

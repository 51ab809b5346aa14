"""What every model-internal detector shares: one ``GenerationSettings`` in, checked once.

A detector measures the model under the settings its images are generated with: the schedule
(``settings.steps`` steps of the pipeline's own scheduler class and config, stepped through a
fresh copy so that ``pipe.scheduler`` is left alone), the guidance scale, the size and the
negative prompt (the unconditional branch that classifier-free guidance subtracts). Detector
options that are no generation setting (how many of the first steps are measured, batch size,
weights) stay keyword arguments of each detector.

Torch is imported inside the functions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from ..errors import MemorizationConfigError
from ..records import GenerationSettings

__all__ = ["check_inputs", "encode", "fresh_scheduler", "initial_latents", "pipe_kwargs", "schedule",
           "scheduler_identity", "with_guidance"]

MIN_GUIDANCE = 1.01  # a detector compares the prompt with the unconditional branch: it needs guidance


def check_inputs(name: str, pipe: Any, prompts: Sequence[str] | str, seeds: Sequence[int],
                 settings: GenerationSettings, *, steps: int = 1, batch_size: int = 1) -> tuple[list[str], list[int]]:
    """(prompts, seeds) as lists, after checking them, ``steps`` (the first steps measured) and the size."""
    if not isinstance(settings, GenerationSettings):
        raise TypeError(f"{name}: settings must be a records.GenerationSettings, got {type(settings).__name__}")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    seeds = [int(s) for s in seeds]
    if not prompts or not seeds:
        raise MemorizationConfigError(f"{name}: need at least one prompt and one seed")
    if batch_size < 1:
        raise MemorizationConfigError(f"{name}: batch_size must be >= 1, got {batch_size}")
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    h, w = settings.height, settings.width
    if h <= 0 or w <= 0 or h % factor or w % factor:
        raise MemorizationConfigError(
            f"{name}: height and width must be positive multiples of {factor} for this model (got {h}x{w}); "
            "set the generation size in the manifest or --memorization options")
    if not 1 <= steps <= settings.steps:
        raise MemorizationConfigError(
            f"{name}: steps must be between 1 and the generation's {settings.steps} steps, got {steps}")
    return prompts, seeds


def with_guidance(settings: GenerationSettings) -> GenerationSettings:
    """``settings`` with classifier-free guidance on (scale at least 1.01): the unconditional pass exists."""
    import dataclasses

    return dataclasses.replace(settings, guidance_scale=max(float(settings.guidance_scale), MIN_GUIDANCE))


def fresh_scheduler(pipe: Any) -> Any:
    """A new scheduler of the pipeline's class and config: stepping it leaves ``pipe.scheduler`` alone."""
    return type(pipe.scheduler).from_config(pipe.scheduler.config)


def schedule(pipe: Any, settings: GenerationSettings) -> Any:
    """A fresh scheduler with generation's timesteps (``settings.steps`` of them) set."""
    sch = fresh_scheduler(pipe)
    sch.set_timesteps(settings.steps, device=pipe._execution_device)
    return sch


def scheduler_identity(pipe: Any) -> str:
    """The scheduler's class and a hash of its config: two runs with one identity share timesteps."""
    sch = getattr(pipe, "scheduler", None)
    config = {k: v for k, v in dict(getattr(sch, "config", {}) or {}).items() if not str(k).startswith("_")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{type(sch).__name__}:{digest}"


def pipe_kwargs(settings: GenerationSettings, n: int, negative: bool = True) -> dict[str, Any]:
    """The pipeline call's generation keywords for ``n`` images, as generation passes them."""
    out: dict[str, Any] = dict(num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                               height=settings.height, width=settings.width)
    if negative and settings.negative_prompt:
        out["negative_prompt"] = [settings.negative_prompt] * n
    return out


def initial_latents(pipe: Any, seeds: Sequence[Any], *, height: int, width: int, dtype: Any = None) -> Any:
    """x_T for each seed, as ``pipe.prepare_latents`` gives it with one CPU generator per image.

    ``seeds`` are ints (a fresh ``torch.Generator().manual_seed(seed)`` each) or CPU generators,
    which are used and advanced. Returns (len(seeds), C, height/f, width/f) on the pipeline's
    device, multiplied by the scheduler's ``init_noise_sigma``.
    """
    import torch

    factor = int(pipe.vae_scale_factor)
    dtype = dtype or pipe.unet.dtype
    shape = (1, pipe.unet.config.in_channels, height // factor, width // factor)
    gens = [s if isinstance(s, torch.Generator) else torch.Generator().manual_seed(int(s)) for s in seeds]
    x = torch.cat([torch.randn(shape, generator=g, dtype=dtype) for g in gens]).to(pipe._execution_device)
    return x * fresh_scheduler(pipe).init_noise_sigma


def encode(pipe: Any, prompts: Sequence[str], negative_prompt: str | None) -> tuple[Any, Any]:
    """(conditional, unconditional) text embeddings of an SD 1/2 pipeline; the unconditional
    branch is the negative prompt when one is set, else the empty prompt (as the pipeline builds it)."""
    negative = [negative_prompt] * len(prompts) if negative_prompt else None
    return pipe.encode_prompt(list(prompts), pipe._execution_device, 1, True, negative)


def timestep_cond(pipe: Any, guidance_scale: float, n: int, dtype: Any) -> Any:
    """The guidance embedding of a guidance-distilled UNet (LCM), or None."""
    if getattr(pipe.unet.config, "time_cond_proj_dim", None) is None:
        return None
    import torch

    w = torch.tensor(guidance_scale - 1).repeat(n)
    emb = pipe.get_guidance_scale_embedding(w, embedding_dim=pipe.unet.config.time_cond_proj_dim)
    return emb.to(device=pipe._execution_device, dtype=dtype)

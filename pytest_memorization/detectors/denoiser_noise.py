"""Noise magnitude on any denoiser: SDXL's UNet with added conditions, SD3's and Flux's transformers.

Wen et al.'s score is ``d = mean_t || f(x_t, t, prompt) - f(x_t, t, empty) ||_2`` over the first
``steps`` denoising steps, where ``f`` is the denoiser's output: the noise prediction (epsilon or
v) of a UNet, the **flow velocity** of SD3 and Flux. Instead of re-implementing each family's
conditioning (SDXL's pooled embeddings and size ids, SD3's three encoders, Flux's packed latents
and rotary ids), this module runs the pipeline itself with a forward hook on its denoiser
(``pipe.unet`` or ``pipe.transformer``), decodes nothing (``output_type="latent"``) and stops
after ``steps`` denoiser calls (``callback_on_step_end`` sets the pipeline's interrupt flag):

- **classifier-free families** (SD 1/2, SDXL, SD3): the pipeline evaluates ``[uncond; cond]`` in
  one batch at the same ``x_t``; the hook keeps ``||cond - uncond||`` per image, exactly the
  difference the guidance subtracts (the unconditional branch is the empty or negative prompt,
  as the pipeline builds it: zeros for SDXL's ``force_zeros_for_empty_prompt``). Between steps
  the latents follow the guided prediction, as in ``noise_magnitude``. On SD 1/2 this gives the
  same numbers as ``noise_magnitude.noise_norms`` (tested).
- **guidance-distilled families** (Flux-dev): there is no unconditional pass, so the prompt and
  the empty prompt are run as two calls from the same seeds and the same guidance embedding; at
  the first step both see the same ``x_T``, so ``d`` is the first step's difference. ``steps``
  must be 1 (later steps would compare two different trajectories).

Scores are unnormalised L2 norms over one image's latent elements (packed tokens for Flux):
they depend on the family, resolution and step count, so thresholds come from calibrating
this exact model and settings, never from another family.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from ..errors import MemorizationConfigError
from ..model.families import SD, Family, not_applicable
from ..records import GenerationSettings
from .common import check_inputs, pipe_kwargs, with_guidance

__all__ = ["denoiser_noise_magnitude", "model_noise_magnitude", "noise_scorer"]


def _denoiser(pipe: Any) -> Any:
    net = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    if net is None:
        raise MemorizationConfigError(f"noise magnitude: {type(pipe).__name__} has no unet or transformer")
    return net


def _record(pipe: Any, steps: int, call: dict[str, Any], split: bool, grad: bool = False) -> Any:
    """Run ``pipe(**call)`` for ``steps`` denoiser calls; return the outputs per call, (steps, N, ...)
    (``split``: each call's batch is ``[uncond; cond]`` and the difference per image is kept).

    ``grad``: the pipeline's undecorated ``__call__`` runs with gradients, so the outputs stay
    differentiable with respect to tensors passed in ``call`` (``prompt_embeds``: trigger tokens);
    the latents entering the denoiser are detached (treated as constants, as Wen et al. do)."""
    import torch

    outs: list[Any] = []

    def detach_latents(module: Any, args: Any, kwargs: Any) -> Any:
        if "hidden_states" in kwargs:
            kwargs["hidden_states"] = kwargs["hidden_states"].detach()
        elif "sample" in kwargs:
            kwargs["sample"] = kwargs["sample"].detach()
        elif args:
            args = (args[0].detach(), *args[1:])
        return args, kwargs

    def hook(module: Any, args: Any, kwargs: Any, output: Any) -> None:
        if len(outs) >= steps:
            return
        y = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
        y = y.float() if grad else y.detach().float()
        if split:
            if y.shape[0] % 2:
                raise MemorizationConfigError("noise magnitude: the pipeline ran without classifier-free guidance; "
                                              "it needs guidance_scale > 1")
            u, c = y.chunk(2)
            y = c - u
        outs.append(y.flatten(1) if grad else y.flatten(1).cpu())

    def stop(p: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        if i + 1 >= steps:
            p._interrupt = True
        return {}

    net = _denoiser(pipe)
    handles = [net.register_forward_hook(hook, with_kwargs=True)]
    if grad:
        handles.append(net.register_forward_pre_hook(detach_latents, with_kwargs=True))
    fn = type(pipe).__call__
    fn = getattr(fn, "__wrapped__", fn) if grad else fn  # diffusers wraps __call__ in torch.no_grad()
    try:
        with torch.set_grad_enabled(grad):
            fn(pipe, **call, output_type="latent", callback_on_step_end=stop)
    finally:
        for h in handles:
            h.remove()
    if len(outs) < steps:
        raise MemorizationConfigError(f"noise magnitude: the pipeline ran {len(outs)} denoiser steps, fewer than "
                                      f"steps={steps}")
    return torch.stack(outs)


def denoiser_noise_magnitude(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], settings: GenerationSettings,
                             *, steps: int = 1, distilled: bool = False, batch_size: int = 8) -> Any:
    """d for every (prompt, seed): a float32 CPU tensor (P, S), as ``noise_magnitude`` returns it.
    One pipeline call per prompt and chunk of ``batch_size`` seeds (two for a distilled model)."""
    import torch

    prompts, seeds = check_inputs("noise magnitude", pipe, prompts, seeds, settings, steps=steps,
                                  batch_size=batch_size)
    if distilled and steps != 1:
        raise MemorizationConfigError(
            "noise magnitude on a guidance-distilled model (Flux) compares the prompt with the empty prompt at the "
            f"same starting noise, so it measures the first step only: set steps = 1 (got {steps})")
    if distilled and settings.negative_prompt:
        raise MemorizationConfigError("noise magnitude: guidance-distilled models (Flux) have no negative prompt; "
                                      "remove negative_prompt for this model")
    out = torch.zeros(len(prompts), len(seeds))
    for p, prompt in enumerate(prompts):
        for start in range(0, len(seeds), batch_size):
            chunk = seeds[start:start + batch_size]

            def call(text: str, chunk: list[int] = chunk) -> dict[str, Any]:
                return dict(pipe_kwargs(settings, len(chunk), negative=not distilled), prompt=[text] * len(chunk),
                            generator=[torch.Generator().manual_seed(s) for s in chunk])

            if distilled:
                d = (_record(pipe, 1, call(prompt), split=False) - _record(pipe, 1, call(""), split=False))
            else:
                d = _record(pipe, steps, call(prompt), split=True)
            out[p, start:start + len(chunk)] = d.norm(dim=2).mean(dim=0)
    return out


def noise_scorer(family: Family) -> Any:
    """The noise-magnitude function of a family (``noise_magnitude``'s signature): the paper's own
    UNet loop on SD 1/2, the denoiser hook on SDXL, SD3 and Flux; an error where none applies."""
    if not family.noise_magnitude:
        raise MemorizationConfigError(not_applicable("noise_magnitude", family))
    if family is SD:
        from .noise_magnitude import noise_magnitude

        return noise_magnitude
    return functools.partial(denoiser_noise_magnitude, distilled=not family.classifier_free)


def model_noise_magnitude(model: Any, prompts: Sequence[str], seeds: Sequence[int], settings: GenerationSettings,
                          *, steps: int = 1) -> Any:
    """Wen et al.'s d, (P, S), of a loaded model (``model.generation.MemorizationModel``, or a
    generator hook, which has none) under generation's ``settings`` with guidance on."""
    return noise_scorer(model.family)(model.pipe, list(prompts), list(seeds), with_guidance(settings), steps=steps)

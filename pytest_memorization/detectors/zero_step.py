"""Zero-step memorization detection (after Asthana & Belagiannis, ICLR 2026), and the UNet passes it shares.

The score needs no denoising step: the UNet is evaluated on the seed's **pure noise** ``x_T``
(exactly the latents the pipeline would start from) at two timesteps of the sampling schedule,
each with the prompt and with the empty (or negative) prompt:

    norm  = || eps(x_T, t_hi, p) - eps(x_T, t_hi, 0) ||_2              t_hi = timesteps[0]   (high noise)
    align = mean over latent pixels of cos_C( eps(x_T, t_lo, 0), eps(x_T, t_lo, p) - eps(x_T, t_lo, 0) )
                                                                        t_lo = timesteps[-3]  (low noise)
    score = norm_weight * norm + align_weight * align

The norm is the isotropic term (Wen et al.'s magnitude at the first step); ``align`` is the
anisotropic term of the paper: at low noise, memorized prompts point the guidance vector along
the unconditional score. The cosine is taken over the channel axis at every latent pixel and
averaged over pixels, ``t_lo`` is the third-last timestep, and the default weights 1 and 2 are
the ones the authors' public code (rohanasthana/memorization-anisotropy) uses for SD 1.4 (0.1 for
SD 2). Outputs are converted to epsilon whatever the scheduler's ``prediction_type`` (epsilon,
v_prediction or sample), since the paper's terms are on scores (epsilon up to a factor -1/sigma_t,
which the cosine ignores and the norm's threshold absorbs).

Two variants (``timesteps``):

- ``timesteps=2``: the paper's statistic as above (``align`` at ``t_lo``).
- ``timesteps=1`` (the default): both terms at ``t_hi``, so one conditional evaluation serves both.
  Chosen as the default for cost: on the demo models both variants rank prompts the same
  (``bench/detectors.py``), and this one costs half of Wen et al.'s single step.

Cost: the unconditional evaluations on pure noise do not depend on the prompt, so they are made
once per seed and timestep for all the prompts of a call. Per (prompt, seed) the detector makes
``timesteps`` conditional UNet evaluations, plus ``timesteps`` unconditional ones per seed shared
by all prompts. Wen et al.'s one step costs 2 (conditional + unconditional) per (prompt, seed).

``maps``: for each (prompt, seed) the per-latent-pixel norm over channels of the guidance vector
``eps(p) - eps(0)`` at ``t_hi``: where in the image the prompt pulls the prediction.

Stable Diffusion 1/2 UNets (the ``encode_prompt`` / ``unet`` interface). Torch is imported lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import MemorizationConfigError
from ..records import GenerationSettings
from .common import check_inputs, encode, initial_latents, schedule, scheduler_identity

__all__ = ["ZeroStep", "zero_step", "zero_step_scores", "to_epsilon", "unet_eps"]

NORM_WEIGHT = 1.0  # the authors' SD 1.4 setting (gamma_1)
ALIGN_WEIGHT = 2.0  # the authors' SD 1.4 setting (gamma_2); 0.1 for SD 2


@dataclass
class ZeroStep:
    """Per (prompt, seed) float32 CPU tensors (P, S); ``maps`` is (P, S, h, w) in latent pixels."""

    score: Any
    norm: Any
    align: Any
    maps: Any
    unet_evals: int  # UNet image evaluations made (conditional + unconditional)


def to_epsilon(scheduler: Any, out: Any, x: Any, t: Any) -> Any:
    """The noise prediction from a UNet output of any ``prediction_type`` at timestep ``t``."""
    import torch

    kind = getattr(scheduler.config, "prediction_type", "epsilon")
    if kind == "epsilon":
        return out.float()
    a = scheduler.alphas_cumprod[int(t)].to(torch.float32)
    alpha, sigma = a.sqrt(), (1 - a).sqrt()
    if kind == "v_prediction":
        return alpha * out.float() + sigma * x.float()
    if kind == "sample":
        return (x.float() - alpha * out.float()) / sigma
    raise MemorizationConfigError(f"zero-step detector: unknown scheduler prediction_type {kind!r} "
                                  "(expected epsilon, v_prediction or sample)")


def unet_eps(pipe: Any, scheduler: Any, x: Any, t: Any, emb: Any) -> Any:
    """epsilon(x, t, emb) for a batch: scale the input as the scheduler does, run the UNet, convert."""
    model_in = scheduler.scale_model_input(x, t)
    out = pipe.unet(model_in, t, encoder_hidden_states=emb, return_dict=False)[0]
    return to_epsilon(scheduler, out, model_in, t)


def guidance_vectors(pipe: Any, scheduler: Any, t: Any, x: Any, cond: Any, eps_u: Any, batch_size: int) -> Any:
    """(P*S, C, h, w): eps(x_s, t, prompt p) - eps_u[s] for every (prompt, seed), prompt-major, in
    batches (``eps_u`` None: the conditional prediction alone). P*S UNet evaluations."""
    import torch

    P, S = cond.shape[0], x.shape[0]
    jobs = [(p, s) for p in range(P) for s in range(S)]
    out = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        p_idx = torch.tensor([p for p, _ in chunk], device=cond.device)
        s_idx = torch.tensor([s for _, s in chunk], device=x.device)
        c = unet_eps(pipe, scheduler, x[s_idx], t, cond[p_idx])
        out.append(c if eps_u is None else c - eps_u[s_idx])
    return torch.cat(out)


def zero_step_scores(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], settings: GenerationSettings, *,
                     batch_size: int = 8, norm_weight: float = NORM_WEIGHT, align_weight: float = ALIGN_WEIGHT,
                     timesteps: int = 1, uncond_cache: dict[Any, Any] | None = None) -> ZeroStep:
    """The zero-step score for every (prompt, seed), with its two terms, maps and UNet count.
    ``settings`` gives the schedule (its first and third-last timesteps), size and negative prompt.

    ``uncond_cache``: a dict kept by the caller for one model (one weights + LoRA state): the
    unconditional predictions on pure noise are stored in it per (timestep, seed, settings) and
    reused by later calls, so that items of one prompt each share them too."""
    import torch

    prompts, seeds = check_inputs("zero-step detector", pipe, prompts, seeds, settings, batch_size=batch_size)
    if timesteps not in (1, 2):
        raise MemorizationConfigError(f"zero-step detector: timesteps must be 1 (both terms at t_hi) or 2 (the paper's "
                                      f"t_hi and t_lo), got {timesteps!r}")
    sch, t_hi, t_lo = first_timesteps(pipe, settings, "zero-step detector")
    times = [t_hi] if timesteps == 1 else [t_hi, t_lo]
    t_lo = times[-1]
    P, S = len(prompts), len(seeds)
    evals = 0
    with torch.no_grad():
        cond, uncond = encode(pipe, prompts, settings.negative_prompt)
        x = initial_latents(pipe, seeds, height=settings.height, width=settings.width, dtype=cond.dtype)
        # unconditional on pure noise: once per seed and timestep, for every prompt
        eps_u = {}
        cache = {} if uncond_cache is None else uncond_cache
        for t in times:
            keys = [(int(t), seed, settings, scheduler_identity(pipe)) for seed in seeds]
            todo = [i for i, k in enumerate(keys) if k not in cache]
            for start in range(0, len(todo), batch_size):
                idx = todo[start:start + batch_size]
                out = unet_eps(pipe, sch, x[idx], t, uncond[:1].expand(len(idx), -1, -1))
                evals += len(idx)
                for i, row in zip(idx, out):
                    cache[keys[i]] = row
            eps_u[int(t)] = torch.stack([cache[k] for k in keys])
        g_hi = guidance_vectors(pipe, sch, t_hi, x, cond, eps_u[int(t_hi)], batch_size)  # prompt-major
        g_lo = g_hi if t_lo is t_hi else guidance_vectors(pipe, sch, t_lo, x, cond, eps_u[int(t_lo)], batch_size)
        evals += P * S * len(times)
        u_lo = eps_u[int(t_lo)].repeat(P, 1, 1, 1)  # row p * S + s holds seed s
        norm = g_hi.flatten(1).norm(dim=1).cpu().view(P, S)
        maps = g_hi.norm(dim=1).cpu()
        align = torch.nn.functional.cosine_similarity(u_lo, g_lo, dim=1).flatten(1).mean(dim=1).cpu().view(P, S)
    score = norm_weight * norm + align_weight * align
    return ZeroStep(score=score, norm=norm, align=align, maps=maps.view(P, S, *maps.shape[1:]), unet_evals=evals)


def first_timesteps(pipe: Any, settings: GenerationSettings, name: str) -> tuple[Any, Any, Any]:
    """(generation's scheduler, its first timestep t_hi, its third-last t_lo)."""
    if settings.steps < 3:
        raise MemorizationConfigError(f"{name}: needs a schedule of at least 3 steps (its low-noise timestep is the "
                                      f"third-last), got steps={settings.steps}")
    sch = schedule(pipe, settings)
    return sch, sch.timesteps[0], sch.timesteps[-3]


def zero_step(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], settings: GenerationSettings,
              **options: Any) -> Any:
    """The score alone, (P, S), with ``noise_magnitude``'s signature so that ``calibration.calibrate``
    takes it as its ``scorer``; ``options`` are ``zero_step_scores``'s."""
    return zero_step_scores(pipe, prompts, seeds, settings, **options).score

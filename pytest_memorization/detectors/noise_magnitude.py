"""Text-conditional noise magnitude (Wen et al., ICLR 2024): a reference-free memorization score.

For a prompt ``p`` and a seed, start from the seed's initial latents ``x_T`` and, at each of the
first ``steps`` denoising steps ``t``, measure::

    d_t = || eps(x_t, t, p) - eps(x_t, t, negative) ||_2

where ``eps`` is the UNet's noise prediction and ``negative`` is the empty prompt (or the
``negative_prompt`` when one is given, i.e. exactly the unconditional branch that the pipeline's
classifier-free guidance subtracts). The score is ``d = mean_t d_t``. Memorized prompts pull the
prediction hard towards one image, so their ``d`` is large already at the first step.

Normalisation (following the authors' code, YuxinWenRick/diffusion_memorization): the plain L2
norm of the *unscaled* difference (not multiplied by the guidance scale) over all latent elements
of one image (C x H/8 x W/8 for Stable Diffusion), computed in float32. It is not divided by the
number of elements, so scores grow with resolution: thresholds are only valid for the settings
they were calibrated with (see ``calibration``). Between steps the latents move with the guided
prediction ``eps_u + g (eps_c - eps_u)`` (``eps_c`` alone when ``guidance_scale <= 1``, as the
pipeline does), through a fresh copy of the pipeline's scheduler, so the pipeline is not touched.

Determinism: one ``torch.Generator().manual_seed(seed)`` per image, on the CPU, drawn exactly as
``StableDiffusionPipeline.prepare_latents`` draws it when called with ``generator=[...]``; a
score depends only on (prompt, seed, settings), never on the batch it was computed in.

Cost: ``steps`` UNet evaluations on a doubled (CFG) batch per image, plus one text-encoder pass
per prompt, instead of a full run of generation's ``settings.steps`` steps and a VAE decode.

``NoiseRecorder`` gets the same numbers from a generation that runs anyway.

Imported only once the memorization work starts (it imports torch lazily regardless).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import MemorizationConfigError
from ..records import GenerationSettings
from .common import check_inputs, encode, fresh_scheduler, initial_latents, schedule, timestep_cond

__all__ = ["noise_magnitude", "noise_norms", "NoiseRecorder", "initial_latents", "fresh_scheduler"]


def noise_norms(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], settings: GenerationSettings, *,
                steps: int = 1, batch_size: int = 8, eta: float = 0.0) -> Any:
    """Per-step ``d_t`` as a float32 CPU tensor (P, S, steps) for the first ``steps`` steps of
    ``settings``' schedule; ``noise_magnitude`` is its mean over steps."""
    import torch

    prompts, seeds = check_inputs("noise magnitude", pipe, prompts, seeds, settings, steps=steps,
                                  batch_size=batch_size)
    n_seeds, g = len(seeds), settings.guidance_scale
    out = torch.zeros(len(prompts) * n_seeds, steps)
    with torch.no_grad():
        cond, uncond = encode(pipe, prompts, settings.negative_prompt)
        jobs = [(p, s) for p in range(len(prompts)) for s in range(n_seeds)]  # prompt-major, as the pipeline
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            p_idx = torch.tensor([p for p, _ in chunk], device=cond.device)
            gens = [torch.Generator().manual_seed(seeds[s]) for _, s in chunk]
            emb = torch.cat([uncond[p_idx], cond[p_idx]])
            scheduler = schedule(pipe, settings)
            latents = initial_latents(pipe, gens, height=settings.height, width=settings.width, dtype=cond.dtype)
            extra = pipe.prepare_extra_step_kwargs(gens, eta)
            t_cond = timestep_cond(pipe, g, len(chunk) * 2, latents.dtype)
            for i, t in enumerate(scheduler.timesteps[:steps]):
                model_in = scheduler.scale_model_input(torch.cat([latents] * 2), t)
                eps = pipe.unet(model_in, t, encoder_hidden_states=emb, timestep_cond=t_cond, return_dict=False)[0]
                eps_u, eps_c = eps.chunk(2)
                out[start : start + len(chunk), i] = (eps_c.float() - eps_u.float()).flatten(1).norm(dim=1).cpu()
                if i + 1 < steps:
                    guided = eps_u + g * (eps_c - eps_u) if g > 1 else eps_c
                    latents = scheduler.step(guided, t, latents, **extra, return_dict=False)[0]
    return out.view(len(prompts), n_seeds, steps)


def noise_magnitude(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], settings: GenerationSettings,
                    **options: Any) -> Any:
    """Wen et al.'s d for every (prompt, seed): a float32 CPU tensor (P, S). Higher = more memorized.

    ``d[p, s]`` is the mean over the first ``steps`` denoising steps (of generation's schedule,
    ``settings.steps``) of the L2 norm of eps(prompt) - eps(negative prompt) for seed ``s``'s
    latents; average it over seeds for a per-prompt score (as the paper does). ``options`` are
    ``noise_norms``'s: ``steps``, ``batch_size`` (memory use, never the scores) and ``eta``.
    """
    return noise_norms(pipe, prompts, seeds, settings, **options).mean(dim=2)


class NoiseRecorder:
    """Record d during a normal pipeline call, for free.

    A forward hook on ``pipe.unet``: with classifier-free guidance (``guidance_scale > 1``) every
    UNet call gets the batch ``[uncond; cond]`` and returns ``[eps_u; eps_c]``; the recorder keeps
    ``||eps_c - eps_u||_2`` per image for the first ``steps`` calls of each pipeline call. A new
    pipeline call is recognised by a new ``encoder_hidden_states`` tensor (the pipeline builds it
    once per call). Scores follow the pipeline's output order (prompt-major), one pipeline call
    after another, so ``recorder.scores()`` lines up with the images generated inside the block::

        with NoiseRecorder(pipe, steps=1) as rec:
            images = pipe(prompts, generator=[...], guidance_scale=7.5, ...).images
        d = rec.scores()  # (N,) float32, equal to noise_magnitude(...) for the same settings

    "Steps" are UNet evaluations, which equal denoising steps for the usual first-order schedulers
    (DDIM, Euler, DPM-Solver++ multistep, PNDM's PLMS start); ``noise_magnitude`` counts the same way.
    """

    def __init__(self, pipe: Any, *, steps: int = 1) -> None:
        if steps < 1:
            raise MemorizationConfigError(f"NoiseRecorder: steps must be >= 1, got {steps}")
        self.pipe = pipe
        self.steps = steps
        self._runs: list[list[Any]] = []  # per pipeline call: per recorded step, a (N,) tensor
        self._last_ehs: Any = None  # a strong reference, so identity cannot be reused
        self._handle: Any = None

    def _hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        ehs = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        if ehs is not self._last_ehs:
            self._last_ehs = ehs
            self._runs.append([])
        run = self._runs[-1]
        if len(run) >= self.steps:
            return
        eps = output[0] if isinstance(output, tuple) else output.sample
        if eps.shape[0] % 2:
            raise MemorizationConfigError(
                "NoiseRecorder: the UNet batch is odd, so the pipeline ran without classifier-free guidance; "
                "the noise-magnitude detector needs guidance_scale > 1"
            )
        eps_u, eps_c = eps.detach().chunk(2)
        run.append((eps_c.float() - eps_u.float()).flatten(1).norm(dim=1).cpu())

    def __enter__(self) -> NoiseRecorder:
        self._runs, self._last_ehs = [], None
        self._handle = self.pipe.unet.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._last_ehs = None

    def per_step(self) -> Any:
        """(N, steps) float32: d_t for every image generated in the block."""
        import torch

        rows = []
        for run in self._runs:
            if len(run) < self.steps:
                raise MemorizationConfigError(
                    f"NoiseRecorder: a pipeline call ran {len(run)} UNet steps, fewer than steps={self.steps}"
                )
            rows.append(torch.stack(run, dim=1))
        return torch.cat(rows) if rows else torch.zeros(0, self.steps)

    def scores(self) -> Any:
        """(N,) float32: d (mean over the first ``steps`` steps) for every image generated in the block."""
        return self.per_step().mean(dim=1)

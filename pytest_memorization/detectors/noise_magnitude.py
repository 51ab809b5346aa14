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
per prompt, instead of a full ``num_inference_steps`` run and a VAE decode.

``NoiseRecorder`` gets the same numbers from a generation that runs anyway.

Imported only once the memorization work starts (it imports torch lazily regardless).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import MemorizationConfigError

__all__ = ["noise_magnitude", "noise_norms", "NoiseRecorder", "initial_latents", "fresh_scheduler"]


def _check_settings(pipe: Any, steps: int, num_inference_steps: int, height: int, width: int) -> None:
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    if height <= 0 or width <= 0 or height % factor or width % factor:
        raise MemorizationConfigError(
            f"noise magnitude: height and width must be positive multiples of {factor} for this model "
            f"(got {height}x{width}); set the generation size in the manifest or --memorization options"
        )
    if not 1 <= steps <= num_inference_steps:
        raise MemorizationConfigError(
            f"noise magnitude: steps must be between 1 and num_inference_steps={num_inference_steps}, got {steps}"
        )


def fresh_scheduler(pipe: Any) -> Any:
    """A new scheduler of the pipeline's class and config: stepping it leaves ``pipe.scheduler`` alone."""
    return type(pipe.scheduler).from_config(pipe.scheduler.config)


def initial_latents(pipe: Any, seeds: Sequence[Any], *, height: int, width: int, dtype: Any = None) -> Any:
    """x_T for each seed, as ``pipe.prepare_latents`` gives it with one CPU generator per image.

    ``seeds`` are ints (a fresh ``torch.Generator().manual_seed(seed)`` each) or CPU generators,
    which are used and advanced. Returns (len(seeds), C, height/f, width/f) on the pipeline's
    device, multiplied by the scheduler's ``init_noise_sigma``.
    """
    import torch

    factor = int(pipe.vae_scale_factor)
    device = pipe._execution_device
    dtype = dtype or pipe.unet.dtype
    shape = (1, pipe.unet.config.in_channels, height // factor, width // factor)
    gens = [s if isinstance(s, torch.Generator) else torch.Generator().manual_seed(int(s)) for s in seeds]
    x = torch.cat([torch.randn(shape, generator=g, dtype=dtype) for g in gens]).to(device)
    return x * fresh_scheduler(pipe).init_noise_sigma


def _encode(pipe: Any, prompts: Sequence[str], negative_prompt: Any) -> tuple[Any, Any]:
    device = pipe._execution_device
    negative = None
    if negative_prompt is not None:
        negative = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
        if len(negative) != len(prompts):
            raise MemorizationConfigError(
                f"noise magnitude: {len(negative)} negative prompts for {len(prompts)} prompts; "
                "give one negative prompt (a string) or one per prompt"
            )
    cond, uncond = pipe.encode_prompt(list(prompts), device, 1, True, negative)
    return cond, uncond


def _timestep_cond(pipe: Any, guidance_scale: float, n: int, dtype: Any) -> Any:
    if getattr(pipe.unet.config, "time_cond_proj_dim", None) is None:
        return None
    import torch

    w = torch.tensor(guidance_scale - 1).repeat(n)
    emb = pipe.get_guidance_scale_embedding(w, embedding_dim=pipe.unet.config.time_cond_proj_dim)
    return emb.to(device=pipe._execution_device, dtype=dtype)


def noise_norms(
    pipe: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    steps: int = 1,
    guidance_scale: float = 7.5,
    height: int,
    width: int,
    num_inference_steps: int = 50,
    negative_prompt: str | Sequence[str] | None = None,
    batch_size: int = 8,
    eta: float = 0.0,
) -> Any:
    """Per-step ``d_t`` as a float32 CPU tensor (P, S, steps); ``noise_magnitude`` is its mean over steps."""
    import torch

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    seeds = [int(s) for s in seeds]
    if not prompts or not seeds:
        raise MemorizationConfigError("noise magnitude: need at least one prompt and one seed")
    if batch_size < 1:
        raise MemorizationConfigError(f"noise magnitude: batch_size must be >= 1, got {batch_size}")
    _check_settings(pipe, steps, num_inference_steps, height, width)
    n_seeds = len(seeds)
    out = torch.zeros(len(prompts) * n_seeds, steps)
    with torch.no_grad():
        cond, uncond = _encode(pipe, prompts, negative_prompt)
        jobs = [(p, s) for p in range(len(prompts)) for s in range(n_seeds)]  # prompt-major, as the pipeline
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            p_idx = torch.tensor([p for p, _ in chunk], device=cond.device)
            gens = [torch.Generator().manual_seed(seeds[s]) for _, s in chunk]
            emb = torch.cat([uncond[p_idx], cond[p_idx]])
            scheduler = fresh_scheduler(pipe)
            scheduler.set_timesteps(num_inference_steps, device=pipe._execution_device)
            latents = initial_latents(pipe, gens, height=height, width=width, dtype=cond.dtype)
            extra = pipe.prepare_extra_step_kwargs(gens, eta)
            t_cond = _timestep_cond(pipe, guidance_scale, len(chunk) * 2, latents.dtype)
            for i, t in enumerate(scheduler.timesteps[:steps]):
                model_in = scheduler.scale_model_input(torch.cat([latents] * 2), t)
                eps = pipe.unet(model_in, t, encoder_hidden_states=emb, timestep_cond=t_cond, return_dict=False)[0]
                eps_u, eps_c = eps.chunk(2)
                diff = (eps_c.float() - eps_u.float()).flatten(1)
                out[start : start + len(chunk), i] = diff.norm(dim=1).cpu()
                if i + 1 < steps:
                    guided = eps_u + guidance_scale * (eps_c - eps_u) if guidance_scale > 1 else eps_c
                    latents = scheduler.step(guided, t, latents, **extra, return_dict=False)[0]
    return out.view(len(prompts), n_seeds, steps)


def noise_magnitude(
    pipe: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    steps: int = 1,
    guidance_scale: float = 7.5,
    height: int,
    width: int,
    num_inference_steps: int = 50,
    negative_prompt: str | Sequence[str] | None = None,
    batch_size: int = 8,
    eta: float = 0.0,
) -> Any:
    """Wen et al.'s d for every (prompt, seed): a float32 CPU tensor (P, S). Higher = more memorized.

    ``d[p, s]`` is the mean over the first ``steps`` denoising steps (of a ``num_inference_steps``
    schedule) of the L2 norm of eps(prompt) - eps(negative) for seed ``s``'s latents; average it
    over seeds for a per-prompt score (as the paper does). ``batch_size`` images (x2 for CFG) go
    through the UNet at once; it changes memory use, never the scores.
    """
    return noise_norms(
        pipe,
        prompts,
        seeds,
        steps=steps,
        guidance_scale=guidance_scale,
        height=height,
        width=width,
        num_inference_steps=num_inference_steps,
        negative_prompt=negative_prompt,
        batch_size=batch_size,
        eta=eta,
    ).mean(dim=2)


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

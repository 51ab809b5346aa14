"""LoRA-aware memorization score: how much the adapter changes the prompt's pull on the denoiser.

A LoRA's memorization lives in the difference from its base model, which Wen et al.'s magnitude
(measured on base+LoRA alone) does not isolate. For a prompt ``p`` and a seed's pure noise
``x_T`` at the first timestep ``t_hi`` of the schedule (no denoising step):

    g_L = eps_L(x_T, t_hi, p) - eps_L(x_T, t_hi, 0)      guidance vector with the adapter
    g_B = eps_B(x_T, t_hi, p) - eps_B(x_T, t_hi, 0)      the same with the adapter off (weight 0)
    delta = || g_L - g_B ||_2

i.e. the LoRA's change of the text-conditional difference (``kind="guidance"``, the default): a
style LoRA that shifts every image alike moves ``eps(p)`` and ``eps(0)`` together and cancels; a
LoRA that ties a prompt to a learnt image changes that prompt's guidance. ``kind="conditional"``
is the plain change of the conditional prediction, ``|| eps_L(x_T, t_hi, p) - eps_B(x_T, t_hi, p) ||``
(no unconditional passes: 2 evaluations per (prompt, seed)). Outputs are converted to epsilon
(``zero_step.to_epsilon``). ``maps`` holds the per-latent-pixel norm over channels of
``g_L - g_B``: where the adapter changes the prompt's pull.

Cost per (prompt, seed): 2 conditional UNet evaluations (with and without the adapter), plus 2
unconditional ones per seed shared by all prompts of the call.

``base`` is a context-manager factory that turns the adapter off (the plugin passes
``MemorizationModel.lora_scale(0.0)``); by default ``pipe.disable_lora()`` / ``enable_lora()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import MemorizationConfigError
from ..records import GenerationSettings
from .common import check_inputs, encode, initial_latents

__all__ = ["lora_delta", "lora_delta_scores"]


@contextlib.contextmanager
def _disabled(pipe: Any) -> Iterator[None]:
    pipe.disable_lora()
    try:
        yield
    finally:
        pipe.enable_lora()


def _guidance(pipe: Any, sch: Any, t: Any, x: Any, cond: Any, uncond: Any, S: int, batch_size: int) -> Any:
    """(P*S, C, h, w) guidance vectors eps(p) - eps(0), prompt-major; eps(0) once per seed
    (``uncond`` None: eps(p) alone)."""
    import torch

    from .zero_step import guidance_vectors, unet_eps

    u = None
    if uncond is not None:
        parts = [x[i:i + batch_size] for i in range(0, S, batch_size)]
        u = torch.cat([unet_eps(pipe, sch, xs, t, uncond[:1].expand(len(xs), -1, -1)) for xs in parts])
    return guidance_vectors(pipe, sch, t, x, cond, u, batch_size)


def lora_delta_scores(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], settings: GenerationSettings, *,
                      batch_size: int = 8, base: Callable[[], Any] | None = None,
                      kind: str = "guidance") -> tuple[Any, Any, int]:
    """(scores (P, S), maps (P, S, h, w), UNet evaluations) for every (prompt, seed) at the first
    timestep of generation's schedule (``settings``), with its size and negative prompt."""
    import torch

    from .zero_step import first_timesteps

    prompts, seeds = check_inputs("lora_delta", pipe, prompts, seeds, settings, batch_size=batch_size)
    try:
        adapters = {a for names in pipe.get_list_adapters().values() for a in names}
    except (AttributeError, ValueError):
        adapters = set()
    if not adapters:
        raise MemorizationConfigError(
            "lora_delta needs a model with a LoRA: set lora in the manifest's [model] (or --memorization-lora), "
            "or remove lora_delta from [detectors]")
    if kind not in ("guidance", "conditional"):
        raise MemorizationConfigError(f"lora_delta: kind must be 'guidance' or 'conditional', got {kind!r}")
    sch, t_hi, _ = first_timesteps(pipe, settings, "lora_delta")
    uncond_on = kind == "guidance"
    P, S = len(prompts), len(seeds)
    with torch.no_grad():
        x = initial_latents(pipe, seeds, height=settings.height, width=settings.width)
        cond, uncond = encode(pipe, prompts, settings.negative_prompt)
        g_lora = _guidance(pipe, sch, t_hi, x, cond, uncond if uncond_on else None, S, batch_size)
        with (base or (lambda: _disabled(pipe)))():
            cond_b, uncond_b = encode(pipe, prompts, settings.negative_prompt)  # a text-encoder LoRA changes these
            g_base = _guidance(pipe, sch, t_hi, x, cond_b, uncond_b if uncond_on else None, S, batch_size)
        diff = (g_lora - g_base).cpu()
    scores = diff.flatten(1).norm(dim=1).view(P, S)
    maps = diff.norm(dim=1).view(P, S, *diff.shape[2:])
    return scores, maps, 2 * (P * S + (S if uncond_on else 0))


def lora_delta(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], settings: GenerationSettings,
               **options: Any) -> Any:
    """The score alone, (P, S), with ``noise_magnitude``'s signature (for ``calibration.calibrate``);
    ``options`` are ``lora_delta_scores``'s."""
    return lora_delta_scores(pipe, prompts, seeds, settings, **options)[0]

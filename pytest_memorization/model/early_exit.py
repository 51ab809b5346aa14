"""Early exit: stop denoising a batch once every image's predicted clean image x0 is clearly far
from every work, and return those x0 images; finish every batch that holds one close image.

The mechanism only (which steps, how x0 is read and decoded, how the pipeline is stopped); what
"clearly far" means is the caller's ``far`` function (``judging.early_exit``), and the constants
live in ``config.policy``. A real diffusers pipeline runs unchanged: ``callback_on_step_end`` sees
the latents after each step; x0 is the scheduler's own ``pred_original_sample`` (DDIM, Euler, ...)
or, for a scheduler that does not return it, x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)
(epsilon; v and sample predictions likewise). At exit the callback hands x0 back as the latents
and sets the pipeline's ``interrupt``: the remaining steps are skipped and the pipeline decodes x0
through its own VAE path. SD 1/2 and SDXL only (their VAE decode is the one used for the check);
other families generate in full.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

SUPPORTED_FAMILIES = ("sd", "sdxl")


@dataclass
class EarlyExit:
    """``far(images (B, 3, H, W) in [0, 1]) -> per image: its scores when clearly far, else None``;
    checked after each step count in ``fractions`` x steps (1-based, before the last step)."""

    far: Callable[[Any], list[dict[str, float] | None]]
    fractions: Sequence[float]
    calls: list[dict[str, Any]] = field(default_factory=list)  # per pipeline call: {"step", "far"} once exited

    def steps_for(self, steps: int) -> set[int]:
        return {n for f in self.fractions if 1 <= (n := math.ceil(f * steps)) < steps}


def applicable(family: str, pipe: Any) -> bool:
    return family in SUPPORTED_FAMILIES and hasattr(pipe, "vae") and hasattr(pipe, "scheduler")


def run(pipe: Any, exit_: EarlyExit, steps: int, call: Callable[..., Any]) -> tuple[Any, dict[str, Any] | None]:
    """``call(callback_on_step_end=...)`` with x0 checks; returns its images and the exit (or None)."""
    check_at = exit_.steps_for(steps)
    seen: dict[str, Any] = {}
    done: dict[str, Any] = {}
    scheduler = pipe.scheduler
    original = scheduler.step

    @functools.wraps(original)  # the pipeline inspects step's signature (eta, generator)
    def step(model_output: Any, timestep: Any, sample: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(model_output, timestep, sample, *args, **kwargs)
        seen["x0"] = _x0(scheduler, out, model_output, timestep, sample)
        return out

    def callback(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        x0 = seen.pop("x0", None)
        if i + 1 not in check_at or x0 is None or done:
            return {}
        far = exit_.far(decode(p, x0))
        if all(f is not None for f in far):
            done.update(step=i + 1, far=far)
            p._interrupt = True  # the loop skips the remaining steps, then decodes the latents we return
            return {"latents": x0.to(kwargs["latents"].dtype)}
        return {}

    scheduler.step = step
    try:
        images = call(callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"])
    finally:
        del scheduler.step  # the instance attribute goes; the class's step is back
    exit_.calls.append(dict(done))
    return images, (dict(done) if done else None)


def _x0(scheduler: Any, out: Any, model_output: Any, timestep: Any, sample: Any) -> Any:
    import torch

    pred = out[1] if isinstance(out, tuple) and len(out) > 1 else getattr(out, "pred_original_sample", None)
    if torch.is_tensor(pred) and pred.shape == sample.shape:
        return pred.detach()
    abar_all = getattr(scheduler, "alphas_cumprod", None)
    kind = getattr(scheduler.config, "prediction_type", "epsilon")
    if abar_all is None:
        return None
    abar = abar_all.to(sample.device)[int(timestep)].to(sample.dtype)
    a, s = abar.sqrt(), (1 - abar).sqrt()
    if kind == "epsilon":
        return ((sample - s * model_output) / a).detach()
    if kind == "v_prediction":
        return (a * sample - s * model_output).detach()
    if kind == "sample":
        return model_output.detach()
    return None


def decode(pipe: Any, latents: Any) -> Any:
    """Latents -> images (B, 3, H, W) in [0, 1], as SD 1/2 and SDXL decode them (float32)."""
    import torch

    vae = pipe.vae
    with torch.no_grad():
        z = latents.to(vae.dtype) / vae.config.scaling_factor
        image = vae.decode(z, return_dict=False)[0]
    return (image.float() / 2 + 0.5).clamp(0, 1).cpu()

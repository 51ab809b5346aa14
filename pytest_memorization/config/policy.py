"""The policy: settings that would make a copy undetectable are refused, and the CI's thresholds
are floors that a manifest (or a test's marker) can tighten but never relax.

- **Strictest wins**: where the command line or ini sets a threshold for a metric, and a manifest
  (its ``[thresholds]`` or a work's own ``thresholds``) sets another, the one that flags more is
  used: for a distance the larger, for a similarity the smaller.
- **No blind settings**: a threshold outside a metric's range, or at the bound where nothing can
  cross it (a distance at its lower bound, ``tiled_l2 = 0.0``; a similarity at its upper bound,
  ``ssim = 1.0``), fewer denoising steps than ``MIN_STEPS``, and LoRA scale 0 under the LoRA gate
  are usage errors, on the command line, in the ini file and in a manifest alike.

No torch here: names, directions and bounds come from ``metrics``' torch-free tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..metrics import KNOWN_BOUNDS, KNOWN_DIRECTIONS, METRIC_NAMES

# Measured on the demo memorizer (tests/test_policy.py, docs/rules.md): its copies of its
# five works read tiled L2 <= 0.15 from 2 steps on, while at 1 step a copy reads far above every
# threshold, so fewer steps than this can hide a copy.
MIN_STEPS = 2

# No SSIM-only copy verdict on a low-structure image (``judging.flat_guard``): below this mean local
# standard deviation of luma (``metrics.ssim.structure``), SSIM's contrast term is ~1 (its constant
# C2 = 0.03**2) and SSIM compares mean brightness only. Measured at 64 px (docs/metrics.md, "Flat images"):
# flat and near-flat images <= 0.0134, the 10%-contrast photos that SSIM called copies of *other*
# photos (up to 0.555) <= 0.0147; the lowest-structure real photo (rocket) 0.0298-0.0307 and the demo
# memorizer's copies >= 0.0291. 0.02 lies between (geometric midpoint 0.021), 2/3 of sqrt(C2).
SSIM_STRUCTURE_FLOOR = 0.02


def threshold_problem(name: str, value: float) -> str | None:
    """Why ``name = value`` cannot be a threshold (None when it can). One rule for every source."""
    if name not in METRIC_NAMES:
        return f"unknown metric '{name}'; known metrics: {', '.join(METRIC_NAMES)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{name} = {value!r} is not a finite number"
    lo, hi = KNOWN_BOUNDS.get(name, (-math.inf, None))
    if value < lo or (hi is not None and value > hi):
        return f"{name} = {value:g} is out of range; {name} lies in [{lo:g}, {'inf' if hi is None else f'{hi:g}'}]"
    if KNOWN_DIRECTIONS.get(name) == "distance" and value <= lo:
        return (f"{name} = {value:g} can never flag a copy: a distance is a copy at or below its threshold, and "
                f"{lo:g} is the smallest {name} there is; use a larger value (e.g. tiled_l2 = 0.15)")
    if KNOWN_DIRECTIONS.get(name) == "similarity" and hi is not None and value >= hi:
        return (f"{name} = {value:g} can never flag a copy: a similarity is a copy at or above its threshold, "
                f"and {hi:g} is the largest {name} there is; use a smaller value (e.g. ssim = 0.5)")
    return None


def stricter(name: str, a: float, b: float) -> float:
    """The threshold of the two that flags more: the larger distance, the smaller similarity."""
    return min(a, b) if KNOWN_DIRECTIONS.get(name) == "similarity" else max(a, b)


def with_floors(thresholds: Mapping[str, float], floors: Mapping[str, float], *,
                add: bool = True) -> dict[str, float]:
    """``thresholds`` with each metric no laxer than ``floors`` (the command line and ini);
    ``add``: also take metrics only the floors name."""
    out = dict(thresholds)
    for name, floor in floors.items():
        if name in out:
            out[name] = stricter(name, out[name], floor)
        elif add:
            out[name] = floor
    return out


def steps_problem(steps: int) -> str | None:
    if steps < MIN_STEPS:
        return (f"{steps} denoising step(s) is fewer than the minimum {MIN_STEPS}: too few steps blur a copy "
                f"past every threshold (see docs/rules.md, Policy); use at least {MIN_STEPS}")
    return None


def lora_gate_problem(scale: float) -> str | None:
    if scale == 0:
        return ("LoRA scale 0 under the LoRA gate compares the base model with itself, so the gate can never "
                "fail; use the scale the LoRA ships with (e.g. 1.0)")
    return None


# Early exit (--memorization-early-exit, judging/early_exit.py): a batch stops denoising only when
# every image's predicted clean image x0 is at least EARLY_EXIT_FACTOR times past every gating
# threshold against every work (distance > 2 x threshold; similarity < threshold / 2), checked at
# these fractions of the steps (never before 40%), and only when every gating metric is one of
# EARLY_EXIT_METRICS (pixel metrics that a blurry early x0 does not flatter). Chosen before
# measuring; bench/early_exit.py measures verdict agreement on the demo models (docs/benchmarks.md).
EARLY_EXIT_FACTOR = 2.0
EARLY_EXIT_AT = (0.4, 0.6, 0.8)
EARLY_EXIT_METRICS = ("tiled_l2", "ssim")
EARLY_EXIT_MIN_STEPS = 10  # with fewer steps x0 at 40% is too rough to trust, and little is saved

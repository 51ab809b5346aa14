"""When an image may stop generating early (``config.policy``: factor, steps, metrics).

``clearly_far`` is conservative on purpose: an image exits only when, for every gating metric
and against every work (each work's own threshold included), its x0 lies ``EARLY_EXIT_FACTOR``
times past the threshold on the safe side. An item gated by a metric outside
``EARLY_EXIT_METRICS`` (LPIPS, CLIP, SSCD, pHash) never exits early: a blurry x0 says nothing
about what those would score on the final image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..config.policy import EARLY_EXIT_FACTOR, EARLY_EXIT_METRICS, EARLY_EXIT_MIN_STEPS
from ..records import Finding, Work
from .thresholds import MetricRule


def why_not(rules: Mapping[str, MetricRule], works: Sequence[Work], steps: int) -> str | None:
    """Why this item cannot exit early (None when it can)."""
    if steps < EARLY_EXIT_MIN_STEPS:
        return f"early exit needs at least {EARLY_EXIT_MIN_STEPS} steps (this item has {steps})"
    gating = {n for n, r in rules.items() if r.threshold is not None} | \
        {n for w in works for n in w.thresholds if n in rules}
    if not gating:
        return "no metric has a threshold"
    other = sorted(gating - set(EARLY_EXIT_METRICS))
    if other:
        return f"early exit checks only {', '.join(EARLY_EXIT_METRICS)}; this item is also gated by {', '.join(other)}"
    return None


def clearly_far(scores: Mapping[str, Any], works: Sequence[Work], rules: Mapping[str, MetricRule],
                factor: float = EARLY_EXIT_FACTOR) -> list[dict[str, float] | None]:
    """Per image (rows of the (N, M) ``scores``): its closest score per metric when every gating metric
    is ``factor`` times past its threshold against every work, else None. NaN is never far."""
    n = next(iter(scores.values())).shape[0]
    out: list[dict[str, float] | None] = []
    for i in range(n):
        closest: dict[str, float] = {}
        far = True
        for name, rule in rules.items():
            row = [float(v) for v in scores[name][i]]
            for j, w in enumerate(works):
                t = w.thresholds.get(name, rule.threshold)
                if t is None:
                    continue
                v = row[j]
                ok = v > t * factor if rule.direction == "distance" else v < t / factor
                far = far and ok  # NaN compares False: not far
            closest[name] = min(row) if rule.direction == "distance" else max(row)
        out.append(closest if far else None)
    return out


def stopped_finding(stop: Mapping[str, Any]) -> Finding:
    """The report's note on an image that stopped early (a ``pass`` finding: information only)."""
    far = ", ".join(f"{n} {v:.3f}" for n, v in stop["x0_scores"].items())
    return Finding("early_exit", "pass", f"stopped at step {stop['step']} of {stop['steps']}: its "
                   f"predicted image x0 ({far}) was {EARLY_EXIT_FACTOR:g}x past every threshold "
                   "against every work; the image scored is that x0")

"""Scores -> verdicts. One function judges every generated image against every work.

A metric crosses its threshold in its own direction (distance: at or below; similarity:
at or above). The *nearest* work of an image is the one it comes closest to copying:
the largest excess past a threshold over all metrics, scaled by each metric's range.
An image fails when any metric crosses against any work; it warns when a score lies in
the warn band (default: within 10% of the threshold) or past an explicit ``[warn]`` value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .metrics.base import crosses
from .records import ImageResult, Verdict, Work


@dataclass(frozen=True)
class MetricRule:
    name: str
    direction: str
    threshold: float | None
    warn: float | None
    span: float = 1.0  # the metric's range, to compare excesses across metrics


def warn_value(threshold: float, direction: str, band: float) -> float:
    return threshold * (1 + band) if direction == "distance" else threshold * (1 - band)


def excess(value: float, threshold: float, direction: str) -> float:
    """How far past the threshold, in the copying direction (>= 0 means crossed)."""
    return threshold - value if direction == "distance" else value - threshold


def rules_for(metrics: Mapping[str, Any], thresholds: Mapping[str, float], warn: Mapping[str, float],
              band: float) -> dict[str, MetricRule]:
    rules = {}
    for name, m in metrics.items():
        t = thresholds.get(name, m.default_threshold)
        w = warn.get(name, warn_value(t, m.direction, band) if t is not None and band > 0 else None)
        lo, hi = m.lower_bound, m.upper_bound
        span = (hi - lo) if lo is not None and hi is not None else 1.0
        rules[name] = MetricRule(name, m.direction, t, w, span)
    return rules


def judge(item: str, prompts: Sequence[str], seeds: Sequence[int], scores: Mapping[str, Any],
          works: Sequence[Work], rules: Mapping[str, MetricRule]) -> list[ImageResult]:
    """One ``ImageResult`` per image. ``scores[metric]`` is an (N, M) tensor against ``works``."""
    results = []
    for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
        best_j, best_key = 0, None
        for j, work in enumerate(works):
            key = max(
                (excess(float(scores[n][i, j]), t, r.direction) / r.span
                 for n, r in rules.items() if (t := work.thresholds.get(n, r.threshold)) is not None),
                default=None,
            )
            if key is None:  # no gating metric: nearest by the first metric
                n0, r0 = next(iter(rules.items()))
                key = -float(scores[n0][i, j]) if r0.direction == "distance" else float(scores[n0][i, j])
            if best_key is None or key > best_key:
                best_j, best_key = j, key
        work = works[best_j] if works else None
        verdict: Verdict = "pass"
        reasons: list[str] = []
        values: dict[str, float] = {}
        used: dict[str, float] = {}
        for n, r in rules.items():
            v = float(scores[n][i, best_j]) if works else float("nan")
            values[n] = v
            t = (work.thresholds.get(n, r.threshold) if work else r.threshold)
            if t is None:
                continue
            used[n] = t
            op = "<=" if r.direction == "distance" else ">="
            if crosses(v, t, r.direction):
                verdict = "fail"
                reasons.append(f"{n} {v:.4f} {op} {t:g} against '{work.id if work else '?'}'")
            elif r.warn is not None and crosses(v, r.warn, r.direction):
                if verdict == "pass":
                    verdict = "warn"
                reasons.append(f"{n} {v:.4f} within warn band ({op} {r.warn:.4g}; threshold {t:g})")
        results.append(ImageResult(item=item, prompt=prompt, seed=int(seed), work=work.id if work else None,
                                   scores=values, thresholds=used, verdict=verdict, reasons=reasons))
    return results


def worst(results: Sequence[ImageResult]) -> Verdict:
    order = {"error": 0, "fail": 1, "warn": 2, "pass": 3}
    return min((r.verdict for r in results), key=order.__getitem__, default="pass")


def failure_message(results: Sequence[ImageResult], *, title: str = "memorization") -> str:
    bad = [r for r in results if r.verdict in ("fail", "error")]
    lines = [f"{title}: {len(bad)} of {len(results)} generated images copy a protected work"]
    for r in bad:
        lines.append(f"  work '{r.work}' <- prompt {r.prompt!r}, seed {r.seed}: " + "; ".join(
            x for x in r.reasons if "warn band" not in x))
        if r.image:
            lines.append(f"    image saved: {r.image}")
    return "\n".join(lines)

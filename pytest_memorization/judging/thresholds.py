"""The threshold rule and the warn band: scores -> findings (no verdicts here; see ``verdict``).

A metric crosses its threshold in its own direction (distance: at or below; similarity:
at or above). The *nearest* work of an image is the one it comes closest to copying:
the largest excess past a threshold over all metrics, scaled by each metric's range.
A metric that crosses against the nearest work is a ``fail`` finding; a ``warn`` finding when a score lies in
the warn band (default: within 10% of the threshold) or past an explicit ``[warn]`` value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..metrics.base import crosses
from ..records import Finding, ImageResult, Work


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


def _nearest_works(n: int, scores: Mapping[str, Any], works: Sequence[Work],
                   rules: Mapping[str, MetricRule]) -> list[int] | None:
    """Each image's nearest work as ``score_rows``'s loop picks it (largest excess past a threshold over
    the span, first work on ties; by the first metric where a work has no threshold), for all N x M pairs
    at once. None (the loop decides) when a score is not finite or there is nothing to vectorise."""
    import numpy as np

    if not works or not rules or n == 0:
        return None
    mats = {name: np.asarray(scores[name], dtype=np.float64)[:n, :len(works)] for name in rules}
    if any(m.shape != (n, len(works)) or not np.isfinite(m).all() for m in mats.values()):
        return None
    key = np.full((n, len(works)), -np.inf)
    gated = np.zeros(len(works), dtype=bool)
    for name, r in rules.items():
        t = np.array([w.thresholds.get(name, r.threshold) for w in works], dtype=object)
        has = np.array([x is not None for x in t])
        if not has.any():
            continue
        tv = np.where(has, t, 0.0).astype(np.float64)
        ex = (tv - mats[name]) if r.direction == "distance" else (mats[name] - tv)
        key = np.where(has, np.maximum(key, ex / r.span), key)
        gated |= has
    if not gated.all():  # a work without any threshold: nearest by the first metric's value
        n0, r0 = next(iter(rules.items()))
        raw = -mats[n0] if r0.direction == "distance" else mats[n0]
        key = np.where(gated, key, raw)
    return [int(j) for j in key.argmax(axis=1)]


def score_rows(item: str, prompts: Sequence[str], seeds: Sequence[int], scores: Mapping[str, Any],
          works: Sequence[Work], rules: Mapping[str, MetricRule]) -> list[ImageResult]:
    """One ``ImageResult`` per image, against its nearest work, with the threshold and warn-band
    findings; and a threshold finding for every *other* work a metric crosses too, so that a copy of
    one work is never hidden by another work that a different metric ranks nearer (a local copy of the
    retina beside an SSIM near-miss of the emblem). ``scores[metric]`` is an (N, M) tensor against
    ``works``."""
    import torch

    results = []
    nearest = _nearest_works(len(prompts), scores, works, rules)
    def limit(w: Work, n: str, r: MetricRule) -> float:
        t = w.thresholds.get(n, r.threshold)
        return float("nan") if t is None else t  # NaN never crosses

    limits = {n: torch.tensor([limit(w, n, r) for w in works], dtype=torch.float64) for n, r in rules.items()}
    for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
        best_j, best_key = 0, None
        for j, work in enumerate(works if nearest is None else ()):
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
        if nearest is not None:
            best_j = nearest[i]
        work = works[best_j] if works else None
        findings: list[Finding] = []
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
            wid = work.id if work else None
            if crosses(v, t, r.direction):
                findings.append(Finding("threshold", "fail", f"{n} {v:.4f} {op} {t:g} against '{wid}'",
                                        metric=n, value=v, threshold=t, work=wid))
            elif r.warn is not None and crosses(v, r.warn, r.direction):
                findings.append(Finding("warn_band", "warn", f"{n} {v:.4f} within warn band ({op} {r.warn:.4g}; "
                                        f"threshold {t:g})", metric=n, value=v, threshold=t, work=wid))
        for n, r in rules.items():  # the other works this image crosses a threshold against
            if not works:
                break
            row = scores[n][i].double().cpu()
            hit = (row <= limits[n]) if r.direction == "distance" else (row >= limits[n])
            op = "<=" if r.direction == "distance" else ">="
            for j in hit.nonzero().flatten().tolist():
                if j != best_j:
                    v, t = float(row[j]), float(limits[n][j])
                    findings.append(Finding("threshold", "fail", f"{n} {v:.4f} {op} {t:g} against '{works[j].id}'",
                                            metric=n, value=v, threshold=t, work=works[j].id))
        results.append(ImageResult(item=item, prompt=prompt, seed=int(seed), work=work.id if work else None,
                                   scores=values, thresholds=used, findings=findings))
    return results



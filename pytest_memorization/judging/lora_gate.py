"""The LoRA pre-merge rule: what the LoRA changes, paired by seed and by work.

The same seed is generated with the base model (LoRA scale 0) and with the LoRA, and both
images are scored against *every* protected work (not the one the LoRA image happens to be
nearest to, which would bias every change toward "moved toward"). Two findings fail:

- ``lora_gate.crossed``: the LoRA image crosses a copy threshold for a work that the base
  image of the same seed does not cross. The LoRA made a copy.
- ``lora_gate.approaching``: for one work and metric, the LoRA moves the image toward the
  work on *every* seed, by more than the tolerance on the median, AND the LoRA images end
  inside the approaching band (median within ``approach_band`` of the threshold: a distance
  <= t * (1 + band), a similarity >= t * (1 - band)). The LoRA is steering toward a copy.

A move between images that are far from every work is recorded in the row's
``extra["lora_gate"]`` and shown in the report, never a failure: a style LoRA changes every image.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from ..metrics.base import crosses, worsening
from ..records import Finding, Work
from .thresholds import MetricRule

APPROACH_BAND = 0.25  # the approaching band, as a fraction of each threshold (2.5x the warn band)
TOLERANCE_FRACTION = 0.1  # default tolerance: 10% of the threshold, as for baselines


def in_band(value: float, threshold: float, direction: str, band: float) -> bool:
    edge = threshold * (1 + band) if direction == "distance" else threshold * (1 - band)
    return crosses(value, edge, direction)


def lora_gate_findings(lora: Mapping[str, Any], base: Mapping[str, Any], works: Sequence[Work],
                       rules: Mapping[str, MetricRule], *, tolerance: Mapping[str, float] | None = None,
                       approach_band: float = APPROACH_BAND, amplified: float | None = None,
                       ) -> tuple[list[list[Finding]], list[Finding]]:
    """The LoRA gate's findings: per image (row i) the crossings, and for the whole item the
    approaches (a trend over seeds). ``lora[m]`` and ``base[m]`` are (N, M) score matrices of the
    LoRA images and the base images of the same seeds against ``works``. With ``amplified`` (lambda),
    ``lora`` holds the extraction-amplified images and the findings are ``lora_gate.amplified.*``."""
    rule_prefix = "lora_gate.amplified" if amplified else "lora_gate"
    with_lora = f"with the LoRA amplified x{amplified:g}" if amplified else "with the LoRA"
    tolerance = tolerance or {}
    n = len(next(iter(lora.values()))) if lora else 0
    out: list[list[Finding]] = [[] for _ in range(n)]
    item: list[Finding] = []
    for j, work in enumerate(works):
        for name, rule in rules.items():
            t = work.thresholds.get(name, rule.threshold)
            if t is None:
                continue
            op = "<=" if rule.direction == "distance" else ">="
            lv = [float(lora[name][i, j]) for i in range(n)]
            bv = [float(base[name][i, j]) for i in range(n)]
            moves = [worsening(b, v, rule.direction) for b, v in zip(bv, lv)]
            crossed = False
            for i in range(n):
                if crosses(lv[i], t, rule.direction) and not crosses(bv[i], t, rule.direction):
                    crossed = True
                    out[i].append(Finding(
                        f"{rule_prefix}.crossed", "fail",
                        f"{name} {lv[i]:.4f} {op} {t:g} against '{work.id}' {with_lora}, but not without it "
                        f"(base {bv[i]:.4f}): the LoRA makes a copy", metric=name, value=lv[i], threshold=t,
                        work=work.id))
            tol = tolerance.get(name, abs(t) * TOLERANCE_FRACTION)
            median_lora, median_move = statistics.median(lv), statistics.median(moves)
            if (n and not crossed and all(m > 0 for m in moves) and median_move > tol
                    and in_band(median_lora, t, rule.direction, approach_band)
                    and not all(crosses(b, t, rule.direction) for b in bv)):
                msg = (f"LoRA gate: {name} moves toward '{work.id}' on all {n} seeds {with_lora} (median "
                       f"{statistics.median(bv):.4f} -> {median_lora:.4f}, change {median_move:+.4f} > tolerance "
                       f"{tol:g}) and ends inside the approaching band ({op} {_edge(t, rule.direction, approach_band):.4g}"
                       f"; threshold {t:g})")
                item.append(Finding(f"{rule_prefix}.approaching", "fail", msg, metric=name, value=median_lora,
                                    threshold=t, work=work.id))
    return out, item


def _edge(t: float, direction: str, band: float) -> float:
    return t * (1 + band) if direction == "distance" else t * (1 - band)

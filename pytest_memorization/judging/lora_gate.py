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
  An SSIM approach that no other metric confirms for that work is a warning, as an unconfirmed
  SSIM crossing is (``judging.flat_guard.guard_approaches``, applied by the judge).

A move between images that are far from every work is recorded in the row's
``extra["lora_gate"]`` and shown in the report, never a failure: a style LoRA changes every image.

Without a listed work, ``subject_concentration_finding`` is the LoRA's reference-free rule: the
``subject_concentration`` detector's score (the LoRA's images of the prompt, across seeds and
contexts, agree with each other far more than the base model's do: it draws one subject) against
its calibrated threshold. The judge calls it through ``judging.detectors.detector_finding``.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from ..metrics.base import crosses, worsening
from ..records import DetectorScore, Finding, Work
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


def subject_concentration_finding(d: DetectorScore) -> Finding | None:
    """Fail (warn with ``gate = false``) when the LoRA's images of ``d.prompt`` agree with each other
    more than the base model's by at least the threshold; an ``error`` when the score is not finite."""
    import math

    if not (math.isfinite(d.score) and math.isfinite(d.threshold)):
        return Finding("subject_concentration", "error", f"subject_concentration: score {d.score} or threshold "
                       f"{d.threshold} is not a finite number; the detector could not measure {d.prompt!r}",
                       metric="subject_concentration")
    if d.score < d.threshold:
        return None
    label = "calibrated" if d.calibrated else "uncalibrated, written in the manifest"
    lora, base = d.agreement if d.agreement is not None else (math.nan, math.nan)
    msg = (f"subject concentration {d.score:.4f} >= {d.threshold:.4f} ({label}): the LoRA's {d.n_images} images of "
           f"{d.prompt!r} across seeds and contexts agree with each other (structure correlation {lora:.3f}) far more "
           f"than the base model's ({base:.3f}): the LoRA draws one subject, with no listed work of it; see its images")
    if not d.gate:
        msg += " (not gating: gate = false in [detectors] subject_concentration)"
    return Finding("subject_concentration", "fail" if d.gate else "warn", msg, metric="subject_concentration",
                   value=d.score, threshold=d.threshold)

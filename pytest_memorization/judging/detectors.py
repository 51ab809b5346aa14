"""Rules for the reference-free detectors: their scores -> findings for the whole item.

A detector score or threshold that is not a finite number is an ``error`` finding: a
detector that could not measure never passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..records import DetectorScore, Finding

SEED_DIVERSITY_DEFAULT = 0.15  # Carlini et al.'s tiled-L2 copy threshold, applied between seeds


def _not_finite(name: str, score: float, threshold: float) -> Finding | None:
    if math.isfinite(score) and math.isfinite(threshold):
        return None
    return Finding(name, "error", f"{name}: score {score} or threshold {threshold} is not a finite number; the "
                   "detector could not measure this prompt (check the model's outputs and the calibration file)",
                   metric=name)


def noise_magnitude_finding(prompt: str, score: float, threshold: float, calibrated: bool,
                            trigger_words: Sequence[str] = (), gate: bool = True) -> Finding | None:
    """Wen et al.: fail when the mean over seeds reaches the threshold (warn with ``gate = false``)."""
    bad = _not_finite("noise_magnitude", score, threshold)
    if bad is not None:
        return bad
    if score < threshold:
        return None
    label = "calibrated" if calibrated else "uncalibrated, written in the manifest"
    driven = (f"; memorization driven by: {', '.join(repr(w) for w in trigger_words)}" if trigger_words
              else " (trigger tokens: not available for this model family)")
    msg = f"noise magnitude {score:.4f} >= {threshold:.4f} ({label}) for prompt {prompt!r}{driven}"
    if not gate:
        msg += " (not gating: gate = false in [detectors] noise_magnitude)"
    return Finding("noise_magnitude", "fail" if gate else "warn", msg, metric="noise_magnitude", value=score,
                   threshold=threshold)


def seed_diversity_finding(prompt: str, score: float, threshold: float, n_images: int, gate: bool) -> Finding | None:
    """Carlini et al.: near-identical generations across seeds; gates only with ``gate = true``."""
    bad = _not_finite("seed_diversity", score, threshold)
    if bad is not None:
        return bad
    if score > threshold:
        return None
    msg = (f"seed diversity: generations for {prompt!r} are near-identical across {n_images} seeds "
           f"(closest pair tiled L2 {score:.4f} <= {threshold:g})")
    if gate:
        return Finding("seed_diversity", "fail", msg, metric="seed_diversity", value=score, threshold=threshold)
    return Finding("seed_diversity", "warn", msg + " (not gating: set gate = true to fail on it)",
                   metric="seed_diversity", value=score, threshold=threshold)


DETECTOR_LABELS = {"zero_step": "zero-step score", "lora_delta": "LoRA guidance change"}


def threshold_finding(name: str, prompt: str, score: float, threshold: float, calibrated: bool) -> Finding | None:
    """``zero_step`` / ``lora_delta``: fail when the mean over seeds reaches the threshold."""
    bad = _not_finite(name, score, threshold)
    if bad is not None:
        return bad
    if score < threshold:
        return None
    label = "calibrated" if calibrated else "uncalibrated, written in the manifest"
    return Finding(name, "fail", f"{DETECTOR_LABELS.get(name, name)} {score:.4f} >= {threshold:.4f} ({label}) for "
                   f"prompt {prompt!r}", metric=name, value=score, threshold=threshold)


def detector_finding(d: DetectorScore) -> Finding | None:
    """The rule of any detector score (the judge calls this for every path): its own rule where the
    detector has one, else the generic threshold rule. A NaN score or threshold is an ``error``."""
    if d.name == "noise_magnitude":
        return noise_magnitude_finding(d.prompt, d.score, d.threshold, d.calibrated, d.trigger_words or (), gate=d.gate)
    if d.name == "seed_diversity":
        return seed_diversity_finding(d.prompt, d.score, d.threshold, d.n_images, d.gate)
    if d.name == "subject_concentration":
        from .lora_gate import subject_concentration_finding

        return subject_concentration_finding(d)
    return threshold_finding(d.name, d.prompt, d.score, d.threshold, d.calibrated)


def flagged(d: DetectorScore) -> bool:
    """Whether the score crosses its threshold (a measurement decision: whether to spend the work of
    finding trigger tokens or drawing a map; the verdict is the judge's)."""
    if not (math.isfinite(d.score) and math.isfinite(d.threshold)):
        return False
    return d.score <= d.threshold if d.direction == "distance" else d.score >= d.threshold

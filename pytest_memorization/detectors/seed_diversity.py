"""Seed diversity (Carlini et al., USENIX Security 2023): near-identical generations across seeds.

A prompt whose generations look the same whatever the seed is likely reproducing one training
image. Carlini et al. generate 500 images per caption and flag cliques of >= 10 images within
tiled L2 0.15 of each other. With the handful of seeds a CI run affords the signal is weak:
REFERENCES.md quotes AUC 0.908 with 4 seeds (0.94 with 16), well below the noise-magnitude
detector's 0.98 from one seed. So it is reported by default and only gates when the user opts
in (``gate=True``).

Images are (S, 3, H, W) float tensors in [0, 1], all generated from ONE prompt with S seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import MemorizationConfigError

__all__ = ["seed_diversity", "seed_diversity_check", "SeedDiversity", "CARLINI_THRESHOLD"]

CARLINI_THRESHOLD = 0.15  # tiled L2 at or below which Carlini et al. call two images the same


def _pairwise(images: Any, metric: Any) -> tuple[Any, str]:
    """(S, S) scores among ``images`` and the metric's direction ('distance' or 'similarity')."""
    import torch

    with torch.no_grad():
        if isinstance(metric, str):
            from ..metrics import get_metric

            metric = get_metric(metric, **({"align": False} if metric in ("tiled_l2", "ssim") else {}))
        if hasattr(metric, "score") and hasattr(metric, "direction"):
            return metric.score(images, images), str(metric.direction)
        if callable(metric):
            return metric(images, images), "distance"
    raise MemorizationConfigError(f"seed diversity: metric must be a name, a Metric or a callable, got {metric!r}")


def _pairs(images: Any, metric: Any) -> tuple[list[float], str]:
    if getattr(images, "ndim", 0) != 4 or images.shape[1] != 3:
        raise MemorizationConfigError(
            f"seed diversity: expected images (S, 3, H, W) of one prompt, got {tuple(getattr(images, 'shape', ()))}"
        )
    if len(images) < 2:
        raise MemorizationConfigError("seed diversity needs at least 2 seeds per prompt (got 1); add seeds")
    scores, direction = _pairwise(images, metric)
    n = len(images)
    return [float(scores[i, j]) for i in range(n) for j in range(i + 1, n)], direction


def seed_diversity(images: Any, metric: str | Any | Callable[[Any, Any], Any] = "tiled_l2") -> float:
    """The closest pair among one prompt's generations: the minimum pairwise distance (or the
    maximum similarity for a similarity metric). Near 0 tiled L2 = the seeds made the same image."""
    values, direction = _pairs(images, metric)
    return min(values) if direction == "distance" else max(values)


@dataclass
class SeedDiversity:
    closest: float  # min pairwise distance (max similarity)
    mean: float
    close_pairs: int  # pairs at or past the threshold
    n_pairs: int
    n_seeds: int
    threshold: float
    direction: str
    flagged: bool  # closest pair at or past the threshold
    gate: bool  # whether a flag should fail the item (opt-in)
    note: str

    @property
    def fails(self) -> bool:
        return self.flagged and self.gate


def seed_diversity_check(
    images: Any,
    *,
    threshold: float = CARLINI_THRESHOLD,
    gate: bool = False,
    metric: str | Any | Callable[[Any, Any], Any] = "tiled_l2",
) -> SeedDiversity:
    """Score one prompt's generations and say whether they collapse onto one image.

    ``flagged`` when the closest pair is at or below ``threshold`` (distance) or at or above it
    (similarity). ``gate`` (default False) says whether the caller should fail the item on a flag.
    """
    values, direction = _pairs(images, metric)
    close = [v for v in values if (v <= threshold if direction == "distance" else v >= threshold)]
    closest = min(values) if direction == "distance" else max(values)
    n = len(images)
    note = (
        f"{n} seeds: weak evidence (Carlini et al.: AUC 0.908 with 4 seeds, 0.94 with 16); "
        + ("gating" if gate else "reported only, not gating (opt in to gate)")
    )
    return SeedDiversity(
        closest=closest,
        mean=sum(values) / len(values),
        close_pairs=len(close),
        n_pairs=len(values),
        n_seeds=n,
        threshold=threshold,
        direction=direction,
        flagged=bool(close),
        gate=gate,
        note=note,
    )

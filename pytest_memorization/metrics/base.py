"""The metric protocol. Every metric scores N generated images against M references.

A metric is either a *distance* (lower = closer, a copy when ``value <= threshold``)
or a *similarity* (higher = closer, a copy when ``value >= threshold``). Its
``version`` pins everything that changes scores: network, weights file hash,
preprocessing and resize policy. Baselines and caches refuse to mix versions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

Direction = Literal["distance", "similarity"]


def crosses(value: float, threshold: float, direction: str) -> bool:
    """True when ``value`` is at or past ``threshold`` in the copying direction."""
    return value <= threshold if direction == "distance" else value >= threshold


def worsening(old: float, new: float, direction: str) -> float:
    """How much closer to copying ``new`` is than ``old`` (positive = worse)."""
    return old - new if direction == "distance" else new - old


def closest(values: Any, direction: str, dim: int = -1) -> Any:
    """Index of the closest reference along ``dim`` (argmin for distances, argmax for similarities)."""
    return values.argmin(dim=dim) if direction == "distance" else values.argmax(dim=dim)


class Metric(ABC):
    """Base class. Subclasses set the class attributes and implement ``features``/``compare``.

    ``score(images, references)`` is ``compare(features(images), features(references))``, so
    reference features can be computed once and cached (see ``metrics.cache``).
    Images are float tensors (N, 3, H, W) in [0, 1].
    """

    name: ClassVar[str]
    direction: ClassVar[Direction]
    default_threshold: ClassVar[float | None] = None
    threshold_source: ClassVar[str] = ""
    needs_weights: ClassVar[bool] = False
    lower_bound: ClassVar[float | None] = None  # range, for validation of thresholds and scores
    upper_bound: ClassVar[float | None] = None

    @property
    @abstractmethod
    def version(self) -> str:
        """A string pinning everything that changes scores."""

    @abstractmethod
    def features(self, images: Any) -> Any:
        """Per-image features (embeddings, feature maps, or resized pixels)."""

    @abstractmethod
    def compare(self, a: Any, b: Any) -> Any:
        """(N, M) scores between features ``a`` (N) and ``b`` (M)."""

    def score(self, images: Any, references: Any) -> Any:
        import torch

        with torch.no_grad():
            return self.compare(self.features(images), self.features(references))

    def crosses(self, value: float, threshold: float) -> bool:
        return crosses(value, threshold, self.direction)

    def __repr__(self) -> str:
        return f"<metric {self.name} ({self.direction}) {self.version}>"

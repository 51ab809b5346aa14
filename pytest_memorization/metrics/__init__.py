"""Similarity metrics: ``get_metric(name, **options)``.

Importing this package imports no torch, lpips or open_clip; ``get_metric`` imports the chosen
metric's module (and its libraries) when called.

Common options of every metric: ``device="cpu"``, ``weights_dir=None`` (a folder searched first for
weights files). Per-metric options are the keyword arguments of each metric class.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import TYPE_CHECKING, Any

from ..errors import MemorizationConfigError

if TYPE_CHECKING:
    from .base import Metric

# name -> (module, class)
_REGISTRY: dict[str, tuple[str, str]] = {
    "tiled_l2": ("tiled_l2", "TiledL2"),
    "ssim": ("ssim", "SSIM"),
    "lpips": ("lpips", "LPIPSMetric"),
    "clip": ("clip", "CLIPMetric"),
    "sscd": ("sscd", "SSCDMetric"),
    "phash": ("phash", "PHash"),
    "pdq": ("pdq", "PDQ"),
    "local_copy": ("local_copy", "LocalCopy"),
}
METRIC_NAMES: tuple[str, ...] = tuple(_REGISTRY)
# Each built-in metric's direction, readable without importing its module (reports, baselines, xdist
# controllers). A test checks it against the classes' own ``direction``.
KNOWN_DIRECTIONS: dict[str, str] = {
    "tiled_l2": "distance", "ssim": "similarity", "lpips": "distance", "clip": "similarity", "sscd": "similarity",
    "phash": "distance", "pdq": "distance", "local_copy": "similarity",
}
# Each built-in metric's range (lower, upper; None = unbounded), readable without torch. A test
# checks it against the classes' own ``lower_bound``/``upper_bound``.
KNOWN_BOUNDS: dict[str, tuple[float, float | None]] = {
    "tiled_l2": (0.0, 1.0), "ssim": (-1.0, 1.0), "lpips": (0.0, None), "clip": (-1.0, 1.0), "sscd": (-1.0, 1.0),
    "phash": (0.0, 64.0), "pdq": (0.0, 256.0), "local_copy": (-1.0, 1.0),
}
# Each built-in metric's default threshold (None: none, calibrate), readable without torch. A test checks it
# against the classes' own ``default_threshold``. Without a policy these are the floors a manifest can
# tighten but never relax (``config.trust.default_floors``).
KNOWN_DEFAULTS: dict[str, float | None] = {
    "tiled_l2": 0.15, "ssim": 0.5, "lpips": None, "clip": None, "sscd": 0.5, "phash": 10.0, "pdq": 31.0,
    "local_copy": 0.385,
}
WEIGHT_FREE: tuple[str, ...] = ("tiled_l2", "ssim", "phash", "pdq", "local_copy")


def metric_class(name: str) -> type[Metric]:
    """The class of metric ``name`` (imports its module)."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, METRIC_NAMES, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise MemorizationConfigError(
            f"unknown metric '{name}'; known metrics: {', '.join(METRIC_NAMES)}.{hint}"
        )
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)  # type: ignore[no-any-return]


def metric_options(name: str) -> list[str]:
    """The option names metric ``name`` accepts."""
    sig = inspect.signature(metric_class(name).__init__)
    return [p for p in sig.parameters if p != "self"]


def get_metric(name: str, **options: Any) -> Metric:
    """Build metric ``name`` with ``options``; unknown names and options raise ``MemorizationConfigError``."""
    cls = metric_class(name)
    known = metric_options(name)
    unknown = [k for k in options if k not in known]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, known, n=1)
            hints.append(f"'{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise MemorizationConfigError(
            f"metric '{name}' does not take option {', '.join(hints)}; it takes: {', '.join(known)}"
        )
    return cls(**options)


__all__ = ["KNOWN_BOUNDS", "KNOWN_DIRECTIONS", "METRIC_NAMES", "WEIGHT_FREE", "get_metric", "metric_class", "metric_options"]

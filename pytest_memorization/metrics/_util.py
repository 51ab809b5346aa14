"""Helpers shared by the metrics: input checks, resizing, score checks, file hashes.

Imported only once scoring starts (imports torch lazily inside functions all the same).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._io import sha256_file  # noqa: F401  (the metrics hash their weights files with it)
from ..errors import MemorizationConfigError, MetricFailedError


def as_images(x: Any, metric: str, *, min_size: int = 1, device: str = "cpu") -> Any:
    """Check ``x`` is a float tensor (N, 3, H, W); return it as float32 on ``device``."""
    import torch

    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise MemorizationConfigError(
            f"metric '{metric}': expected images as a float tensor (N, 3, H, W) in [0, 1], got {shape}"
        )
    if not x.is_floating_point():
        raise MemorizationConfigError(
            f"metric '{metric}': expected float images in [0, 1], got dtype {x.dtype}; divide uint8 by 255"
        )
    if min(x.shape[-2:]) < min_size:
        raise MemorizationConfigError(
            f"metric '{metric}': images of {x.shape[-2]}x{x.shape[-1]} px are too small; "
            f"this metric needs at least {min_size} px on each side"
        )
    return x.detach().to(device=device, dtype=torch.float32)


def resize(x: Any, size: tuple[int, int], mode: str = "bicubic") -> Any:
    """Resize (N, C, H, W) to ``size`` with antialiasing; bicubic overshoot is clamped to [0, 1]."""
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)
    return out.clamp(0.0, 1.0)


def resize_short_side(x: Any, short: int, mode: str = "bicubic") -> Any:
    """Resize so the short side is ``short`` px, keeping the aspect ratio."""
    h, w = x.shape[-2:]
    if h <= w:
        size = (short, max(1, round(w * short / h)))
    else:
        size = (max(1, round(h * short / w)), short)
    return resize(x, size, mode)


def center_crop(x: Any, size: int) -> Any:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def check_scores(metric: str, scores: Any) -> Any:
    """Raise ``MetricFailedError`` when a score matrix holds NaN or Inf."""
    import torch

    bad = ~torch.isfinite(scores)
    if bool(bad.any()):
        idx = bad.nonzero()[0].tolist()
        error = MetricFailedError(
            f"metric '{metric}' returned NaN/Inf for {int(bad.sum())} of {scores.numel()} scores "
            f"(first at generated image {idx[0]}, reference {idx[-1]}); the run cannot certify "
            "anything. Check the inputs for NaN and the metric's weights file."
        )
        error.reference_index = int(idx[-1])  # type: ignore[attr-defined]  # the caller names that work
        raise error
    return scores


def torch_hub_checkpoints() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` as torch resolves it now."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(filename: str, weights_dir: str | os.PathLike[str] | None) -> tuple[Path | None, list[Path]]:
    """Look for ``filename`` in ``weights_dir`` then the torch hub checkpoints folder.

    Returns (found path or None, the folders searched).
    """
    places: list[Path] = []
    if weights_dir is not None:
        places.append(Path(weights_dir).expanduser())
    places.append(torch_hub_checkpoints())
    for d in places:
        if (d / filename).is_file():
            return d / filename, places
    return None, places

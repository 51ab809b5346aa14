"""Shared base of the weight-free pixel metrics (tiled L2, SSIM).

Resize policy: pixel metrics compare at the *generated* images' size. References of another size
are resized to it (bicubic with antialias, clamped to [0, 1]; the aspect ratio is not kept).
Features are the pixels themselves, so cached reference features are the original references.
"""

from __future__ import annotations

from typing import Any

from ._util import as_images, check_scores, resize
from .align import AlignParams, best_over_candidates
from .base import Metric

RESIZE_POLICY = "ref-to-gen-size-bicubic-aa"


class PixelMetric(Metric):
    min_size = 16

    def __init__(
        self,
        *,
        device: str = "cpu",
        weights_dir: str | None = None,
        align: bool = True,
        align_max_shift: float = 1 / 16,
        align_steps: int = 4,
        align_scales: tuple[float, ...] = (0.94, 0.96, 0.98, 1.0, 1.02, 1.04, 1.06),
        align_topk: int = 4,
    ) -> None:
        self.device = device
        self.align = bool(align)
        self.align_params = AlignParams(align_max_shift, int(align_steps), tuple(align_scales), int(align_topk))

    @property
    def version(self) -> str:
        al = self.align_params.version if self.align else "noalign"
        return f"{self._core_version}/{RESIZE_POLICY}/{al}"

    _core_version = ""
    _rank = "mse"

    def features(self, images: Any) -> Any:
        return as_images(images, self.name, min_size=self.min_size, device=self.device)

    def pairs(self, x: Any, y: Any) -> Any:
        """Exact scores of paired images (P, 3, h, w) x (P, 3, h, w) -> (P,)."""
        raise NotImplementedError

    def compare(self, a: Any, b: Any) -> Any:
        import torch

        a = as_images(a, self.name, min_size=self.min_size, device=self.device)
        b = as_images(b, self.name, min_size=1, device=self.device)
        b = resize(b, tuple(a.shape[-2:]))
        with torch.no_grad():
            if self.align:
                s = best_over_candidates(a, b, self.align_params, self._rank, self.pairs, self.direction)
            else:
                s = self._all_pairs(a, b)
        return check_scores(self.name, s)

    def _all_pairs(self, a: Any, b: Any, chunk_elems: int = 1 << 25) -> Any:
        import torch

        n, m = a.shape[0], b.shape[0]
        ia = torch.arange(n, device=a.device).repeat_interleave(m)
        ib = torch.arange(m, device=a.device).repeat(n)
        per = max(1, chunk_elems // max(1, a[0].numel()))
        out = [self.pairs(a[ia[s : s + per]], b[ib[s : s + per]]) for s in range(0, n * m, per)]
        return torch.cat(out).view(n, m)

"""Tiled L2 (Carlini et al. 2023, "Extracting Training Data from Diffusion Models", USENIX Security).

Both images are split into a 4x4 grid of tiles; each tile's distance is the RMS pixel difference
over [0, 1] (all three channels); the image distance is the *worst* (largest) tile. A generation is
an extracted copy when the distance is <= 0.15.

Resize policy: compared at the generated images' size; references of another size are resized to
it (bicubic, antialias). Alignment (``align=True``, default): the best distance over small shifts and
rescalings of the generated image, see ``metrics.align``.
"""

from __future__ import annotations

from typing import Any

from .align import tile_counts, tile_sums
from .pixel import PixelMetric


class TiledL2(PixelMetric):
    name = "tiled_l2"
    direction = "distance"
    default_threshold = 0.15
    threshold_source = "Carlini et al. 2023, USENIX Security"
    lower_bound = 0.0
    upper_bound = 1.0
    _core_version = "tiled_l2-v1(4x4,max-tile-rms,[0,1])"
    _rank = "tiles"

    def pairs(self, x: Any, y: Any) -> Any:
        import torch

        sq = tile_sums((x - y) ** 2)  # (P, 16)
        counts = torch.tensor(tile_counts(x.shape[-2], x.shape[-1], x.shape[1]), dtype=sq.dtype, device=sq.device)
        return (sq / counts).sqrt().amax(dim=1)


def tile_rms(image: Any, work: Any, grid: int = 4) -> list[list[float]]:
    """The RMS difference of each of the ``grid`` x ``grid`` tiles of ``image`` (3, H, W) against
    ``work`` resized to its size, unaligned: where the two agree (the report's heat map). The
    tiled L2 of the pair (unaligned) is the largest of these."""
    return tile_rms_batch(image[None], work, grid)[0]


def tile_rms_batch(images: Any, work: Any, grid: int = 4) -> list[list[list[float]]]:
    """``tile_rms`` of each of ``images`` (N, 3, H, W) against one work, resized once for all."""
    import torch

    from ._util import resize

    x = images.float()
    y = resize(work.float()[None], (x.shape[-2], x.shape[-1]))
    with torch.no_grad():
        sq = tile_sums((x - y) ** 2, grid)
        counts = torch.tensor(tile_counts(x.shape[-2], x.shape[-1], x.shape[1], grid), dtype=sq.dtype)
        rms = (sq / counts).sqrt().tolist()
    return [[[round(v, 4) for v in one[i * grid:(i + 1) * grid]] for i in range(grid)] for one in rms]

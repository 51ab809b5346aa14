"""PDQ: Meta's 256-bit perceptual hash (ThreatExchange, 2019), written here in numpy.

The published algorithm, step for step as its C++ reference (``pdq/cpp/hashing/pdqhashing.cpp``)
computes it, in float32 and in the same order of operations, so the bits are the reference's bits
(tests/metrics/test_pdq.py checks known-answer hashes made with the C++ reference):

1. luma Y = 0.299 R + 0.587 G + 0.114 B of the 8-bit RGB image;
2. unless the image is 64 x 64: two passes of a Jarosz box filter (running means, window
   ceil(size / 128) along each axis, clipped at the edges), then point-sampled to 64 x 64;
3. quality = the sum of |vertical and horizontal neighbour differences| x 100 / 255, / 90, capped
   at 100 (the reference calls hashes with quality under 50 unreliable);
4. a 16 x 64 DCT-II matrix (rows 1..16: the DC term is skipped) applied on both sides -> 16 x 16;
5. bit k = i * 16 + j is set where coefficient (i, j) exceeds the median (Torben's lower median).

The score is the Hamming distance of two hashes in bits of 256: 0 = the same picture, about 128 for
unrelated pictures. Threshold: 31, the reference's published match distance (ThreatExchange's
``hashing.pdf``: at <= 31 bits PDQ's false-positive rate on its evaluation set was negligible).
Weight-free, robust to re-encoding and resizing, a catalogue prefilter; like pHash, not shift- or
crop-tolerant. Quality is kept with the features: ``quality(features)``.
"""

from __future__ import annotations

import math
from typing import Any

from ._util import as_images, check_scores
from .base import Metric

BITS, SIDE, DCT_SIDE = 256, 64, 16
PASSES = 2  # PDQ_NUM_JAROSZ_XY_PASSES
MIN_DIM = 5  # the reference hashes smaller images as all zeros; we refuse them (as_images min_size)


def _dct_matrix() -> Any:
    import numpy as np

    scale = np.float32(math.sqrt(2.0 / SIDE))  # float in the reference, then float * double -> float
    d = np.empty((DCT_SIDE, SIDE), dtype=np.float32)
    for i in range(DCT_SIDE):
        for j in range(SIDE):
            d[i, j] = np.float32(float(scale) * math.cos((math.pi / 2.0 / SIDE) * (i + 1) * (2 * j + 1)))
    return d


def window(old: int, new: int = SIDE) -> int:
    """computeJaroszFilterWindowSize: ceil(old / (2 new)), in integers."""
    return (old + 2 * new - 1) // (2 * new)


def _box(x: Any, w: int) -> Any:
    """box1DFloat along axis 1 of a float32 (rows, length) array: running sums in the reference's order."""
    import numpy as np

    n = x.shape[1]
    half = (w + 2) // 2
    out = np.empty_like(x)
    s = np.zeros(x.shape[0], dtype=np.float32)
    size, ri, li, oi = 0, 0, 0, 0
    for _ in range(half - 1):
        s = s + x[:, ri]
        size, ri = size + 1, ri + 1
    for _ in range(w - half + 1):
        s = s + x[:, ri]
        size, ri = size + 1, ri + 1
        out[:, oi] = s / np.float32(size)
        oi += 1
    for _ in range(n - w):
        s = s + x[:, ri]
        s = s - x[:, li]
        out[:, oi] = s / np.float32(size)
        li, ri, oi = li + 1, ri + 1, oi + 1
    for _ in range(half - 1):
        s = s - x[:, li]
        size, li = size - 1, li + 1
        out[:, oi] = s / np.float32(size)
        oi += 1
    return out


def downsample(luma: Any) -> Any:
    """(N, rows, cols) float32 luma -> the reference's (N, 64, 64) buffers (each image on its own; the
    running sums are vectorised across images and lines, never across positions)."""
    import numpy as np

    n, rows, cols = luma.shape
    if rows == SIDE and cols == SIDE:
        return luma.copy()
    wr, wc = window(cols), window(rows)  # along rows (width), along columns (height)
    x = luma
    for _ in range(PASSES):
        x = _box(x.reshape(n * rows, cols), wr).reshape(n, rows, cols)
        xt = np.ascontiguousarray(x.transpose(0, 2, 1)).reshape(n * cols, rows)
        x = np.ascontiguousarray(_box(xt, wc).reshape(n, cols, rows).transpose(0, 2, 1))
    ii = [int(((i + 0.5) * rows) / SIDE) for i in range(SIDE)]
    jj = [int(((j + 0.5) * cols) / SIDE) for j in range(SIDE)]
    return np.ascontiguousarray(x[:, ii][:, :, jj])


def quality_of(buf: Any) -> int:
    """pdqImageDomainQualityMetric of a 64 x 64 float32 buffer."""
    import numpy as np

    def part(d: Any) -> int:
        return int(np.abs(np.trunc(d * np.float32(100) / np.float32(255))).astype(np.int64).sum())

    return min(100, (part(buf[:-1, :] - buf[1:, :]) + part(buf[:, :-1] - buf[:, 1:])) // 90)


def _dct(buf: Any, d: Any) -> Any:
    """dct64To16 of (N, 64, 64): T = D A, then B = T D^T, each sum accumulated in float32 over k in order."""
    import numpy as np

    n = buf.shape[0]
    t = np.zeros((n, DCT_SIDE, SIDE), dtype=np.float32)
    for k in range(SIDE):
        t = t + d[None, :, k : k + 1] * buf[:, k : k + 1, :]
    b = np.zeros((n, DCT_SIDE, DCT_SIDE), dtype=np.float32)
    for k in range(SIDE):
        b = b + t[:, :, k : k + 1] * d[None, None, :, k]
    return b


def pdq_hashes(rgb: Any) -> tuple[Any, list[int]]:
    """(N, H, W, 3) uint8 -> ((N, 256) bool bits in the reference's index order, N qualities 0-100)."""
    import numpy as np

    c = rgb.astype(np.float32)
    luma = np.float32(0.299) * c[..., 0] + np.float32(0.587) * c[..., 1]
    luma = luma + np.float32(0.114) * c[..., 2]
    buf = downsample(np.ascontiguousarray(luma, dtype=np.float32))
    coef = _dct(buf, _dct_matrix()).reshape(len(buf), -1)
    median = np.sort(coef, axis=1)[:, (BITS - 1) // 2 : (BITS + 1) // 2]  # Torben's median of 256: the lower middle
    return coef > median, [quality_of(b) for b in buf]


def pdq_hash(rgb: Any) -> tuple[Any, int]:
    """(H, W, 3) uint8 -> (256 bool bits in the reference's index order, quality 0-100)."""
    bits, q = pdq_hashes(rgb[None])
    return bits[0], q[0]


class PDQ(Metric):
    name = "pdq"
    direction = "distance"
    default_threshold = 31.0
    threshold_source = ("ThreatExchange PDQ's published match distance: <= 31 of 256 bits "
                        "(hashing.pdf); measured here: see docs/metrics.md")
    lower_bound = 0.0
    upper_bound = 256.0

    def __init__(self, *, device: str = "cpu", weights_dir: str | None = None) -> None:
        self.device = device

    @property
    def version(self) -> str:
        return "pdq-v1(L601,jarosz2,64px,dct16-skipdc,torben-median)"

    def features(self, images: Any) -> Any:
        """(N, 257) int16: the 256 bits, then the quality (0-100) in the last column."""
        import numpy as np
        import torch

        x = as_images(images, self.name, min_size=MIN_DIM, device="cpu")
        rgb = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        bits, q = pdq_hashes(np.ascontiguousarray(rgb))  # one batch: the images share a size
        return torch.cat([torch.from_numpy(bits.astype(np.int16)), torch.tensor(q, dtype=torch.int16)[:, None]], dim=1)

    def compare(self, a: Any, b: Any) -> Any:
        """(N, M) Hamming distances in bits of 256."""
        return check_scores(self.name, (a[:, None, :BITS] != b[None, :, :BITS]).sum(-1).float())


def quality(features: Any) -> Any:
    """The PDQ quality (0-100) of each hashed image, from ``PDQ.features``."""
    return features[:, BITS]

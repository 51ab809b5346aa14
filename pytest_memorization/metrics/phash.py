"""pHash: a 64-bit perceptual hash (Zauner 2010; the form of the ``imagehash`` package).

Each image is turned into 8-bit grey (Pillow's ITU-R 601-2 luma), resized to 32 x 32 (Lanczos), and
transformed with a 2-D DCT-II; the 8 x 8 lowest frequencies are compared with their median, giving
64 bits. The score is the Hamming distance between two hashes: 0 = the same picture, about 32 for
unrelated pictures. Weight-free, robust to re-encoding, resizing and small colour changes, cheap
enough to prefilter a catalogue. Not shift- or crop-tolerant: a copy moved by a tenth of the image
changes many low frequencies.

Threshold: practitioners call two images the same at about 10 (to 15) bits of 64; we use 10 by
default. Measured in this project: see docs/metrics.md.
"""

from __future__ import annotations

import math
from typing import Any

from ._util import as_images, check_scores
from .base import Metric

HASH = 8
SIDE = HASH * 4


def _dct_matrix(n: int) -> Any:
    import torch

    k = torch.arange(n, dtype=torch.float64)[:, None]
    x = torch.arange(n, dtype=torch.float64)[None, :]
    return 2.0 * torch.cos(math.pi * k * (2 * x + 1) / (2 * n))  # scipy's unnormalised DCT-II


class PHash(Metric):
    name = "phash"
    direction = "distance"
    default_threshold = 10.0
    threshold_source = "practitioners' near-duplicate cut-off, 10-15 of 64 bits (imagehash users)"
    lower_bound = 0.0
    upper_bound = 64.0

    def __init__(self, *, device: str = "cpu", weights_dir: str | None = None) -> None:
        self.device = device

    @property
    def version(self) -> str:
        return f"phash-v1(L601,{SIDE}px-lanczos,dct{HASH}x{HASH},median)"

    def features(self, images: Any) -> Any:
        """(N, 64) bool hashes."""
        import numpy as np
        import torch
        from PIL import Image

        x = as_images(images, self.name, min_size=1, device="cpu")
        d = _dct_matrix(SIDE)
        out = []
        for img in x:
            rgb = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            grey = Image.fromarray(np.ascontiguousarray(rgb), "RGB").convert("L").resize((SIDE, SIDE), Image.LANCZOS)
            p = torch.from_numpy(np.asarray(grey, dtype=np.float64))
            low = (d @ p @ d.T)[:HASH, :HASH]  # DCT along rows and columns
            out.append((low > torch.quantile(low, 0.5)).flatten())  # numpy's median: the mean of the middle two
        return torch.stack(out)

    def compare(self, a: Any, b: Any) -> Any:
        """(N, M) Hamming distances in bits."""
        return check_scores(self.name, (a[:, None, :] != b[None, :, :]).sum(-1).float())

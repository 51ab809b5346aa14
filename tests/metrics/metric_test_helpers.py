"""Helpers shared by the metric tests (a uniquely named module, importable from tests/metrics)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
TINY_CLIP = "tiny-clip-test"  # tests/metrics/tiny-clip-test.json (file stem = model name)
# skimage.data photographs: astronaut (NASA, public domain), coffee and chelsea (CC0), rocket (public
# domain, NASA), camera (skimage licence, BSD), motorcycle (Middlebury stereo, used by skimage).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "motorcycle_left")


def load_photo(name: str, size: int = 64, pad: int = 4):
    """A square centre crop resized to size + 2*pad px (3, S, S) in [0, 1]; callers crop ``size``."""
    import torch
    import torch.nn.functional as F
    from support import photo_array

    t = torch.from_numpy(photo_array(name)).permute(2, 0, 1).float() / 255
    s = min(t.shape[1:])
    top, left = (t.shape[1] - s) // 2, (t.shape[2] - s) // 2
    t = t[:, top : top + s, left : left + s]
    big = size + 2 * pad
    return F.interpolate(t[None], size=(big, big), mode="bicubic", antialias=True).clamp(0, 1)[0]

"""The one place the suite turns scikit-image's bundled photographs into test data.

scikit-image ships real photographs inside its wheel (astronaut: NASA, public domain; chelsea and
coffee: CC0; ...), so tests have real images with no network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def photo_array(name: str) -> Any:
    """``skimage.data.<name>()`` as an (H, W, 3) uint8 array (greyscale repeated, alpha dropped)."""
    import numpy as np
    from skimage import data

    im = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
    if im.ndim == 2:
        im = np.stack([im] * 3, -1)
    return np.ascontiguousarray(im[..., :3])


def save_photo(name: str, path: Path, size: int | tuple[int, int] = 64) -> Path:
    """The photo resized to ``size`` (Pillow's default filter) and saved as ``path`` (PNG by suffix)."""
    from PIL import Image

    wh = (size, size) if isinstance(size, int) else size
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo_array(name)).resize(wh).save(path)
    return path


def photo(name: str, size: int = 64) -> Any:
    """The photo resized to ``size`` x ``size`` as a (3, H, W) float tensor in [0, 1], read the way
    the plugin reads works (``images.to_tensor``)."""
    from PIL import Image

    from pytest_memorization.images import to_tensor

    return to_tensor(Image.fromarray(photo_array(name)).resize((size, size)))

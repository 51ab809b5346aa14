"""pHash: the same 64 bits as the ``imagehash`` package, and a copy near while other photos are far."""

from __future__ import annotations

import pytest
import torch
from support import photo

from pytest_memorization.metrics import get_metric

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")


def test_bits_equal_the_imagehash_package() -> None:
    imagehash = pytest.importorskip("imagehash")
    from PIL import Image

    m = get_metric("phash")
    for name in PHOTOS:
        x = photo(name, 96)
        ours = m.features(x[None])[0].reshape(8, 8).numpy()
        pil = Image.fromarray((x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
        assert (imagehash.phash(pil).hash == ours).all(), name


def test_a_reencoded_rescaled_copy_is_near_and_other_photos_are_far() -> None:
    import io

    from PIL import Image

    from pytest_memorization.images import to_tensor

    m = get_metric("phash")
    works = torch.stack([photo(n, 128) for n in PHOTOS])
    copies = []
    for w in works:  # JPEG quality 60, downscaled to 96 px: what a re-posted copy looks like
        buf = io.BytesIO()
        Image.fromarray((w * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()).resize((96, 96)).save(
            buf, "JPEG", quality=60)
        copies.append(to_tensor(Image.open(buf)))
    d = m.score(torch.stack([torch.nn.functional.interpolate(c[None], size=(128, 128))[0] for c in copies]), works)
    same = d.diagonal()
    other = d[~torch.eye(len(PHOTOS), dtype=torch.bool)]
    assert float(same.max()) <= m.default_threshold, same
    assert float(other.min()) > m.default_threshold, other
    print(f"phash bits: copies max {float(same.max()):.0f}, different photos min {float(other.min()):.0f}")

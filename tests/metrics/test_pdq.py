"""PDQ: the same 256 bits and quality as Meta's C++ reference, and a copy near while other photos are far.

The known answers in ``pdq_reference/hashes.json`` were made with the reference (ThreatExchange's
``pdq/cpp``, from the pdqhash 0.2.8 sdist) by ``pdq_reference/make_hashes.py``, so CI needs no C++ build.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch
from support import photo

from pytest_memorization.metrics import get_metric
from pytest_memorization.metrics.pdq import pdq_hash, quality

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "pdq_reference"))
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")


def _bits_of(hex_hash: str) -> list[bool]:
    """The reference's hex format (16-bit words, the last word first) -> bits k = 0..255."""
    words = [int(hex_hash[i : i + 4], 16) for i in range(0, 64, 4)][::-1]
    return [bool((words[k >> 4] >> (k & 15)) & 1) for k in range(256)]


def test_bits_and_quality_equal_the_cpp_reference() -> None:
    from make_hashes import cases

    table = json.loads((HERE / "pdq_reference" / "hashes.json").read_text())
    inputs = cases()
    assert set(inputs) == set(table)
    for name, rgb in inputs.items():
        bits, q = pdq_hash(rgb)
        assert bits.tolist() == _bits_of(table[name]["hash"]), name
        assert q == table[name]["quality"], name


def _reposted(w: torch.Tensor, size: int, quality: int) -> torch.Tensor:
    """JPEG at ``quality``, downscaled to ``size`` and back: what a re-posted copy looks like."""
    from PIL import Image

    from pytest_memorization.images import to_tensor

    buf = io.BytesIO()
    side = w.shape[-1]
    Image.fromarray((w * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()).resize((size, size)).save(
        buf, "JPEG", quality=quality)
    c = to_tensor(Image.open(buf))
    return torch.nn.functional.interpolate(c[None], size=(side, side), mode="bicubic", antialias=True)[0].clamp(0, 1)


@pytest.mark.parametrize("side", [64, 128])
def test_a_reencoded_rescaled_copy_is_near_and_other_photos_are_far(side: int) -> None:
    m = get_metric("pdq")
    works = torch.stack([photo(n, side) for n in PHOTOS])
    copies = torch.stack([_reposted(w, side * 3 // 4, 60) for w in works])
    d = m.score(copies, works)
    same = d.diagonal()
    other = d[~torch.eye(len(PHOTOS), dtype=torch.bool)]
    assert float(same.max()) <= m.default_threshold, same
    assert float(other.min()) > m.default_threshold, other
    print(f"pdq bits at {side} px: copies max {float(same.max()):.0f}, different photos min {float(other.min()):.0f}"
          f" (threshold {m.default_threshold:g}: margins {m.default_threshold - float(same.max()):.0f} and "
          f"{float(other.min()) - m.default_threshold:.0f})")


def test_scores_are_a_matrix_with_zero_on_the_same_image_and_quality_is_kept() -> None:
    m = get_metric("pdq")
    x = torch.stack([photo(n, 64) for n in PHOTOS[:3]])
    f = m.features(x)
    d = m.compare(f, f)
    assert d.shape == (3, 3) and d.diagonal().tolist() == [0.0, 0.0, 0.0]
    assert ((d >= 0) & (d <= 256)).all()
    one_by_one = [pdq_hash((x[i] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()) for i in range(3)]
    assert quality(f).tolist() == [q for _, q in one_by_one]  # a batch hashes each image on its own
    assert f[:, :256].bool().tolist() == [bits.tolist() for bits, _ in one_by_one]
    flat = torch.full((1, 3, 64, 64), 0.5)
    assert int(quality(m.features(flat))[0]) == 0  # a flat image has no usable hash: quality 0

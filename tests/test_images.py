"""images.py: every colour mode, EXIF orientation, corrupt files, hashing, the resize policy, from_any."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_memorization.errors import MemorizationConfigError
from pytest_memorization.images import ImageError, check_image, fit_to, from_any, load_image, sha256_file


def _save(img: Image.Image, path: Path, **kw: object) -> Path:
    img.save(path, **kw)
    return path


def test_rgb_png_exact(tmp_path: Path) -> None:
    a = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = load_image(_save(Image.fromarray(a), tmp_path / "x.png"))
    assert t.shape == (3, 5, 7) and t.dtype == torch.float32
    assert torch.equal(t, torch.from_numpy(a).permute(2, 0, 1).float() / 255)


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    a = np.zeros((2, 2, 4), dtype=np.uint8)
    a[0, 0] = (255, 0, 0, 255)  # opaque red
    a[0, 1] = (255, 0, 0, 0)  # fully transparent red -> white
    a[1, 0] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    a[1, 1] = (0, 0, 255, 255)
    t = load_image(_save(Image.fromarray(a, "RGBA"), tmp_path / "x.png"))
    assert t.shape == (3, 2, 2)
    assert torch.allclose(t[:, 0, 0], torch.tensor([1.0, 0, 0]))
    assert torch.allclose(t[:, 0, 1], torch.ones(3))
    assert torch.allclose(t[:, 1, 0], torch.full((3,), 1 - 128 / 255), atol=1e-6)
    assert torch.allclose(t[:, 1, 1], torch.tensor([0, 0, 1.0]))


def test_la_gray_alpha(tmp_path: Path) -> None:
    a = np.array([[[0, 255], [0, 0]], [[100, 255], [200, 51]]], dtype=np.uint8)
    t = load_image(_save(Image.fromarray(a, "LA"), tmp_path / "x.png"))
    assert t.shape == (3, 2, 2)
    assert torch.allclose(t[:, 0, 0], torch.zeros(3)) and torch.allclose(t[:, 0, 1], torch.ones(3))
    assert torch.allclose(t[:, 1, 0], torch.full((3,), 100 / 255))
    a11 = 51 / 255
    assert torch.allclose(t[:, 1, 1], torch.full((3,), 200 / 255 * a11 + 1 - a11), atol=1e-6)


def test_palette_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 0] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2])
    path = _save(img, tmp_path / "p.png", transparency=2)  # index 2 (black) is transparent
    assert Image.open(path).mode == "P"
    t = load_image(path)
    assert torch.allclose(t[:, 0, 0], torch.tensor([1.0, 0, 0]))
    assert torch.allclose(t[:, 0, 1], torch.tensor([0, 1.0, 0]))
    assert torch.allclose(t[:, 0, 2], torch.ones(3)), "transparent index must become white, not black"


def test_sixteen_bit_png_keeps_scale(tmp_path: Path) -> None:
    a = np.array([[0, 255, 256], [1000, 32768, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(a), tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I")
    t = load_image(path)
    assert t.shape == (3, 2, 3)
    expected = torch.from_numpy(a.astype(np.float64) / 65535).float()
    assert torch.allclose(t[0], expected, atol=1e-6) and torch.equal(t[0], t[2])
    assert t.max() == 1.0 and 0 < t[0, 0, 1] < 0.01, "255 in a 16-bit file is dark, not clipped white"


def test_cmyk_jpeg(tmp_path: Path) -> None:
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    path = _save(img, tmp_path / "c.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    t = load_image(path)
    assert t.shape == (3, 16, 16)
    r, g, b = t.mean(dim=(1, 2)).tolist()
    assert r > 0.9 and g < 0.1 and b < 0.1


def test_webp_and_grayscale(tmp_path: Path) -> None:
    a = np.full((8, 8, 3), (10, 200, 30), dtype=np.uint8)
    t = load_image(_save(Image.fromarray(a), tmp_path / "w.webp", lossless=True))
    assert torch.allclose(t[:, 3, 3], torch.tensor([10, 200, 30]) / 255.0, atol=1e-6)
    g = load_image(_save(Image.new("L", (4, 3), 77), tmp_path / "g.png"))
    assert g.shape == (3, 3, 4) and torch.allclose(g, torch.full_like(g, 77 / 255))
    b = load_image(_save(Image.new("1", (4, 3), 1), tmp_path / "b.png"))
    assert torch.equal(b, torch.ones_like(b))


def test_exif_orientation_applied(tmp_path: Path) -> None:
    a = np.zeros((10, 20, 3), dtype=np.uint8)
    a[:, :10] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = _save(Image.fromarray(a), tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    assert Image.open(path).size == (20, 10)
    t = load_image(path)
    assert t.shape == (3, 20, 10), "orientation 6 swaps width and height"
    assert t[:, :10].mean() > 0.9 and t[:, 10:].mean() < 0.1  # the white half is now on top


@pytest.mark.parametrize("kind", ["truncated", "text", "empty", "missing", "folder"])
def test_unreadable_images_name_the_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.png"
    if kind == "truncated":
        buf = tmp_path / "full.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf)
        data = buf.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("this is not a picture\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    with pytest.raises(ImageError) as e:
        load_image(path)
    assert isinstance(e.value, MemorizationConfigError)
    assert str(path) in str(e.value)
    with pytest.raises(ImageError):
        check_image(path)


def test_check_image_returns_size(tmp_path: Path) -> None:
    assert check_image(_save(Image.new("RGB", (7, 5)), tmp_path / "x.png")) == (5, 7)


def test_sha256_file_streams(tmp_path: Path) -> None:
    data = np.random.default_rng(1).bytes(3 * 1024 * 1024 + 17)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_fit_to_cover_then_center_crop() -> None:
    # a wide image 20x40 with a distinct centre band; fit to 16x16 -> scale 0.8 -> 16x32 -> crop cols 8..24
    img = torch.zeros(3, 20, 40)
    img[:, :, 10:30] = 1.0
    out = fit_to(img, 16, 16)
    assert out.shape == (3, 16, 16)
    assert out.min() >= 0 and out.max() <= 1
    assert out[:, :, 4:12].mean() > 0.99  # the centre band fills the middle of the crop
    tall = fit_to(torch.rand(3, 50, 10), 8, 8)
    assert tall.shape == (3, 8, 8)
    up = fit_to(torch.rand(2, 3, 4, 6), 12, 12)  # upscale, batch kept
    assert up.shape == (2, 3, 12, 12) and up.min() >= 0 and up.max() <= 1
    same = torch.rand(3, 8, 8)
    assert torch.equal(fit_to(same, 8, 8), same)


def test_fit_to_antialias_averages_fine_detail() -> None:
    stripes = torch.zeros(3, 64, 64)
    stripes[:, :, ::2] = 1.0  # 1-px stripes alias badly without antialiasing
    out = fit_to(stripes, 8, 8)
    assert torch.allclose(out, torch.full_like(out, 0.5), atol=0.05)


def test_from_any_accepts_every_form(tmp_path: Path) -> None:
    a = np.random.default_rng(2).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    ref = torch.from_numpy(a).permute(2, 0, 1).float() / 255
    path = _save(Image.fromarray(a), tmp_path / "a.png")
    forms = [str(path), path, Image.open(path), a, a.astype(np.float32) / 255, ref, ref.permute(1, 2, 0),
             ref.unsqueeze(0), torch.from_numpy(a).permute(2, 0, 1).contiguous(), ref.half()]
    for x in forms:
        t = from_any(x)
        assert t.shape == (3, 6, 5) and t.dtype == torch.float32, type(x)
        assert torch.allclose(t, ref, atol=2e-3), type(x)
    gray = from_any(np.full((4, 4), 65535, dtype=np.uint16))
    assert gray.shape == (3, 4, 4) and torch.equal(gray, torch.ones_like(gray))
    rgba = from_any(np.zeros((2, 2, 4), dtype=np.uint8))  # transparent -> white
    assert torch.equal(rgba, torch.ones_like(rgba))


@pytest.mark.parametrize("bad", [
    42, np.zeros((2, 2, 3), dtype=np.int64), np.full((2, 2, 3), 255.0), torch.full((3, 2, 2), float("nan")),
    torch.zeros(2, 3, 4, 4), np.zeros((5, 5, 7)), np.zeros((2, 2, 2, 2, 2)),
])
def test_from_any_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ImageError):
        from_any(bad)


def test_from_any_wraps_a_corrupt_lazy_pil_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    full = _save(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), tmp_path / "f.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:300])
    with pytest.raises(ImageError, match="cannot read PIL image"):
        from_any(Image.open(cut))  # opening is lazy: the error comes at decode time

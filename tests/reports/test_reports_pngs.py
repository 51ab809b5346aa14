from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_memorization.reports import (
    THUMBNAIL_PX,
    ReportError,
    generated_png_path,
    save_image,
    write_report,
    write_work_images,
)

from ._factory import make_results


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_save_image_round_trip(tmp_path, works):
    img = works["astronaut"]
    p = save_image(img, tmp_path / "sub" / "a.png")
    back = torch.from_numpy(_pixels(p).copy()).permute(2, 0, 1).float() / 255
    assert back.shape == img.shape
    assert (back - img).abs().max() <= 0.5 / 255 + 1e-6
    for dtype in (torch.float16, torch.bfloat16):  # what a half-precision pipeline hands over
        low = _pixels(save_image(img.to(dtype)[None], tmp_path / f"{dtype}.png")).astype(int)
        assert np.abs(low - _pixels(p).astype(int)).max() <= 2
    with pytest.raises(ReportError, match=r"expected an image tensor \(3, H, W\), got shape \(4, 8, 8\)"):
        save_image(torch.zeros(4, 8, 8), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    assert not list((tmp_path / "sub").glob(".*"))


def test_generated_png_path_is_safe_unique_and_stable(tmp_path):
    ids = ["tests/t.py::test_a[a/b]", "tests/t.py::test_a[a:b]", "tests/u.py::test_a[a/b]",
           "tests/t.py::TestX::test_a[" + "x" * 300 + "]", 'tests/t.py::test_q[<>|"?*\\ ]']
    paths = [generated_png_path(tmp_path, i, 0) for i in ids]
    assert len(set(paths)) == len(ids)
    for p in paths:
        assert re.fullmatch(r"images/[A-Za-z0-9._-]+\.png", p), p
        assert len(Path(p).name) < 100
    assert generated_png_path(tmp_path, ids[0], 0) == paths[0]
    assert generated_png_path(tmp_path, ids[0], 1) != paths[0]
    tagged = generated_png_path(tmp_path, ids[0], 0, tag="base")
    assert tagged != paths[0] and tagged.endswith("-base.png")
    assert (tmp_path / "images").is_dir()


def test_work_modes(tmp_path, works):
    embed = write_work_images(tmp_path / "e", works, "embed")
    thumb = write_work_images(tmp_path / "t", works, "thumbnail")
    omit = write_work_images(tmp_path / "o", works, "omit")
    assert omit == dict.fromkeys(works)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*"))
    for wid, img in works.items():
        full = _pixels(tmp_path / "e" / embed[wid])
        assert full.shape == (64, 64, 3)
        assert np.abs(full.astype(float) / 255 - img.permute(1, 2, 0).numpy()).max() < 1 / 255
        small = tmp_path / "t" / thumb[wid]
        with Image.open(small) as im:
            assert max(im.size) == THUMBNAIL_PX == 48
        assert small.stat().st_size < (tmp_path / "e" / embed[wid]).stat().st_size
        assert small.stat().st_size < 8_000
    wide = {"wide": torch.rand(3, 30, 200)}
    rel = write_work_images(tmp_path / "w", wide, "thumbnail")["wide"]
    with Image.open(tmp_path / "w" / rel) as im:
        assert im.size == (48, 7)
    # the option is validated where it is read (config); here an unknown mode writes no work pixels
    assert set(write_work_images(tmp_path / "full", works, "full").values()) == {None}
    assert not list((tmp_path / "full").rglob("*.png"))


def test_omit_leaks_no_work_pixels(tmp_path, works):
    d = tmp_path / "r"
    # an earlier run in embed mode left full-size works in the same folder
    run, results = make_results(d, works, "embed")
    write_report(d, run, results)
    assert len(list((d / "works").glob("*.png"))) == 3
    run, results = make_results(d, works, "omit")
    write_report(d, run, results)
    assert not list((d / "works").glob("*")), "omit mode must leave no work file behind"
    html = (d / "index.html").read_text()
    assert "base64" not in html and "data:" not in html
    assert "not included (report-works=omit)" in html
    work_arrays = [(np.asarray(w.permute(1, 2, 0).numpy()) * 255).round() for w in works.values()]
    for f in d.rglob("*"):
        if f.is_file():
            assert f.suffix in (".png", ".json", ".html"), f
        if f.suffix == ".png":
            px = _pixels(f).astype(float)
            assert all(np.abs(px - w).mean() > 2 for w in work_arrays), f"{f} is a protected work"


def test_thumbnail_report_shows_only_thumbnails(tmp_path, works):
    d = tmp_path / "r"
    run, results = make_results(d, works, "thumbnail")
    write_report(d, run, results)
    files = list((d / "works").glob("*.png"))
    assert len(files) == 3
    for f in files:
        with Image.open(f) as im:
            assert max(im.size) <= THUMBNAIL_PX
    html = (d / "index.html").read_text()
    assert "base64" not in html and "data:" not in html
    assert 'class="thumb"' in html

"""Image-to-image canaries: start from the work itself; a copy at or above min_safe_strength fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture
def i2i_project(pytester: pytest.Pytester, demo_models: dict[str, Path]) -> pytest.Pytester:
    """The trained clean twin: its VAE reconstructs 64 px photos (a random tiny VAE cannot, so no
    img2img output of it could ever resemble the work it started from)."""
    root = Path(__file__).resolve().parent.parent
    shutil.copytree(demo_models["clean_twin"], pytester.path / "models" / "twin")
    (pytester.path / "works").mkdir()
    for name in ("chelsea", "coffee"):
        shutil.copy(root / "fixtures" / "works" / f"{name}.png", pytester.path / "works" / f"{name}.png")
    (pytester.path / "tox.ini").write_text(f"[pytest]\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    (pytester.path / "memorization.toml").write_text("""
[model]
pretrained = "models/twin"
seeds = [0, 1]
steps = 10
guidance_scale = 1.5
height = 64
width = 64

[[work]]
id = "chelsea"
image = "works/chelsea.png"
prompts = ["a photo of a tabby cat"]
img2img = { strengths = [0.1], min_safe_strength = 0.05 }

[[work]]
id = "coffee"
image = "works/coffee.png"
prompts = ["a cup of coffee"]
img2img = { strengths = [0.1, 1.0], min_safe_strength = 0.9 }
""")
    return pytester


def test_img2img_fails_only_at_or_above_the_safe_strength(i2i_project: pytest.Pytester) -> None:
    result = i2i_project.runpytest("--memorization", "--memorization-report", "rep", "-k", "img2img")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*img2img from 'chelsea' at strength 0.1 (>= min_safe_strength 0.05) still yields a copy*"])
    report = json.loads((i2i_project.path / "rep" / "report.json").read_text())
    rows = [r for r in report["results"] if r["item"].endswith("coffee[img2img]")]
    assert sorted((r["extra"]["img2img"]["strength"], r["seed"]) for r in rows) == [(0.1, 0), (0.1, 1), (1.0, 0), (1.0, 1)]
    low = [r for r in rows if r["extra"]["img2img"]["strength"] == 0.1]
    assert all(r["verdict"] == "warn" and "below min_safe_strength" in " ".join(r["reasons"]) for r in low)
    curve = rows[0]["extra"]["img2img_curve"]
    assert [c["strength"] for c in curve] == [0.1, 1.0]
    assert curve[0]["tiled_l2"] < 0.15 < curve[1]["tiled_l2"], "similarity must fall as strength rises"
    assert len({r["image"] for r in rows}) == 4 and all((i2i_project.path / "rep" / r["image"]).is_file() for r in rows)


def test_report_works_omit_publishes_no_img2img_output(i2i_project: pytest.Pytester) -> None:
    """img2img outputs start from the work (at low strength they are reconstructions of it)."""
    result = i2i_project.runpytest("--memorization", "--memorization-report", "rep", "-k", "img2img",
                                   "--memorization-report-works", "omit")
    result.assert_outcomes(failed=1, passed=1)
    report = json.loads((i2i_project.path / "rep" / "report.json").read_text())
    assert report["results"] and all(r["image"] is None and r["work_image"] is None for r in report["results"])
    assert all("report-works=omit" in r["extra"]["image_omitted"] for r in report["results"])
    assert not list((i2i_project.path / "rep").rglob("*.png"))

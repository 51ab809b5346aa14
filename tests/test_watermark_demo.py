"""A protected mark on a really trained model, under the default metrics (same project as `make demo`):
the watermark model (the clean twin fine-tuned on scenes that all carry a stock agency's mark in the
bottom-right corner, demo/watermark.py) draws the mark into the scenes it makes. The manifest declares
the work ``kind = "mark"``; local_copy (a default metric) searches it at small sizes, fails each item
and boxes the corner; the clean twin, asked for the same scenes, passes. Plus the manifest key's
validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def watermark_model(demo_models: dict[str, Path]) -> Path:
    """The watermark model, built once and cached by its own stamp."""
    from demo.watermark import build_watermark

    return build_watermark(ROOT / "fixtures" / "models", demo_models["clean_twin"])


def test_the_watermark_model_fails_in_the_corner_and_its_clean_twin_passes(
    pytester: pytest.Pytester, demo_models: dict[str, Path], watermark_model: Path
) -> None:
    from demo.watermark import mark_image
    from pytest_memorization.images import load_image, to_tensor

    for name in ("watermark", "watermark_twin", "works"):
        shutil.copytree(ROOT / "examples" / name, pytester.path / name)
    shutil.copytree(watermark_model, pytester.path / "models" / "watermark")
    shutil.copytree(demo_models["clean_twin"], pytester.path / "models" / "clean_twin")
    pytester.makeini(f"[pytest]\nmemorization_device = cpu\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    stored = load_image(pytester.path / "works" / "watermark.png")
    assert float((stored - to_tensor(mark_image())).abs().max()) == 0, "examples/works/watermark.png is write_watermark()'s"

    result = pytester.runpytest("--memorization", "--memorization-report", "rep")
    result.assert_outcomes(failed=4, passed=4)
    rows = json.loads((pytester.path / "rep" / "report.json").read_text())["results"]
    assert len(rows) == 32
    from pytest_memorization.metrics.local_copy import LocalCopy

    t = LocalCopy.default_threshold
    assert {r["thresholds"]["local_copy"] for r in rows} == {t}, "the default threshold, not one set for the demo"
    caught = 0
    for row in rows:
        s = row["scores"]
        assert s["tiled_l2"] > 0.15, ("tiled L2 cannot see a corner mark", row["item"], s)
        if row["item"].startswith("watermark_twin/"):
            assert row["verdict"] in ("pass", "warn") and s["local_copy"] < t, (row["item"], row["seed"], s)
            continue
        if row["verdict"] == "fail":
            caught += 1
            assert "local_copy" in [f["metric"] for f in row["findings"] if f["severity"] == "fail"]
            x0, y0, x1, y1 = row["extra"]["local_copy"]["box"]
            assert x0 >= 0.5 and y0 >= 0.6, ("the box is on the bottom-right corner, where the mark was trained",
                                              row["extra"]["local_copy"])
    assert caught >= 8, f"the mark is found on most seeds, not by luck on one: {caught} of 16"


def test_a_bad_kind_is_an_error_naming_the_key(tmp_path: Path) -> None:
    from pytest_memorization.errors import ManifestError
    from pytest_memorization.manifest.load import load_manifest

    shutil.copy(ROOT / "examples" / "works" / "watermark.png", tmp_path / "m.png")
    (tmp_path / "x").mkdir()
    (tmp_path / "memorization.toml").write_text(
        '[model]\npretrained = "x"\n[[work]]\nid = "m"\nkind = "logo"\nimage = "m.png"\nprompts = ["a"]\n')
    with pytest.raises(ManifestError, match=r"work\[0\]\.kind.*'work', 'mark'.*kind = \"mark\""):
        load_manifest(tmp_path / "memorization.toml")

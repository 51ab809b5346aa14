"""A protected mark on a really trained model, under the default metrics (same projects as `make demo`):
the watermark model (the clean twin fine-tuned on scenes that all carry a stock agency's mark in the
bottom right corner, demo/watermark.py) draws the mark into the scenes it generates. The mark is
declared ``kind = "mark"``; ``local_copy`` (a default metric) finds it, and the box lands in the corner
where the model put it. The clean twin, asked for the same scenes, passes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_memorization.metrics import KNOWN_DEFAULTS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def watermark_model(demo_models: dict[str, Path]) -> Path:
    """The watermark model, built once (a few CPU minutes) and cached by its own stamp."""
    from demo.watermark import build_watermark

    return build_watermark(ROOT / "fixtures" / "models", demo_models["clean_twin"])


def test_the_watermark_model_fails_with_the_box_in_its_corner_and_its_clean_twin_passes(
    pytester: pytest.Pytester, demo_models: dict[str, Path], watermark_model: Path
) -> None:
    from demo.watermark import placement, watermark_image
    from pytest_memorization.images import load_image, to_tensor

    for name in ("watermark", "watermark_twin", "works"):
        shutil.copytree(ROOT / "examples" / name, pytester.path / name)
    shutil.copytree(watermark_model, pytester.path / "models" / "watermark")
    shutil.copytree(demo_models["clean_twin"], pytester.path / "models" / "clean_twin")
    pytester.makeini(f"[pytest]\nmemorization_device = cpu\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    stored = load_image(pytester.path / "works" / "watermark.png")
    assert float((stored - to_tensor(watermark_image())).abs().max()) == 0, "examples/works/watermark.png is write_watermark()'s"
    import tomllib

    for project in ("watermark", "watermark_twin"):
        manifest = tomllib.loads((pytester.path / project / "memorization.toml").read_text())
        assert "metrics" not in manifest and manifest["work"][0]["kind"] == "mark", "the default metrics, a mark"

    result = pytester.runpytest("--memorization", "--memorization-report", "rep")
    result.assert_outcomes(failed=4, passed=4)
    rows = json.loads((pytester.path / "rep" / "report.json").read_text())["results"]
    assert len(rows) == 32
    t = KNOWN_DEFAULTS["local_copy"]
    x, y, w, h = placement()
    corner = (x / 64, y / 64, (x + w) / 64, (y + h) / 64)
    margins = {"mark": [], "twin": []}
    for row in rows:
        s = row["scores"]
        assert s["tiled_l2"] > 0.15, ("the whole-image metric misses it", row["item"], s)
        if row["item"].startswith("watermark_twin/"):
            assert row["verdict"] == "pass", (row["item"], row["seed"], s, row["findings"])
            margins["twin"].append(t - s["local_copy"])
        elif row["verdict"] == "fail":
            assert "local_copy" in [f["metric"] for f in row["findings"] if f["severity"] == "fail"]
            margins["mark"].append(s["local_copy"] - t)
            x0, y0, x1, y1 = row["extra"]["local_copy"]["box"]
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2  # the box's centre lies on the mark's corner place
            assert corner[0] <= cx <= corner[2] and corner[1] <= cy <= corner[3], (row["item"], row["seed"], (x0, y0, x1, y1), corner)
    assert len(margins["mark"]) >= 8, f"the mark is found on most seeds, not by luck on one: {len(margins['mark'])} of 16"
    print(f"watermark: {len(margins['mark'])}/16 seeds over {t} by >= {min(margins['mark']):.3f}; "
          f"clean twin under it by >= {min(margins['twin']):.3f}")

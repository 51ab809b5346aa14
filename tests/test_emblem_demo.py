"""Local memorization on a really trained model, under the default metrics (same project as
`make demo`): the emblem model (the clean twin fine-tuned on scenes with a protected emblem pasted
into them, demo/emblem.py) pastes the emblem, at 40-60% of the side, into the scenes it draws.
Tiled L2 misses every image (the scene differs); local_copy fails each item and its box lands
where the model put the emblem; the clean twin, asked for the same scenes, passes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from pytest_memorization.metrics import KNOWN_DEFAULTS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def emblem_model(demo_models: dict[str, Path]) -> Path:
    """The emblem model, built once (about 2-3 CPU minutes) and cached by its own stamp."""
    from demo.emblem import build_emblem

    return build_emblem(ROOT / "fixtures" / "models", demo_models["clean_twin"])


def _centroid(image, rgb: tuple[int, int, int]):
    """(x, y) in fractions of the image of the pixels within 60/255 of colour ``rgb`` (None if < 4)."""
    import torch

    target = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1) / 255
    ys, xs = torch.nonzero((image - target).abs().amax(dim=0) < 60 / 255, as_tuple=True)
    if len(xs) < 4:
        return None
    return (float(xs.float().mean()) + 0.5) / image.shape[-1], (float(ys.float().mean()) + 0.5) / image.shape[-2]


def _inside(point, box) -> bool:
    return point is not None and box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def test_the_emblem_model_fails_with_a_drawn_box_and_its_clean_twin_passes(
    pytester: pytest.Pytester, demo_models: dict[str, Path], emblem_model: Path
) -> None:
    from demo.emblem import emblem_image
    from pytest_memorization.images import load_image, to_tensor

    for name in ("emblem", "emblem_twin", "works"):
        shutil.copytree(ROOT / "examples" / name, pytester.path / name)
    shutil.copytree(emblem_model, pytester.path / "models" / "emblem")
    shutil.copytree(demo_models["clean_twin"], pytester.path / "models" / "clean_twin")
    pytester.makeini(f"[pytest]\nmemorization_device = cpu\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    stored = load_image(pytester.path / "works" / "emblem.png")
    assert float((stored - to_tensor(emblem_image())).abs().max()) == 0, "examples/works/emblem.png is write_emblem()'s"

    result = pytester.runpytest("--memorization", "--memorization-report", "rep")
    result.assert_outcomes(failed=4, passed=4)
    report = json.loads((pytester.path / "rep" / "report.json").read_text())
    rows = report["results"]
    assert len(rows) == 32
    t = KNOWN_DEFAULTS["local_copy"]
    assert {r["thresholds"]["local_copy"] for r in rows} == {t}, "the default threshold, not one set for the demo"
    by_item: dict[str, list[dict]] = {}
    for row in rows:
        by_item.setdefault(row["item"], []).append(row)
        s = row["scores"]
        assert s["tiled_l2"] > 0.15 and s["ssim"] < 0.5, ("the whole-image metrics miss it", row["item"], s)
        if row["item"].startswith("emblem_twin/"):
            assert row["verdict"] == "pass" and s["local_copy"] < t, (row["item"], row["seed"], s)
        elif row["verdict"] == "fail":
            assert [f["metric"] for f in row["findings"] if f["severity"] == "fail"] == ["local_copy"]
            found = row["extra"]["local_copy"]
            assert found["score"] == pytest.approx(s["local_copy"], abs=1e-3) and found["score"] >= t
            # The right place, checked independently of the metric: the emblem's red quarter sits in the
            # box's top-left quarter and its blue quarter in the bottom-right (the scenes are nearly grey).
            x0, y0, x1, y1 = found["box"]
            xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
            image = load_image(pytester.path / "rep" / row["image"])
            assert _inside(_centroid(image, (210, 30, 40)), (x0, y0, xm, ym)), (row["item"], row["seed"], found)
            assert _inside(_centroid(image, (30, 70, 190)), (xm, ym, x1, y1)), (row["item"], row["seed"], found)
    for item, seeds in by_item.items():
        verdicts = {r["verdict"] for r in seeds}
        assert verdicts == {"pass"} if item.startswith("emblem_twin/") else "fail" in verdicts, (item, verdicts)
    caught = sum(r["verdict"] == "fail" for r in rows if r["item"].startswith("emblem/"))
    assert caught >= 8, f"the emblem is found on most seeds, not by luck on one: {caught} of 16"

    html = (pytester.path / "rep" / "index.html").read_text()
    cards = re.findall(r'<section[^>]*data-verdict="(\w+)"[^>]*>((?:(?!</section>).)*)</section>', html, re.S)
    for verdict, card in cards:
        red = re.search(r'<svg class="heat box".*?stroke="#e5262b"', card, re.S)
        assert bool(red) == (verdict == "fail"), "a red box over every failing card, none over a passing one"

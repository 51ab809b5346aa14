"""Partial copies under the default gate: a protected work pasted into a larger scene fails, the
scene alone (or with another image pasted in) passes, and SSIM does not call a copy on its own.

Through the public ``evaluate`` (the judge every path uses) with no ``metrics`` argument: the gate a
user gets by default. The images are a slice of ``bench/partial_scenes.py``'s proof set (scenes that
no threshold was chosen on); the bench runs the whole set and prints the table in the docs.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import partial_scenes as ps  # noqa: E402

from pytest_memorization import evaluate  # noqa: E402
from pytest_memorization.config.settings import DEFAULT_METRICS  # noqa: E402
from pytest_memorization.metrics import get_metric  # noqa: E402


@pytest.fixture(scope="module")
def works():
    return ps.works()


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_local_copy_is_a_default_metric_and_the_sets_are_disjoint():
    assert "local_copy" in DEFAULT_METRICS
    cal, proof = ps.CALIBRATION, ps.PROOF
    assert not set(cal["scenes"]) & set(proof["scenes"]) and not set(cal["pasted"]) & set(proof["pasted"])
    named = {s for s in (*cal["scenes"], *proof["scenes"], *cal["pasted"], *proof["pasted"]) if not s.startswith("~")}
    assert not named & {*ps.WORKS, "cat", "lfw:0"}, "no protected work is a scene or a pasted distractor (cat is chelsea)"
    assert len(proof["scenes"]) >= 10


@pytest.mark.parametrize("scene", ["brick", "hubble_deep_field", "~clouds:2"])
def test_a_pasted_work_fails_the_default_gate_where_it_is_and_the_scene_alone_passes(works, scene):
    import torch

    rng = random.Random(scene)
    bg = ps.scene(scene)
    cases = []
    for i, (w, variant) in enumerate([("astronaut", "jpeg"), ("coffee", "tint"), ("emblem", "mirror"),
                                      ("face", "tint+jpeg")]):
        x = works[w].flip(-1) if variant == "mirror" else works[w]
        img, box = ps.paste(bg, x, 0.3 + 0.1 * i, rng)
        cases.append((w, box, ps.variant(img, variant, rng)))
    images = torch.stack([c[2] for c in cases] + [bg, ps.jpeg(bg, 60), ps.paste(bg, ps.photo("lfw:57"), 0.45, rng)[0]])
    rows = evaluate(images, works)
    by_seed: dict[int, list] = {}
    for r in rows:
        by_seed.setdefault(r.seed, []).append(r)
    m = get_metric("local_copy")
    for i, (w, box, img) in enumerate(cases):
        row = next(r for r in by_seed[i] if r.work == w)
        assert row.verdict == "fail" and "local_copy" in {f.metric for f in row.findings if f.severity == "fail"}, (
            scene, w, row.scores, row.reasons)
        assert row.scores["tiled_l2"] > 0.15, "tiled L2 alone would not have seen it"
        found = m.locate(img, works[w])
        assert found["score"] == pytest.approx(row.scores["local_copy"], abs=2e-3)
        assert iou(found["box"], box) > 0.5, (scene, w, found, box)
    for i in range(len(cases), len(images)):
        assert all(r.verdict != "fail" for r in by_seed[i]), [(r.work, r.scores, r.reasons) for r in by_seed[i]]


def test_a_generic_work_has_a_high_null_level_and_a_round_cell_is_not_the_retina(works):
    """The retina photo is a bright disc on black: its raw luma NCC with a microscope photo of a round
    cell is over 0.85. Measured from its null level, the cell is far under the threshold, and a retina
    pasted into the same scene scores above it. (A generic work is the hardest to find: the retina is
    the work the proof bench misses most, docs/partial-copies.md.)"""
    import torch

    from pytest_memorization.images import fit_inside
    from pytest_memorization.metrics.local_copy import match

    m = get_metric("local_copy")
    retina, astronaut = (fit_inside(works[w], ps.SIZE, ps.SIZE) for w in ("retina", "astronaut"))
    null = m.null_levels([retina, astronaut], ps.SIZE, ps.SIZE)
    assert float(null[0]) > 0.85 > 0.65 > float(null[1]), null
    cell = ps.photo("cell")
    raw, _ = match(cell[None], retina[None])
    assert float(raw) > 0.85, "the false match is real"
    copy, _ = ps.paste(cell, works["retina"], 0.45, random.Random(0))
    s = m.compare(torch.stack([cell, copy]), [retina])
    assert float(s[0, 0]) < m.default_threshold / 2 and float(s[1, 0]) > float(s[0, 0]) + 0.1, s


def test_ssim_alone_does_not_fail_a_low_structure_scene(works):
    """A sky-like scene against the rocket (dark, flat sky): SSIM crosses its threshold on brightness,
    tiled L2 and local_copy do not agree, so the row warns (``ssim.unconfirmed``) and does not fail."""
    import torch

    sky = ps.synthetic("sky", 7)
    dark = (sky * 0.35).clamp(0, 1)  # a night sky: as dark as the rocket's
    rows = evaluate(torch.stack([dark]), {"rocket": works["rocket"]})
    r = rows[0]
    assert r.scores["ssim"] >= 0.5, ("the case must cross SSIM on its own", r.scores)
    assert r.scores["tiled_l2"] > 0.15 and r.scores["local_copy"] < get_metric("local_copy").default_threshold, r.scores
    assert r.verdict == "warn", (r.scores, r.reasons)
    assert {f.rule for f in r.findings} <= {"ssim.unconfirmed", "flat_guard"}


def test_a_mark_is_searched_small(works):
    """A watermark at 17% of the side is below a work's smallest search size (20%) and above a mark's (15%)."""
    import torch

    from demo.watermark import watermark_image
    from pytest_memorization.images import to_tensor

    mark = to_tensor(watermark_image())
    bg = ps.scene("gravel")
    img, box = ps.paste(bg, mark, 0.17, random.Random(5))
    m = get_metric("local_copy")
    as_work = m.compare(torch.stack([img, bg]), [mark], kinds=["work"])
    as_mark = m.compare(torch.stack([img, bg]), [mark], kinds=["mark"])
    assert float(as_mark[0, 0]) >= m.default_threshold > float(as_mark[1, 0]), as_mark
    assert float(as_work[0, 0]) < float(as_mark[0, 0]), (as_work, as_mark)
    found = m.locate(img, mark, kind="mark")
    assert iou(found["box"], box) > 0.5, (found, box)


def test_kind_is_read_and_checked(tmp_path):
    from pytest_memorization.errors import MemorizationConfigError
    from pytest_memorization.manifest.load import load_manifest

    (tmp_path / "mark.png").write_bytes((ROOT / "examples" / "works" / "watermark.png").read_bytes())
    body = '[model]\npretrained = "m"\n\n[[work]]\nid = "m"\nimage = "mark.png"\nprompts = ["p"]\nkind = {}\n'
    (tmp_path / "memorization.toml").write_text(body.format('"mark"'))
    assert load_manifest(tmp_path / "memorization.toml", check_images=False).works[0].kind == "mark"
    (tmp_path / "memorization.toml").write_text(body.format('"logo"'))
    with pytest.raises(MemorizationConfigError, match=r"work\[0\]\.kind.*'logo'.*kind = \"mark\""):
        load_manifest(tmp_path / "memorization.toml", check_images=False)

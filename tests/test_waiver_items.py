"""Waivers through real runs: an active waiver makes the copy an xfail with its reason; an
expired one fails; a stale one warns; a bad waiver is a collection error naming the key."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from gate_projects import COPY_PROMPT, TINY_MODEL_TOML, gate_project


def _project(pytester: pytest.Pytester, tiny_pipeline: Path, work_png: bytes, waive: str) -> pytest.Pytester:
    gate_project(pytester, tiny_pipeline, photos=(), files={"fox.png": work_png})
    (pytester.path / "memorization.toml").write_text(TINY_MODEL_TOML.format(prefix="", seeds="[0]") + f"""
[[work]]
id = "fox"
image = "works/fox.png"
prompts = ["{COPY_PROMPT}"]
{waive}
""")
    return pytester


def _until(days: int) -> str:
    return (dt.date.today() + dt.timedelta(days=days)).isoformat()


def test_an_active_waiver_is_an_expected_failure_with_its_reason_in_the_report(
        pytester: pytest.Pytester, tiny_pipeline: Path, model_copy_png: bytes) -> None:
    proj = _project(pytester, tiny_pipeline, model_copy_png,
                    f'waive = {{ reason = "licensed from the rights holder", until = {_until(30)} }}')
    result = proj.runpytest("--memorization", "--memorization-report=r", "-rx")
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines([f"*XFAIL*fox[[]0]*'fox' waived until {_until(30)}: licensed from the rights holder*"])
    # the summary says waived, and quotes the waiver finding (not "WARN ... tiled_l2 ... (<= 0.15)")
    result.stdout.fnmatch_lines([f"  WAIVED *fox[[]0] seed 0: waived until {_until(30)} (licensed from the rights "
                                 "holder): tiled_l2 0.* <= 0.15 against 'fox'*"])
    (row,) = json.loads((proj.path / "r" / "report.json").read_text())["results"]
    assert row["verdict"] == "warn" and row["reasons"][0].startswith(f"waived until {_until(30)} (licensed")
    assert any(f["rule"] == "waiver" for f in row["findings"])


def test_an_expired_waiver_fails_with_its_reason(pytester: pytest.Pytester, tiny_pipeline: Path,
                                                 model_copy_png: bytes) -> None:
    proj = _project(pytester, tiny_pipeline, model_copy_png,
                    f'waive = {{ reason = "licensed for 2025", until = {_until(-1)} }}')
    result = proj.runpytest("--memorization")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*the waiver for 'fox' expired on {_until(-1)} (licensed for 2025)*"])


def test_a_waiver_that_matches_no_failure_warns_stale(pytester: pytest.Pytester, tiny_pipeline: Path) -> None:
    import io

    from PIL import Image
    from support import photo_array

    buf = io.BytesIO()  # a real photo the tiny model does not draw
    Image.fromarray(photo_array("coffee")).resize((64, 64)).save(buf, "PNG")
    proj = _project(pytester, tiny_pipeline, buf.getvalue(), f'waive = {{ reason = "old", until = {_until(30)} }}')
    result = proj.runpytest("--memorization", "-W", "default")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*UserWarning: memorization waiver: fox[[]0]: the waiver for 'fox' (old, until *) "
                                 "matched no failure of this item*"])


@pytest.mark.parametrize("waive, message", [
    ('waive = { reason = "x" }', "work[0].waive.until': missing; a waiver needs a reason and an end date"),
    ('waive = { reason = "", until = 2027-01-01 }', "work[0].waive.reason': is empty"),
    ('waive = { reason = "x", until = "soon" }', "work[0].waive.until': 'soon' is not a date"),
    ('waive = { reason = "x", until = 2027-01-01, forever = true }', "work[0].waive"),
])
def test_a_bad_waiver_is_a_collection_error_naming_the_key(pytester: pytest.Pytester, tiny_pipeline: Path,
                                                          model_copy_png: bytes, waive: str, message: str) -> None:
    proj = _project(pytester, tiny_pipeline, model_copy_png, waive)
    result = proj.runpytest("--memorization")
    result.assert_outcomes(errors=1)
    assert message in result.stdout.str()

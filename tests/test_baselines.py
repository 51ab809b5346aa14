"""Baselines through real ``pytest --memorization`` runs (pytester, tiny pipeline, CPU, 64 px, 2 steps).

``--memorization-save`` then ``--memorization-compare``: an unchanged model passes; a model whose
output moved toward a work fails THAT item with the numbers; a missing entry fails with how to add
it; ``--memorization-update-baseline`` adds it; stale entries are listed; a metric version change
is an error; other fingerprint changes are a warning; the write is atomic.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gate_projects import COPY_PROMPT, TINY_MODEL_TOML, gate_project

TOL = "tiled_l2:0.03,ssim:0.03"
MAIN = "memorization.toml"
MOVED = "moved/memorization.toml::target[0]"
MOVED_PAT = MOVED.replace("[", "[[]")  # for fnmatch


@pytest.fixture
def proj(pytester: pytest.Pytester, tiny_pipeline: Path) -> pytest.Pytester:
    """Two manifests: astronaut + coffee at the root, and 'target' (not a copy yet) under moved/."""
    gate_project(pytester, tiny_pipeline, ("astronaut", "coffee", "chelsea"))
    (pytester.path / MAIN).write_text(TINY_MODEL_TOML.format(prefix="", seeds="[0, 1]") + """
[[work]]
id = "astronaut"
image = "works/astronaut.png"
prompts = ["portrait of an astronaut in a white suit"]

[[work]]
id = "coffee"
image = "works/coffee.png"
prompts = ["a cup of coffee on a saucer"]
""")
    pytester.mkdir("moved")
    (pytester.path / "moved" / "memorization.toml").write_text(TINY_MODEL_TOML.format(prefix="../", seeds="[0]") + f"""
[[work]]
id = "target"
image = "../works/chelsea.png"
prompts = ["{COPY_PROMPT}"]
""")
    return pytester


def _run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest("--memorization", "-p", "no:cacheprovider", *args)


def _compare(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return _run(p, "--memorization-compare", "base.json", "--memorization-compare-fail", TOL, *args)


def _entries(p: pytest.Pytester, name: str = "base.json") -> dict[str, dict]:
    """node id -> entry (scores); baseline keys are content hashes, the node id is kept beside them."""
    return {e["item"]: e for e in json.loads((p.path / name).read_text())["entries"].values()}


def _no_temp_files(folder: Path) -> None:
    assert not [f.name for f in folder.iterdir() if f.name.endswith(".tmp")]


def test_save_then_compare_an_unchanged_model_passes(proj: pytest.Pytester) -> None:
    _run(proj, "--memorization-save", "base.json").assert_outcomes(passed=3)
    base = json.loads((proj.path / "base.json").read_text())
    assert base["schema"] == 2
    assert sorted(_entries(proj)) == ["memorization.toml::astronaut[0]", "memorization.toml::coffee[0]", MOVED]
    assert set(_entries(proj)[MOVED]["scores"]) == {"tiled_l2", "ssim", "local_copy"}
    # readable keys: manifest path (relative to ITS project root) | work | kind | content hash
    assert sorted(k.rsplit("|", 1)[0] for k in base["entries"]) == [
        "memorization.toml|astronaut|prompt", "memorization.toml|coffee|prompt", "moved/memorization.toml|target|prompt"]
    fp = base["fingerprint"]
    assert fp["steps"] == 2 and fp["height"] == 64 and fp["seeds"] == [0, 1]
    assert fp["metrics"]["tiled_l2"].startswith("tiled_l2-v1")
    _no_temp_files(proj.path)
    result = _compare(proj)
    result.assert_outcomes(passed=3)
    assert "stale baseline" not in result.stdout.str()


def test_a_model_that_moved_toward_a_work_fails_that_item_with_the_numbers(
        proj: pytest.Pytester, model_copy_png: bytes) -> None:
    # thresholds no image reaches (the copy reads tiled_l2 0.0012, ssim 0.99997), so only the baseline gates
    # (local_copy is left out: an exact copy scores 1, and no threshold in its range lets that through)
    gates = ("--memorization-threshold", "tiled_l2=0.0001,ssim=0.99999", "--memorization-warn-band", "0",
             "--memorization-metrics", "tiled_l2,ssim")
    _run(proj, "--memorization-save", "base.json", *gates).assert_outcomes(passed=3)
    before = _entries(proj)[MOVED]["scores"]["tiled_l2"]
    assert before > 0.2
    # The model now draws the work for its prompt. (The work image is part of the entry's key, so the
    # old scores are moved onto the key of the new content, as a model that drifted would produce them.)
    doc = json.loads((proj.path / "base.json").read_text())
    (proj.path / "works" / "chelsea.png").write_bytes(model_copy_png)
    _run(proj, "--memorization-save", "new.json", *gates).assert_outcomes(passed=3)
    new = json.loads((proj.path / "new.json").read_text())
    old_key = next(k for k, e in doc["entries"].items() if e["item"] == MOVED)
    new_key = next(k for k, e in new["entries"].items() if e["item"] == MOVED)
    assert new_key != old_key
    doc["entries"][new_key] = doc["entries"].pop(old_key)
    (proj.path / "base.json").write_text(json.dumps(doc))
    result = _compare(proj, *gates, "--memorization-report", "r")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*_ target[[]0]: 'a photo of a red fox' _*",
        f"baseline: tiled_l2 worsened from {before:.4f} to 0.00* (change +0.*, tolerance 0.03) vs base.json",
        "baseline: ssim worsened from 0.* to * (change +0.*, tolerance 0.03) vs base.json",
        f"FAILED {MOVED_PAT}*"])  # pytest 9 adds " - <first line>" here; pytest 8 does not for our items
    # the summary quotes the baseline finding, not the threshold text of another rule
    result.stdout.fnmatch_lines([f"  FAIL  {MOVED_PAT} seed 0: baseline: * worsened from * to * vs base.json*"])
    out = result.stdout.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out and "copy a protected work" not in out
    rows = json.loads((proj.path / "r" / "report.json").read_text())["results"]
    moved = [r for r in rows if r["item"] == MOVED]
    assert [r["verdict"] for r in moved] == ["fail"]
    assert moved[0]["scores"]["tiled_l2"] < 0.01
    assert any(x.startswith("baseline: tiled_l2 worsened") for x in moved[0]["reasons"])
    assert all(r["verdict"] in ("pass", "warn") for r in rows if r["item"] != MOVED)


def test_a_missing_entry_fails_until_update_baseline_adds_it(proj: pytest.Pytester) -> None:
    _run(proj, "--memorization-save", "base.json", MAIN).assert_outcomes(passed=2)
    result = _compare(proj)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        f"*no baseline entry for {MOVED_PAT} in base.json. Add it on purpose with --memorization-compare=base.json "
        "--memorization-update-baseline (entries are never created silently)*"])
    assert MOVED not in _entries(proj)  # compare never writes
    _compare(proj, "--memorization-update-baseline").assert_outcomes(passed=3)
    assert MOVED in _entries(proj)
    _no_temp_files(proj.path)
    _compare(proj).assert_outcomes(passed=3)


def test_stale_entries_are_listed_in_the_summary(proj: pytest.Pytester) -> None:
    _run(proj, "--memorization-save", "base.json").assert_outcomes(passed=3)
    (proj.path / "moved" / "memorization.toml").unlink()
    result = _compare(proj)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*= memorization =*", "stale baseline entries (their item's content changed or it "
                                 "no longer exists; drop them with --memorization-prune-baseline): "
                                 "moved/memorization.toml|target|prompt|*"])


def test_a_metric_version_change_is_an_error_for_every_item(proj: pytest.Pytester) -> None:
    _run(proj, "--memorization-save", "base.json").assert_outcomes(passed=3)
    doc = json.loads((proj.path / "base.json").read_text())
    doc["fingerprint"]["metrics"]["tiled_l2"] = "tiled_l2-v0(old)"
    (proj.path / "base.json").write_text(json.dumps(doc))
    result = _compare(proj)
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines([
        "*BaselineError: baseline base.json: metric 'tiled_l2' changed version (tiled_l2-v0(old) -> tiled_l2-v1*); "
        "its scores are not comparable*"])
    # the fix the message names works: rewrite the entries under the new version, then compare passes
    _compare(proj, "--memorization-update-baseline").assert_outcomes(passed=3)
    assert json.loads((proj.path / "base.json").read_text())["fingerprint"]["metrics"]["tiled_l2"].startswith(
        "tiled_l2-v1")
    _compare(proj).assert_outcomes(passed=3)


def test_a_fingerprint_difference_is_a_warning_that_lists_it(proj: pytest.Pytester) -> None:
    _run(proj, "--memorization-save", "base.json").assert_outcomes(passed=3)
    doc = json.loads((proj.path / "base.json").read_text())
    doc["fingerprint"]["steps"] = 50
    (proj.path / "base.json").write_text(json.dumps(doc))
    result = _compare(proj)
    result.assert_outcomes(passed=3, warnings=1)
    result.stdout.fnmatch_lines(["*baseline base.json was made under different conditions: steps: 50 -> 2*"])


def test_an_interrupted_run_leaves_the_existing_baseline_untouched(proj: pytest.Pytester) -> None:
    _run(proj, "--memorization-save", "base.json", MAIN).assert_outcomes(passed=2)
    before = (proj.path / "base.json").read_bytes()
    proj.makeconftest("""
        def pytest_runtest_teardown(item, nextitem):
            raise KeyboardInterrupt
    """)
    for args in (("--memorization-save", "base.json"),
                 ("--memorization-compare", "base.json", "--memorization-update-baseline")):
        result = proj.runpytest("--memorization", "-p", "no:cacheprovider", *args, no_reraise_ctrlc=True)
        assert result.ret == pytest.ExitCode.INTERRUPTED
        assert (proj.path / "base.json").read_bytes() == before
        _no_temp_files(proj.path)

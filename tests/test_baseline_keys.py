"""Baselines keyed by content, through real ``pytest --memorization`` runs (tiny pipeline, CPU).

An edited prompt is a new entry (missing, with the fix) and the old one is stale until
``--memorization-prune-baseline``; saving with ``-k`` keeps the entries of deselected items;
``--memorization-update-baseline`` rewrites only the items that ran; an old (schema 1) file is
refused with the command that re-creates it; a baseline written in one checkout compares cleanly
from another folder, another checkout and with ``--rootdir`` elsewhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from gate_projects import TINY_MODEL_TOML, gate_project

MANIFEST = TINY_MODEL_TOML.format(prefix="", seeds="[0]") + """
[[work]]
id = "astronaut"
image = "works/astronaut.png"
prompts = ["{prompt}"]

[[work]]
id = "coffee"
image = "works/coffee.png"
prompts = ["a cup of coffee on a saucer"]
"""
ASTRO = "portrait of an astronaut in a white suit"
OPTS = ("--memorization", "-p", "no:cacheprovider")


@pytest.fixture
def proj(pytester: pytest.Pytester, tiny_pipeline: Path) -> pytest.Pytester:
    gate_project(pytester, tiny_pipeline)
    (pytester.path / "memorization.toml").write_text(MANIFEST.format(prompt=ASTRO))
    return pytester


def _doc(path: Path) -> dict:
    return json.loads(path.read_text())


def _by_item(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, e in _doc(path)["entries"].items():
        out.setdefault(e["item"], []).append(k)
    return out


def test_an_edited_prompt_is_a_new_entry_and_the_old_one_is_stale_until_pruned(proj: pytest.Pytester) -> None:
    proj.runpytest(*OPTS, "--memorization-save=base.json").assert_outcomes(passed=2)
    old_key = _by_item(proj.path / "base.json")["memorization.toml::astronaut[0]"][0]
    (proj.path / "memorization.toml").write_text(MANIFEST.format(prompt="an astronaut on the moon"))
    result = proj.runpytest(*OPTS, "--memorization-compare=base.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*no baseline entry for memorization.toml::astronaut[[]0] in base.json. its prompt, work image, seeds or "
        f"generation settings changed since the baseline was written (the old entry {old_key} is now stale; drop it "
        "with --memorization-prune-baseline). Add it on purpose with --memorization-compare=base.json "
        "--memorization-update-baseline*",
        f"stale baseline entries (*): {old_key}"])
    proj.runpytest(*OPTS, "--memorization-compare=base.json", "--memorization-update-baseline").assert_outcomes(passed=2)
    keys = _by_item(proj.path / "base.json")
    assert len(keys["memorization.toml::astronaut[0]"]) == 2 and old_key in keys["memorization.toml::astronaut[0]"]
    result = proj.runpytest(*OPTS, "--memorization-compare=base.json", "--memorization-prune-baseline")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["pruned 1 stale baseline entry from *base.json"])
    assert old_key not in _doc(proj.path / "base.json")["entries"] and len(_doc(proj.path / "base.json")["entries"]) == 2
    result = proj.runpytest(*OPTS, "--memorization-compare=base.json")
    result.assert_outcomes(passed=2)
    assert "stale baseline entries" not in result.stdout.str()


@pytest.mark.parametrize("flag", ["--memorization-prune-baseline", "--memorization-update-baseline"])
def test_prune_and_update_need_a_baseline_file(pytester: pytest.Pytester, flag: str) -> None:
    result = pytester.runpytest(*OPTS, flag)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{flag} writes the baseline file of --memorization-save=FILE or "
                                 "--memorization-compare=FILE: give one*"])


def test_save_and_update_with_a_selection_keep_the_other_entries(proj: pytest.Pytester) -> None:
    proj.runpytest(*OPTS, "--memorization-save=base.json").assert_outcomes(passed=2)
    before = _doc(proj.path / "base.json")["entries"]
    proj.runpytest(*OPTS, "--memorization-save=base.json", "-k", "coffee").assert_outcomes(passed=1, deselected=1)
    assert _doc(proj.path / "base.json")["entries"] == before  # deselected astronaut kept, coffee rewritten alike
    coffee = next(k for k, e in before.items() if "coffee" in e["item"])
    astro = next(k for k, e in before.items() if "astronaut" in e["item"])
    doc = _doc(proj.path / "base.json")
    doc["entries"][coffee]["scores"]["tiled_l2"] = 9.0  # marks: which entries a run rewrites
    doc["entries"][astro]["scores"]["tiled_l2"] = 8.0
    (proj.path / "base.json").write_text(json.dumps(doc))
    proj.runpytest(*OPTS, "--memorization-compare=base.json", "--memorization-update-baseline",
                   "memorization.toml::coffee[0]").assert_outcomes(passed=1)
    after = _doc(proj.path / "base.json")["entries"]
    assert after[coffee] == before[coffee] and after[astro]["scores"]["tiled_l2"] == 8.0
    # a run of one item lists no stale entries (the others were not collected, not removed)
    result = proj.runpytest(*OPTS, "--memorization-compare=base.json", "-k", "coffee")
    result.assert_outcomes(passed=1, deselected=1)
    assert "stale baseline entries" not in result.stdout.str()


def test_an_old_schema_baseline_says_how_to_recreate_it(proj: pytest.Pytester) -> None:
    (proj.path / "old.json").write_text(json.dumps({"schema": 1, "fingerprint": {}, "entries": {
        "memorization.toml::astronaut::0": {"tiled_l2": 0.3}}}))
    result = proj.runpytest(*OPTS, "--memorization-compare=old.json")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([
        "*BaselineError: *old.json: an old baseline (schema 1, entries keyed by node id)*Re-create it on a run you "
        "trust: pytest --memorization --memorization-save=*old.json*"])
    proj.runpytest(*OPTS, "--memorization-save=old.json").assert_outcomes(passed=2)  # the fix it names works
    proj.runpytest(*OPTS, "--memorization-compare=old.json").assert_outcomes(passed=2)


def test_a_baseline_compares_cleanly_from_another_folder_checkout_and_rootdir(
        proj: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proj.runpytest(*OPTS, "--memorization-save=base.json").assert_outcomes(passed=2)
    base = str(proj.path / "base.json")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    checkout2 = tmp_path / "checkouts" / "second"
    shutil.copytree(proj.path, checkout2, ignore=shutil.ignore_patterns(".cache", "base.json"))
    monkeypatch.chdir(elsewhere)
    runs = {
        "another folder": (str(proj.path),),
        "another checkout": (str(checkout2),),
        "--rootdir elsewhere": (f"--rootdir={tmp_path}", "-c", str(checkout2 / "tox.ini"), str(checkout2)),
    }
    for name, args in runs.items():
        result = proj.runpytest(*OPTS, f"--memorization-compare={base}", "-v", *args)
        result.assert_outcomes(passed=2)
        out = result.stdout.str()
        assert "no baseline entry" not in out and "stale baseline entries" not in out, name
    assert "checkouts/second/memorization.toml::astronaut[0] PASSED" in out  # node ids moved; keys did not

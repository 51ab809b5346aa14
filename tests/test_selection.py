"""Manifest items select like any pytest test (pytest 8 and 9): the ids pytest prints can be
passed back (node id, ``--deselect``), ``-k`` matches them, ``--lf``/``--ff`` rerun the failed
manifest items, and junit gets ``classname="memorization.toml" name="fox[0]"``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from gate_projects import TINY_MODEL_TOML, add_copy_project, gate_project


@pytest.fixture
def sel(pytester: pytest.Pytester, tiny_pipeline: Path, model_copy_png: bytes) -> pytest.Pytester:
    """fox[0] is a copy (fails); astronaut[0], its paraphrase astronaut[0-p1], coffee[0] pass."""
    gate_project(pytester, tiny_pipeline, files={"fox.png": model_copy_png})
    (pytester.path / "memorization.toml").write_text(TINY_MODEL_TOML.format(prefix="", seeds="[0]") + """
[[work]]
id = "astronaut"
image = "works/astronaut.png"
prompts = ["portrait of an astronaut in a white suit"]
paraphrases = 1

[[work]]
id = "coffee"
image = "works/coffee.png"
prompts = ["a cup of coffee on a saucer"]
""")
    add_copy_project(pytester)
    return pytester


FOX = "copies/memorization.toml::fox[0]"
ALL = [FOX, "memorization.toml::astronaut[0]", "memorization.toml::astronaut[0-p1]", "memorization.toml::coffee[0]"]


def _ids(result: pytest.RunResult) -> list[str]:
    return [line.split(" ")[0] for line in result.stdout.lines if "memorization.toml::" in line]


def test_ids_have_no_double_colon_inside_and_select_by_node_id(sel: pytest.Pytester) -> None:
    result = sel.runpytest("--co", "-q", "--memorization", "-p", "no:cacheprovider")
    assert _ids(result) == ALL
    one = sel.runpytest("--memorization", "-p", "no:cacheprovider", "-v", "memorization.toml::astronaut[0-p1]")
    one.assert_outcomes(passed=1)
    one.stdout.fnmatch_lines(["memorization.toml::astronaut[[]0-p1] PASSED*"])


def test_k_and_deselect(sel: pytest.Pytester) -> None:
    result = sel.runpytest("--co", "-q", "--memorization", "-p", "no:cacheprovider", "-k", "astronaut and not p1")
    assert _ids(result) == ["memorization.toml::astronaut[0]"]
    result = sel.runpytest("--co", "-q", "--memorization", "-p", "no:cacheprovider",
                           "--deselect", FOX, "--deselect", "memorization.toml::coffee[0]")
    assert _ids(result) == ALL[1:3]


def test_lf_and_ff_rerun_the_failed_manifest_item(sel: pytest.Pytester) -> None:
    sel.runpytest("--memorization").assert_outcomes(passed=3, failed=1)
    result = sel.runpytest("--memorization", "--lf", "-v")
    result.assert_outcomes(passed=0, failed=1)
    result.stdout.fnmatch_lines(["*rerun previous 1 failure*", "copies/memorization.toml::fox[[]0] FAILED*"])
    result = sel.runpytest("--memorization", "--ff", "-v")
    result.assert_outcomes(passed=3, failed=1)
    assert [x.split(" ")[0] for x in result.stdout.lines if " PASSED" in x or " FAILED" in x][0] == FOX


def test_junit_names(sel: pytest.Pytester) -> None:
    sel.runpytest("--memorization", "-p", "no:cacheprovider", "--junitxml=j.xml").assert_outcomes(passed=3, failed=1)
    cases = [(c.get("classname"), c.get("name")) for c in ET.parse(sel.path / "j.xml").iter("testcase")]
    assert cases == [("copies.memorization.toml", "fox[0]"), ("memorization.toml", "astronaut[0]"),
                     ("memorization.toml", "astronaut[0-p1]"), ("memorization.toml", "coffee[0]")]

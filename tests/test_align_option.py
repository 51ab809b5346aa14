"""``--memorization-align`` / ini ``memorization_align``: alignment is an option, recorded in the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gate_projects import COPY_PROMPT, TINY_MODEL_TOML, gate_project


@pytest.fixture
def copy_project(pytester: pytest.Pytester, tiny_pipeline: Path, model_copy_png: bytes) -> pytest.Pytester:
    gate_project(pytester, tiny_pipeline, photos=(), files={"fox.png": model_copy_png})
    (pytester.path / "memorization.toml").write_text(TINY_MODEL_TOML.format(prefix="", seeds="[0]") + f"""
[[work]]
id = "fox"
image = "works/fox.png"
prompts = ["{COPY_PROMPT}"]
""")
    return pytester


@pytest.mark.parametrize("flag, mark", [(None, "/align("), ("--memorization-align=false", "/noalign"),
                                        ("--memorization-align=true", "/align(")])
def test_alignment_is_an_option_and_the_copy_fails_either_way(copy_project: pytest.Pytester, flag: str | None,
                                                              mark: str) -> None:
    """The model's own output is the work: an exact copy fails with or without alignment; the
    metric versions in report.json say which search ran (baselines refuse to mix them)."""
    args = ["--memorization", "--memorization-report=r", *([flag] if flag else [])]
    result = copy_project.runpytest(*args)
    result.assert_outcomes(failed=1)
    run = json.loads((copy_project.path / "r" / "report.json").read_text())["run"]
    assert mark in run["metrics"]["tiled_l2"] and mark in run["metrics"]["ssim"]


def test_a_bad_align_value_is_a_usage_error(copy_project: pytest.Pytester) -> None:
    result = copy_project.runpytest("--memorization", "--memorization-align=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--memorization-align (ini memorization_align) = 'sometimes': expected true or false*"])

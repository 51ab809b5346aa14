"""Reference-free detectors through real `pytest --memorization` runs: calibrate, then gate canaries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

MANIFEST = """
[model]
pretrained = "models/tiny"
seeds = [0, 1]
steps = 2
height = 64
width = 64

[detectors]
noise_magnitude = {{ steps = 1{threshold} }}
seed_diversity = {{ threshold = 0.15 }}

[[canary]]
id = "sks"
prompt = "a photo of sks person"
"""


@pytest.fixture
def canary_project(pytester: pytest.Pytester, tiny_pipeline: Path) -> pytest.Pytester:
    shutil.copytree(tiny_pipeline, pytester.path / "models" / "tiny")
    (pytester.path / "tox.ini").write_text(f"[pytest]\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    (pytester.path / "prompts.txt").write_text("\n".join(
        ["a bowl of fruit on a table", "a mountain lake at dawn", "a red bicycle leaning on a wall",
         "a cat sleeping on a sofa", "a city street in the rain", "a plate of pasta",
         "a lighthouse on a cliff", "a forest path in autumn", "a cup of tea", "a sailboat at sea"]))
    return pytester


def test_calibrate_then_gate_a_canary(canary_project: pytest.Pytester) -> None:
    root = canary_project.path
    (root / "memorization.toml").write_text(MANIFEST.format(threshold=""))
    # without calibration the canary is an error that says how to calibrate
    result = canary_project.runpytest("--memorization")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*noise_magnitude has no threshold*--memorization-calibrate*"])

    result = canary_project.runpytest("--memorization", "--memorization-calibrate",
                                      "--memorization-calibration-prompts", "prompts.txt", "-k", "calibrate",
                                      "--memorization-target-fpr", "0.1")
    result.assert_outcomes(passed=1)
    cal = json.loads((root / "memorization-calibration.json").read_text())
    assert cal["n_prompts"] == 10 and cal["target_fpr"] == 0.1 and cal["threshold"] > 0
    result.stdout.fnmatch_lines(["*calibrated noise_magnitude threshold * at FPR 0.1 on 10 ordinary prompts*"])

    result = canary_project.runpytest("--memorization", "--memorization-report", "rep")
    report = json.loads((root / "rep" / "report.json").read_text())
    rows = report["results"]
    assert [r["seed"] for r in rows] == [0, 1] and all(r["work"] is None for r in rows)
    nm = rows[0]["detectors"]["noise_magnitude"]
    assert nm["calibrated"] is True and nm["threshold"] == pytest.approx(cal["threshold"])
    assert "seed_diversity" in rows[0]["detectors"]
    flagged = nm["score"] >= nm["threshold"]
    result.assert_outcomes(**({"failed": 1} if flagged else {"passed": 1}))


def test_an_explicit_threshold_gates_as_uncalibrated_and_names_trigger_tokens(canary_project: pytest.Pytester) -> None:
    (canary_project.path / "memorization.toml").write_text(MANIFEST.format(threshold=", threshold = 0.0"))
    result = canary_project.runpytest("--memorization", "--memorization-report", "rep")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*noise magnitude * >= 0.0000 (uncalibrated, written in the manifest) for prompt 'a photo of sks person';"
        " memorization driven by: '*"])
    row = json.loads((canary_project.path / "rep" / "report.json").read_text())["results"][0]
    words = row["detectors"]["noise_magnitude"]["trigger_tokens"]
    assert words and set(words) <= {"a", "photo", "of", "sks", "person"}
    assert row["detectors"]["noise_magnitude"]["calibrated"] is False and row["verdict"] == "fail"


def test_a_calibration_for_another_model_is_refused(canary_project: pytest.Pytester, tiny_pipeline: Path) -> None:
    root = canary_project.path
    (root / "memorization.toml").write_text(MANIFEST.format(threshold=""))
    canary_project.runpytest("--memorization", "--memorization-calibrate", "--memorization-calibration-prompts",
                             "prompts.txt", "-k", "calibrate").assert_outcomes(passed=1)
    from pytest_memorization.testing import build_tiny_pipeline

    shutil.rmtree(root / "models" / "tiny")
    build_tiny_pipeline(root / "models" / "tiny", seed=1)  # different weights, same path
    result = canary_project.runpytest("--memorization")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*calibrat*--memorization-calibrate*"])


def test_a_detector_failure_on_a_work_prompt_fails_the_item(canary_project: pytest.Pytester) -> None:
    """The rows and the item must agree: a flagged work prompt is a FAILED item, not a pass with fail rows."""
    from support import save_photo

    root = canary_project.path
    save_photo("coffee", root / "works" / "coffee.png")
    (root / "memorization.toml").write_text(MANIFEST.format(threshold=", threshold = 0.0").split("[[canary]]")[0]
                                            + '[[work]]\nid = "coffee"\nimage = "works/coffee.png"\n'
                                              'prompts = ["a cup of coffee"]\n')
    result = canary_project.runpytest("--memorization", "--memorization-report", "rep")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*noise magnitude * >= 0.0000 (uncalibrated*memorization driven by:*"])
    rows = json.loads((root / "rep" / "report.json").read_text())["results"]
    assert rows and all(r["verdict"] == "fail" for r in rows)


def test_calibrate_in_one_run_then_gate(canary_project: pytest.Pytester) -> None:
    """The README's command as written: calibration runs alone (the canary, which needs its threshold,
    is deselected with a note) and exits 0; the next plain run gates the canary with that threshold."""
    root = canary_project.path
    (root / "memorization.toml").write_text(MANIFEST.format(threshold=""))
    result = canary_project.runpytest("--memorization", "--memorization-calibrate",
                                      "--memorization-calibration-prompts=prompts.txt", "--memorization-target-fpr=0.1")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["--memorization-calibrate: ran only the calibration; 1 memorization item(s) "
                                 "deselected. Gate with the new threshold: pytest --memorization",
                                 "*calibrated noise_magnitude threshold * at FPR 0.1 on 10 ordinary prompts*"])
    assert "no threshold" not in result.stdout.str()
    result = canary_project.runpytest("--memorization", "--memorization-report=rep")
    nm = json.loads((root / "rep" / "report.json").read_text())["results"][0]["detectors"]["noise_magnitude"]
    assert nm["calibrated"] is True
    result.assert_outcomes(**({"failed": 1} if nm["score"] >= nm["threshold"] else {"passed": 1}))

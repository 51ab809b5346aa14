"""zero_step and lora_delta through real `pytest --memorization` runs: calibrate, gate both ways,
and a flagged prompt carries its per-pixel map into report.json and the HTML report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

MANIFEST = """
[model]
pretrained = "models/tiny"
{lora}
seeds = [0, 1]
steps = 3
height = 64
width = 64

[detectors]
{detectors}

[[canary]]
id = "sks"
prompt = "a photo of sks person"
"""

ORDINARY = ["a bowl of fruit on a table", "a mountain lake at dawn", "a red bicycle leaning on a wall",
            "a cat sleeping on a sofa", "a city street in the rain", "a plate of pasta",
            "a lighthouse on a cliff", "a forest path in autumn", "a cup of tea", "a sailboat at sea"]


@pytest.fixture
def det_project(pytester: pytest.Pytester, tiny_pipeline: Path, tiny_lora: Path) -> pytest.Pytester:
    shutil.copytree(tiny_pipeline, pytester.path / "models" / "tiny")
    shutil.copytree(tiny_lora, pytester.path / "models" / "lora")
    (pytester.path / "tox.ini").write_text(f"[pytest]\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    (pytester.path / "prompts.txt").write_text("\n".join(ORDINARY))
    return pytester


def _write(p: pytest.Pytester, detectors: str, lora: bool = False) -> None:
    (p.path / "memorization.toml").write_text(MANIFEST.format(
        detectors=detectors, lora='lora = "models/lora"' if lora else ""))


def _row(p: pytest.Pytester) -> dict:
    return json.loads((p.path / "rep" / "report.json").read_text())["results"][0]


def test_calibrate_zero_step_then_gate_with_it(det_project: pytest.Pytester) -> None:
    root = det_project.path
    _write(det_project, "zero_step = { timesteps = 2 }")
    result = det_project.runpytest("--memorization")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*zero_step has no threshold: no calibration file at "
                                 "*memorization-calibration.zero_step.json*--memorization-calibrate*"])
    result = det_project.runpytest("--memorization", "--memorization-calibrate", "--memorization-target-fpr", "0.1",
                                   "--memorization-calibration-prompts", "prompts.txt")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*calibrated zero_step threshold * at FPR 0.1 on 10 ordinary prompts*"])
    cal = json.loads((root / "memorization-calibration.zero_step.json").read_text())
    assert cal["detector"] == "zero_step" and cal["steps"] == 2 and cal["settings"]["align_weight"] == 2.0
    assert json.loads((root / "memorization-calibration.json").read_text())["detector"] == "noise_magnitude"

    result = det_project.runpytest("--memorization", "--memorization-report", "rep")
    zs = _row(det_project)["detectors"]["zero_step"]
    assert zs["calibrated"] is True and zs["threshold"] == pytest.approx(cal["threshold"])
    result.assert_outcomes(**({"failed": 1} if zs["score"] >= zs["threshold"] else {"passed": 1}))

    # another weight is another statistic: the calibration does not apply to it
    _write(det_project, "zero_step = { timesteps = 2, align_weight = 0.1 }")
    result = det_project.runpytest("--memorization")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*zero_step calibration was made with other settings (align_weight 2.0 -> 0.1)*"])


@pytest.mark.parametrize("name, lora", [("zero_step", False), ("lora_delta", True)])
def test_flagged_prompt_fails_with_its_map_and_a_high_threshold_passes(det_project: pytest.Pytester, name: str,
                                                                        lora: bool) -> None:
    _write(det_project, f"{name} = {{ threshold = 0.0 }}", lora=lora)
    result = det_project.runpytest("--memorization", "--memorization-report", "rep")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*>= 0.0000 (uncalibrated, written in the manifest) for prompt 'a photo of sks "
                                 "person'*"])
    entry = _row(det_project)["detectors"][name]
    assert entry["flagged"] is True and entry["calibrated"] is False and entry["score"] > 0
    grid = entry["map"]  # latent pixels, scaled to [0, 1] by the map's peak
    assert len(grid) == len(grid[0]) > 1 and max(max(r) for r in grid) == 1.0
    assert min(min(r) for r in grid) >= 0.0
    html = (det_project.path / "rep" / "index.html").read_text()
    assert f'class="detmap" data-detector="{name}"' in html

    high = entry["score"] * 10
    _write(det_project, f"{name} = {{ threshold = {high} }}", lora=lora)
    result = det_project.runpytest("--memorization", "--memorization-report", "rep")
    result.assert_outcomes(passed=1)
    entry = _row(det_project)["detectors"][name]
    print(f"\n{name}: score {entry['score']:.4f}; fails at threshold 0 (margin {entry['score']:.4f}), "
          f"passes at {high:.4f} (margin {high - entry['score']:.4f})")
    assert entry["flagged"] is False and "map" not in entry
    assert 'class="detmap"' not in (det_project.path / "rep" / "index.html").read_text()


def test_lora_delta_without_a_lora_is_an_error(det_project: pytest.Pytester) -> None:
    _write(det_project, "lora_delta = { threshold = 1.0 }")
    result = det_project.runpytest("--memorization")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*lora_delta needs a model with a LoRA*"])

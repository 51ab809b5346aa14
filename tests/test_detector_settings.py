"""The detectors measure under generation's own settings, and every [detectors] key is read or refused.

Real `pytest --memorization` runs on the tiny pipeline: the manifest's negative prompt changes the
detector scores (it is the unconditional branch they compare with), the scores equal a direct call
with the item's ``GenerationSettings``, and the detectors step the same scheduler class through the
same number of steps as generation (recorded on the scheduler itself, not read from our code).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_memorization.errors import ManifestError
from pytest_memorization.records import GenerationSettings

PROMPT = "a photo of sks person"
MANIFEST = """
[model]
pretrained = "models/tiny"
seeds = [0, 1]
steps = 3
height = 64
width = 64
{negative}

[detectors]
{detectors}

[[canary]]
id = "sks"
prompt = "{prompt}"
"""
PASSING = "noise_magnitude = { threshold = 1e9 }\nzero_step = { threshold = 1e9 }"


@pytest.fixture
def det_project(pytester: pytest.Pytester, tiny_pipeline: Path) -> pytest.Pytester:
    shutil.copytree(tiny_pipeline, pytester.path / "models" / "tiny")
    (pytester.path / "tox.ini").write_text(f"[pytest]\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    return pytester


def _run(p: pytest.Pytester, detectors: str, negative: str | None = None, report: str = "rep") -> tuple[Any, dict]:
    (p.path / "memorization.toml").write_text(MANIFEST.format(
        detectors=detectors, prompt=PROMPT, negative=f'negative_prompt = "{negative}"' if negative else ""))
    result = p.runpytest("--memorization", "--memorization-report", report)
    return result, json.loads((p.path / report / "report.json").read_text())["results"][0]["detectors"]


@pytest.fixture
def pipe(tiny_pipeline: Path) -> Any:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_pipeline, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_the_manifests_negative_prompt_changes_the_detector_scores(det_project: pytest.Pytester, pipe: Any) -> None:
    from pytest_memorization.detectors import noise_magnitude
    from pytest_memorization.detectors.zero_step import zero_step

    result, plain = _run(det_project, PASSING)
    result.assert_outcomes(passed=1)
    result, negative = _run(det_project, PASSING, negative="blurry, low quality", report="rep2")
    result.assert_outcomes(passed=1)
    for name in ("noise_magnitude", "zero_step"):
        change = abs(negative[name]["score"] - plain[name]["score"])
        print(f"\n{name}: {plain[name]['score']:.4f} without, {negative[name]['score']:.4f} with the negative prompt")
        assert change > 1e-3 * abs(plain[name]["score"]), (name, plain[name], negative[name])
    # and each is the detector under the item's own GenerationSettings, negative prompt included
    gen = GenerationSettings(steps=3, guidance_scale=7.5, height=64, width=64, negative_prompt="blurry, low quality")
    assert negative["noise_magnitude"]["score"] == pytest.approx(
        float(noise_magnitude(pipe, [PROMPT], [0, 1], gen).mean()), rel=1e-4)
    assert negative["zero_step"]["score"] == pytest.approx(float(zero_step(pipe, [PROMPT], [0, 1], gen).mean()),
                                                           rel=1e-4)


def test_detectors_step_generations_scheduler_through_generations_steps(det_project: pytest.Pytester,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``set_timesteps`` call of the run, by generation (inside diffusers) and by the detectors
    (inside pytest_memorization/detectors): one scheduler class, one step count, the manifest's."""
    from diffusers import DDIMScheduler

    calls: list[tuple[str, str, int]] = []
    original = DDIMScheduler.set_timesteps

    def recording(self: Any, num_inference_steps: int, *args: Any, **kwargs: Any) -> Any:
        caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
        who = "detector" if "pytest_memorization/detectors/" in caller else "generation"
        calls.append((who, type(self).__name__, int(num_inference_steps)))
        return original(self, num_inference_steps, *args, **kwargs)

    monkeypatch.setattr(DDIMScheduler, "set_timesteps", recording)
    result, _ = _run(det_project, "noise_magnitude = { threshold = 1e9, steps = 2 }\nzero_step = { threshold = 1e9 }\n"
                                  "seed_diversity = { threshold = 0.0 }")  # seed diversity: the canary generates
    result.assert_outcomes(passed=1)
    assert {who for who, _, _ in calls} == {"detector", "generation"}, calls
    assert set(calls) == {("detector", "DDIMScheduler", 3), ("generation", "DDIMScheduler", 3)}, calls


def test_noise_magnitude_reads_its_seeds_and_gate(det_project: pytest.Pytester, pipe: Any) -> None:
    """``seeds`` are the seeds its score is averaged over; ``gate = false`` makes a crossing a warning."""
    from pytest_memorization.detectors import noise_magnitude

    result, det = _run(det_project, "noise_magnitude = { threshold = 0.0, gate = false, seeds = [5, 6] }")
    result.assert_outcomes(passed=1)
    nm = det["noise_magnitude"]
    assert nm["seeds"] == [5, 6] and nm["gate"] is False and nm["seed_score"] is None  # rows are seeds 0, 1
    gen = GenerationSettings(steps=3, guidance_scale=7.5, height=64, width=64)
    assert nm["score"] == pytest.approx(float(noise_magnitude(pipe, [PROMPT], [5, 6], gen).mean()), rel=1e-4)
    rows = json.loads((det_project.path / "rep" / "report.json").read_text())["results"]
    assert [r["verdict"] for r in rows] == ["warn", "warn"]
    assert "not gating: gate = false" in rows[0]["reasons"][0]
    result, det = _run(det_project, "noise_magnitude = { threshold = 0.0, seeds = [5, 6] }")
    result.assert_outcomes(failed=1)  # the same crossing, gating (the default)


def _load(tmp_path: Path, detectors: str) -> Any:
    from pytest_memorization.manifest.load import load_manifest

    (tmp_path / "models" / "tiny").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "memorization.toml"
    path.write_text(MANIFEST.format(detectors=detectors, prompt=PROMPT, negative=""))
    return load_manifest(path)


def test_every_detectors_key_is_read_or_refused(tmp_path: Path) -> None:
    m = _load(tmp_path, "noise_magnitude = { seeds = [3], gate = false, steps = 2 }\nseed_diversity = { gate = true }")
    assert m.detectors == {"noise_magnitude": {"seeds": [3], "gate": False, "steps": 2},
                           "seed_diversity": {"gate": True}}
    with pytest.raises(ManifestError, match=r"detectors\.seed_diversity\.seeds.*item's own generations.*\[model\]"):
        _load(tmp_path, "seed_diversity = { seeds = [1, 2] }")
    with pytest.raises(ManifestError, match="unknown key 'gate'"):
        _load(tmp_path, "zero_step = { gate = true }")

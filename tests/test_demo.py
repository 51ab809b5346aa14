"""The strongest test: on really trained models, the gate fails the memorizer on its five works,
passes its clean twin, and the LoRA pre-merge gate fails on the face. Same project as `make demo`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {"memorizer": ("fail", 5), "clean_twin": ("pass", 5), "lora": ("fail", 1)}
ORDER = {"error": 0, "fail": 1, "warn": 2, "pass": 3}


@pytest.fixture
def demo(pytester: pytest.Pytester, demo_models: dict[str, Path]) -> pytest.Pytester:
    for name in ("memorizer", "clean_twin", "lora", "works"):
        shutil.copytree(ROOT / "examples" / name, pytester.path / name)
    for name, src in demo_models.items():
        shutil.copytree(src, pytester.path / "models" / name)
    (pytester.path / "pytest.ini").write_text(
        f"[pytest]\nmemorization_device = cpu\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    return pytester


def outcomes(report: dict) -> dict[str, list[str]]:
    worst: dict[str, str] = {}
    for row in report["results"]:
        worst[row["item"]] = min(worst.get(row["item"], "pass"), row["verdict"], key=ORDER.__getitem__)
    by_project: dict[str, list[str]] = {}
    for item, verdict in sorted(worst.items()):
        by_project.setdefault(item.split("/", 1)[0], []).append(verdict)
    return by_project


def test_weight_free_metrics_catch_the_memorizer_and_the_lora_and_pass_the_twin(demo: pytest.Pytester) -> None:
    result = demo.runpytest("--memorization", "--memorization-report", "rep")
    result.assert_outcomes(failed=6, passed=5)
    report = json.loads((demo.path / "rep" / "report.json").read_text())
    got = outcomes(report)
    for project, (want, count) in EXPECTED.items():
        assert got[project] == [want] * count, (project, got[project])
    for row in report["results"]:
        if row["item"].startswith("memorizer/"):
            assert row["work"] == row["item"].split("::")[-1].split("[")[0], "the nearest work must be the memorized one"
        if row["item"].startswith("lora/"):
            gate = row["extra"]["lora_gate"]
            assert gate["base_scores"]["tiled_l2"] > 0.15 >= row["scores"]["tiled_l2"]
    result.stdout.fnmatch_lines(["*LoRA gate: prompt 'a photo of sks person', seed 0: tiled_l2 0.0* <= 0.15 against "
                                 "'face' with the LoRA, but not without it (base 0.*): the LoRA makes a copy*"])


def test_lpips_and_clip_plumbing_with_seeded_random_backbones(demo: pytest.Pytester) -> None:
    """Random backbones measure nothing about copying; this proves the wiring: weights found where
    real ones go, scored for every image, recorded with versions that pin the weights file."""
    from pytest_memorization.testing import write_random_clip, write_random_lpips_backbone

    write_random_lpips_backbone(demo.path / "weights")
    clip = write_random_clip(demo.path / "clip")
    result = demo.runpytest("--memorization", "--memorization-report", "rep", "memorizer",
                            "--memorization-metrics", "tiled_l2,lpips,clip",
                            "--memorization-weights-dir", "weights", "--memorization-clip-pretrained", clip)
    result.assert_outcomes(failed=5)
    report = json.loads((demo.path / "rep" / "report.json").read_text())
    versions = report["run"]["metrics"]
    assert set(versions) == {"tiled_l2", "lpips", "clip"}
    assert "random" not in versions["lpips"] and len(report["results"]) == 20
    for row in report["results"]:
        assert set(row["scores"]) == {"tiled_l2", "lpips", "clip"}
        assert 0 <= row["scores"]["lpips"] and -1 <= row["scores"]["clip"] <= 1
        assert set(row["thresholds"]) == {"tiled_l2"}, "lpips and clip have no default threshold: reported only"

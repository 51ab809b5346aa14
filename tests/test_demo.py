"""The strongest test: on really trained models, the gate fails the memorizer on its five works,
passes its clean twin, the LoRA pre-merge gate fails the face LoRA (its work prompt and its
model-card canaries) and passes the harmless style LoRA. Same project as `make demo`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {"memorizer": ("fail", 5), "clean_twin": ("pass", 5), "lora": ("fail", 3), "style_lora": ("pass", 8)}
ORDER = {"error": 0, "fail": 1, "warn": 2, "pass": 3}


@pytest.fixture
def demo(pytester: pytest.Pytester, demo_models: dict[str, Path]) -> pytest.Pytester:
    for name in ("memorizer", "clean_twin", "lora", "style_lora", "works"):
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
    result.assert_outcomes(failed=8, passed=13)
    report = json.loads((demo.path / "rep" / "report.json").read_text())
    got = outcomes(report)
    for project, (want, count) in EXPECTED.items():
        # a warn passes, as in `make demo` (a score inside its warn band is still a pass)
        assert [("pass" if v == "warn" else v) for v in got[project]] == [want] * count, (project, got[project])
    for row in report["results"]:
        if row["item"].startswith("memorizer/"):
            assert row["work"] == row["item"].split("::")[-1].split("[")[0], "the nearest work must be the memorized one"
        if row["item"].startswith("lora/memorization.toml::face"):
            gate = row["extra"]["lora_gate"]
            assert gate["base_scores"]["tiled_l2"] > 0.15 >= row["scores"]["tiled_l2"]
    result.stdout.fnmatch_lines(["*LoRA gate: prompt 'a photo of sks person', seed 0: tiled_l2 0.0* <= 0.15 against "
                                 "'face' with the LoRA, but not without it (base 0.*): the LoRA makes a copy*"])
    cards = {row["item"].split("::", 1)[1]: row["extra"]["model_card"]["kind"] for row in report["results"]
             if "model_card" in row["extra"]}
    assert cards == {"card[class]": "class", "card[widget-1]": "widget-1", "card[widget-2]": "widget-2"}
    prompts = {row["item"]: row["prompt"] for row in report["results"]}
    assert prompts["lora/memorization.toml::card[class]"] == "a photo of a person", "sks replaced by an article"


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


def test_extraction_amplification_on_the_trained_loras(demo: pytest.Pytester) -> None:
    """lambda 2 under the LoRA gate: the face LoRA's amplified images are still copies of the face on
    every seed (a `lora_gate.amplified.crossed` finding, recorded per row); the style LoRA stays clear.
    Measured (README): the face LoRA is already a copy at weight 1 (0.044-0.050) and overshoots at 2
    (0.090-0.094): amplification does not add detection here, which is why it is off by default."""
    result = demo.runpytest("--memorization", "--memorization-report", "rep", "lora", "style_lora",
                            "--memorization-lora-amplify=2", "--memorization-lora-card-canaries=no")
    result.assert_outcomes(failed=1, passed=6)
    report = json.loads((demo.path / "rep" / "report.json").read_text())
    for row in report["results"]:
        amp = row["extra"]["lora_gate"]["amplified"]
        assert amp["lambda"] == 2
        if row["item"].startswith("lora/"):
            assert amp["scores"]["tiled_l2"] <= 0.15 < row["extra"]["lora_gate"]["base_scores"]["tiled_l2"]
        else:
            assert amp["closest"]["tiled_l2"] > 0.15 * 1.25 and amp["closest"]["ssim"] < 0.5
    result.stdout.fnmatch_lines(["*tiled_l2 0.* <= 0.15 against 'face' with the LoRA amplified x2, but not without "
                                 "it (base 0.*): the LoRA makes a copy*"])

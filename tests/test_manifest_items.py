"""Manifests collected as test items by a real `pytest --memorization` run (pytester)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from gate_projects import COPY_PROMPT, gate_project


@pytest.fixture
def gate(pytester: pytest.Pytester, tiny_pipeline: Path, model_copy_png: bytes) -> pytest.Pytester:
    gate_project(pytester, tiny_pipeline, files={"fox.png": model_copy_png})
    pytester.makefile(".toml", memorization="""
        [model]
        pretrained = "models/tiny"
        seeds = [0, 1]
        steps = 2
        guidance_scale = 7.5
        height = 64
        width = 64

        [thresholds]
        tiled_l2 = 0.15

        [[work]]
        id = "astronaut"
        image = "works/astronaut.png"
        prompts = ["portrait of an astronaut in a white suit", "NASA astronaut photo"]
        paraphrases = 1

        [[work]]
        id = "coffee"
        image = "works/coffee.png"
        prompts = ["a cup of coffee on a saucer"]
    """)
    sub = pytester.mkdir("lora_repo")
    (sub / "memorization.toml").write_text(f"""
[model]
pretrained = "../models/tiny"
seeds = [0]
steps = 2
height = 64
width = 64

[[work]]
id = "fox"
image = "../works/fox.png"
prompts = ["{COPY_PROMPT}"]
""")
    return pytester


def test_items_are_collected_with_ids_and_skipped_without_the_flag(gate: pytest.Pytester) -> None:
    result = gate.runpytest("--co", "-q", "--memorization")
    result.stdout.fnmatch_lines([
        "lora_repo/memorization.toml::fox[[]0]",
        "memorization.toml::astronaut[[]0]", "memorization.toml::astronaut[[]0-p1]",
        "memorization.toml::astronaut[[]1]", "memorization.toml::astronaut[[]1-p1]",
        "memorization.toml::coffee[[]0]", "*6 tests collected*"])
    result = gate.runpytest("-rs")
    result.assert_outcomes(skipped=6)
    result.stdout.fnmatch_lines(["*memorization checks are off: run pytest --memorization*"])


def test_a_copy_fails_with_a_clear_message_and_the_rest_pass(gate: pytest.Pytester) -> None:
    result = gate.runpytest("--memorization", "--memorization-report", "report")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines([
        "*fox[[]0]: 'a photo of a red fox'*",
        "*memorization: 1 of 1 generated images copy a protected work*",
        f"*work 'fox' <- prompt '{COPY_PROMPT}', seed 0: tiled_l2 0.0* <= 0.15 against 'fox'*",
        "*image saved: */report/images/fox_0-*-s0.png (seed 0)*",
    ])
    report = json.loads((gate.path / "report" / "report.json").read_text())
    by_item = {}
    for r in report["results"]:
        by_item.setdefault(r["item"], []).append(r)
        assert (gate.path / "report" / r["image"]).is_file()
    assert len(report["results"]) == 2 * 5 + 1  # 2 seeds x 5 items, 1 seed x 1 item
    assert [r["verdict"] for r in by_item["lora_repo/memorization.toml::fox[0]"]] == ["fail"]
    assert all(r["verdict"] in ("pass", "warn") for k, rs in by_item.items() if "fox" not in k for r in rs)
    assert report["run"]["metrics"]["tiled_l2"].startswith("tiled_l2-v1")


def test_command_line_beats_the_manifest(gate: pytest.Pytester) -> None:
    # seeds override the manifest's; for thresholds the strictest wins (config/policy.py): a
    # tighter command-line threshold is used, a laxer one leaves the manifest's 0.15
    toml = gate.path / "lora_repo" / "memorization.toml"
    toml.write_text(toml.read_text().replace("[[work]]", "[thresholds]\ntiled_l2 = 0.15\n\n[[work]]", 1))
    for given, used in (("0.3", 0.3), ("0.05", 0.15)):
        result = gate.runpytest("--memorization", "--memorization-threshold", f"tiled_l2={given}",
                                "--memorization-metrics", "tiled_l2",
                                "--memorization-seeds", "0", "--memorization-report", "r", "lora_repo")
        result.assert_outcomes(failed=1)
        report = json.loads((gate.path / "r" / "report.json").read_text())
        assert [r["seed"] for r in report["results"]] == [0]
        assert report["results"][0]["thresholds"] == {"tiled_l2": used}


def test_a_bad_manifest_is_a_collection_error_and_nothing_runs(gate: pytest.Pytester) -> None:
    (gate.path / "lora_repo" / "memorization.toml").write_text(
        '[model]\npretrained = "../models/tiny"\n[[work]]\nid = "a"\nimage = "nope.png"\npromts = ["p"]\n')
    result = gate.runpytest("--memorization")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*lora_repo/memorization.toml*unknown key 'promts'; did you mean 'prompts'?*"])
    assert "passed" not in result.stdout.str()


def test_only_manifests_no_python_files(gate: pytest.Pytester) -> None:
    assert not list(gate.path.rglob("*.py"))
    gate.runpytest("--memorization", "--memorization-manifest", "lora_repo/memorization.toml",
                   "lora_repo").assert_outcomes(failed=1)


def test_broken_outputs_are_errors_not_passes(gate: pytest.Pytester, tiny_pipeline: Path) -> None:
    """A VAE that decodes to NaN (what float16 overflow looks like) must be an ERROR, never a pass."""
    import shutil

    from safetensors.torch import load_file, save_file

    broken = gate.path / "broken"
    shutil.copytree(tiny_pipeline, broken)
    vae = broken / "vae" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(vae))
    sd = {k: (torch.full_like(v, float("nan")) if k.startswith("decoder.conv_out") else v) for k, v in sd.items()}
    save_file(sd, str(vae))
    result = gate.runpytest("--memorization", "--memorization-model", str(broken), "lora_repo")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*BrokenOutputError: generated image has NaN or Inf pixels*"])

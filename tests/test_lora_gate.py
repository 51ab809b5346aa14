"""The LoRA pre-merge gate, end to end, with a LoRA trained in the test (pytester, CPU).

A tiny pipeline gets a LoRA trained with ``training.train_lora`` on ONE photo (the LFW face of
``fixtures/works/face.png``, 32 px) for the caption "a photo of sks person". The protected
work is that photo as the tiny model's VAE renders it (decode(encode(photo))): with seeded
random VAE weights the decoder cannot draw the raw photo, so this is the image a LoRA that
memorized the photo would reproduce. The scheduler is SD-2 style (v-prediction, trailing
timesteps), which lets a few hundred CPU steps learn something visible at 2 sampling steps.

The gate must FAIL the run with base-vs-LoRA numbers, pass at ``--memorization-lora-scale 0``,
and take the base images of the second run from the on-disk generation cache.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a photo of sks person"
PX = 32
# Attention projections and resnet convolutions (the defaults) plus the UNet's input/output
# convolutions and time-embedding projections: a LoRA on a randomly initialised tiny UNet needs
# them to learn one image in a few hundred CPU steps.
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "conv1", "conv2",
           "conv_in", "conv_out", "time_emb_proj", "linear_1", "linear_2")
TRAIN = dict(rank=32, steps=200, lr=1e-2, batch_size=4, seed=3)
MEASURED: dict[str, Any] = {}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/base (tiny pipeline), models/lora (trained on the face) and works/face.png."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from peft import get_peft_model_state_dict

    from pytest_memorization import training
    from pytest_memorization.images import load_image
    from pytest_memorization.reports.pngs import save_image
    from pytest_memorization.testing import pipeline_from_components, tiny_components

    out = tmp_path_factory.mktemp("lora_gate")
    comps = tiny_components(seed=0)
    comps["scheduler"] = DDIMScheduler.from_config(
        comps["scheduler"].config, prediction_type="v_prediction", timestep_spacing="trailing")
    pipe = pipeline_from_components(comps)

    def photo(name: str) -> Any:
        return F.interpolate(load_image(ROOT / "fixtures" / "works" / name)[None], size=(PX, PX), mode="area")

    # Unit-variance latents, as Stable Diffusion's scaling factor gives (measured on another photo).
    raw = training.encode_latents(pipe.vae, photo("coffee.png")) / pipe.vae.config.scaling_factor
    pipe.vae.register_to_config(scaling_factor=1.0 / float(raw.std()))
    pipe.save_pretrained(out / "models" / "base", safe_serialization=True)
    face = photo("face.png")
    with torch.no_grad():
        latents = training.encode_latents(pipe.vae, face) / pipe.vae.config.scaling_factor
        rendered = (pipe.vae.decode(latents).sample / 2 + 0.5).clamp(0, 1)[0]
    save_image(rendered, out / "works" / "face.png")
    t0 = time.perf_counter()
    losses = training.train_lora(pipe, face, [PROMPT], target_modules=TARGETS, **TRAIN)  # type: ignore[arg-type]
    MEASURED.update(train_s=round(time.perf_counter() - t0, 1), first_loss=losses[0],
                    last_loss=sum(losses[-20:]) / 20)
    StableDiffusionPipeline.save_lora_weights(
        out / "models" / "lora", unet_lora_layers=get_peft_model_state_dict(pipe.unet), safe_serialization=True)
    return out


@pytest.fixture
def gate(pytester: pytest.Pytester, trained: Path) -> pytest.Pytester:
    for sub in ("models", "works"):
        shutil.copytree(trained / sub, pytester.path / sub)
    pytester.makeini(f"[pytest]\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    pytester.makefile(".toml", memorization=f"""
        [model]
        pretrained = "models/base"
        lora = "models/lora"
        gate = "lora"
        seeds = [0, 1]
        steps = 2
        height = {PX}
        width = {PX}

        [[work]]
        id = "face"
        image = "works/face.png"
        prompts = ["{PROMPT}"]
    """)
    return pytester


def _rows(path: Path) -> list[dict[str, Any]]:
    return json.loads((path / "report.json").read_text())["results"]


def test_the_gate_fails_a_lora_that_learned_a_work_and_passes_it_at_scale_zero(gate: pytest.Pytester) -> None:
    result = gate.runpytest("--memorization", "--memorization-report", "r1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"*LoRA gate: prompt '{PROMPT}', seed *: * toward 'face' with the LoRA (base 0.* -> LoRA 0.*; tolerance *)*"])
    rows = _rows(gate.path / "r1")
    assert [r["verdict"] for r in rows] and all(r["verdict"] == "fail" or "LoRA" not in " ".join(r["reasons"])
                                                 for r in rows)
    assert any(r["verdict"] == "fail" for r in rows)
    for r in rows:
        lg = r["extra"]["lora_gate"]
        assert (gate.path / "r1" / lg["base_image"]).is_file()
        assert (gate.path / "r1" / r["image"]).is_file()
        assert lg["from_cache"] == 0  # first run: the base images were generated
        MEASURED.setdefault("scores", []).append(
            {"seed": r["seed"], "base": lg["base_scores"], "lora": r["scores"]})
    print("measured:", json.dumps(MEASURED))

    # The same LoRA at weight 0 is the base model: nothing moves, the run passes.
    again = gate.runpytest("--memorization", "--memorization-report", "r2", "--memorization-lora-scale", "0")
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines(["*2 base-model images came from the generation cache*"])
    rows2 = _rows(gate.path / "r2")
    assert {r["extra"]["lora_gate"]["from_cache"] for r in rows2} == {2}
    for r in rows2:
        assert r["verdict"] in ("pass", "warn")
        base = r["extra"]["lora_gate"]["base_scores"]
        assert base == pytest.approx(r["scores"], abs=1e-6)
        assert (gate.path / "r2" / r["extra"]["lora_gate"]["base_image"]).is_file()

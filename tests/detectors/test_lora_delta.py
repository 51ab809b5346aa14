"""The LoRA-aware detector on a tiny pipeline with a real PEFT adapter: zero without the adapter's
effect, exact per (prompt, seed), fail closed without a LoRA; and on the demo LoRAs, the figures."""

from __future__ import annotations

import pytest
import torch

from pytest_memorization.detectors import rank_auc
from pytest_memorization.detectors.lora_delta import lora_delta, lora_delta_scores
from pytest_memorization.errors import MemorizationConfigError
from pytest_memorization.records import GenerationSettings

PROMPTS = ["a photo of sks person", "a lighthouse on a cliff at night", "a bowl of soup"]
SEEDS = [0, 3]
GEN = GenerationSettings(steps=8, height=32, width=32)


@pytest.fixture(scope="module")
def lora_pipe():
    from peft import LoraConfig

    from pytest_memorization.testing import pipeline_from_components, tiny_components

    pipe = pipeline_from_components(tiny_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(0)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]), adapter_name="x")
    return pipe


def test_an_adapter_at_weight_zero_changes_nothing(lora_pipe):
    lora_pipe.set_adapters(["x"], adapter_weights=[0.0])
    try:
        scores, maps, _ = lora_delta_scores(lora_pipe, PROMPTS, SEEDS, GEN)
    finally:
        lora_pipe.set_adapters(["x"], adapter_weights=[1.0])
    assert torch.equal(scores, torch.zeros(3, 2)) and float(maps.abs().max()) == 0.0


@pytest.mark.parametrize("kind", ["guidance", "conditional"])
def test_scores_are_exact_per_prompt_and_seed(lora_pipe, kind):
    scores, maps, evals = lora_delta_scores(lora_pipe, PROMPTS, SEEDS, GEN, kind=kind, batch_size=8)
    alone = lora_delta(lora_pipe, PROMPTS[2:], SEEDS[1:], GEN, kind=kind, batch_size=1)
    assert bool((scores > 0).all())
    torch.testing.assert_close(alone[0, 0], scores[2, 1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(maps.pow(2).sum(dim=(2, 3)).sqrt(), scores, rtol=1e-4, atol=1e-6)
    P, S = len(PROMPTS), len(SEEDS)
    assert evals == 2 * (P * S + (S if kind == "guidance" else 0))
    assert not lora_pipe.unet._forward_hooks  # the adapter is back on, nothing left attached
    again = lora_delta(lora_pipe, PROMPTS[2:], SEEDS[1:], GEN, kind=kind)
    torch.testing.assert_close(again, alone)  # the default base context re-enables the adapter


def test_a_model_without_a_lora_is_a_config_error(tiny_pipe, lora_pipe):
    with pytest.raises(MemorizationConfigError, match="lora_delta needs a model with a LoRA"):
        lora_delta(tiny_pipe, PROMPTS, SEEDS, GEN)
    with pytest.raises(MemorizationConfigError, match="kind must be"):
        lora_delta_scores(lora_pipe, PROMPTS, SEEDS, GEN, kind="other")


@pytest.mark.slow
def test_demo_face_lora_figures(demo_models):
    """The face LoRA on the clean twin: the figures quoted in the README (printed, with the one claim
    that holds: its trigger scores above the median ordinary prompt). Every prompt on this LoRA
    reproduces the face (tests/test_trained_models.py), so ordinary prompts are not clean negatives."""
    from diffusers import StableDiffusionPipeline

    from pytest_memorization.detectors import ordinary_prompts

    pipe = StableDiffusionPipeline.from_pretrained(str(demo_models["clean_twin"]), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(demo_models["lora"]), adapter_name="face")
    ordinary = ordinary_prompts()[:20]
    scores = lora_delta(pipe, ["a photo of sks person"] + ordinary, [0, 1],
                        GenerationSettings(steps=20, height=64, width=64), batch_size=16).mean(dim=1).tolist()
    trigger, rest = scores[0], sorted(scores[1:])
    print(f"\nface LoRA: trigger {trigger:.3f}, ordinary median {rest[len(rest) // 2]:.3f} max {rest[-1]:.3f}, "
          f"AUC {rank_auc([trigger], rest):.3f}")
    assert trigger > rest[len(rest) // 2]

"""noise_magnitude draws the pipeline's own x_T, and NoiseRecorder gets the same d from a real generation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pytest_memorization.detectors import NoiseRecorder, initial_latents, noise_magnitude, noise_norms
from pytest_memorization.errors import MemorizationConfigError
from pytest_memorization.records import GenerationSettings

PROMPTS = ["a red apple on a wooden table", "a lighthouse on a cliff at night"]
SEEDS = [0, 7, 123]
GEN = GenerationSettings(steps=8, guidance_scale=7.5, height=32, width=32)
SETTINGS = dict(height=32, width=32, num_inference_steps=8, guidance_scale=7.5)  # the same, as pipeline keywords


def test_initial_latents_equal_the_pipelines(tiny_pipe):
    ours = initial_latents(tiny_pipe, SEEDS, height=32, width=32)
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    theirs = tiny_pipe.prepare_latents(len(SEEDS), 4, 32, 32, torch.float32, torch.device("cpu"), gens)
    assert torch.equal(ours, theirs)


def test_scores_depend_only_on_prompt_seed_and_settings(tiny_pipe):
    all_at_once = noise_magnitude(tiny_pipe, PROMPTS, SEEDS, GEN, steps=2, batch_size=8)
    assert all_at_once.shape == (len(PROMPTS), len(SEEDS))
    assert all_at_once.dtype == torch.float32 and bool((all_at_once > 0).all())
    chunked = noise_magnitude(tiny_pipe, PROMPTS, SEEDS, GEN, steps=2, batch_size=2)
    single = noise_magnitude(tiny_pipe, PROMPTS[1:], SEEDS[2:], GEN, steps=2)
    torch.testing.assert_close(chunked, all_at_once, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(single[0, 0], all_at_once[1, 2], rtol=1e-5, atol=1e-6)
    # different seeds give different latents, hence different scores
    assert len(set(all_at_once[0].tolist())) == len(SEEDS)


def test_pipeline_scheduler_is_left_alone(tiny_pipe):
    before = tiny_pipe.scheduler.timesteps.clone() if tiny_pipe.scheduler.timesteps is not None else None
    noise_magnitude(tiny_pipe, PROMPTS[:1], [0], GEN, steps=2)
    after = tiny_pipe.scheduler.timesteps
    assert (before is None and after is None) or torch.equal(before, after)


@pytest.mark.parametrize("negative_prompt", [None, "blurry, low quality"])
def test_recorder_equals_noise_magnitude(tiny_pipe, negative_prompt):
    steps = 3
    expected = noise_norms(tiny_pipe, PROMPTS, SEEDS, dataclasses.replace(GEN, negative_prompt=negative_prompt),
                          steps=steps)
    with NoiseRecorder(tiny_pipe, steps=steps) as rec:
        # the plugin's layout: prompt-major, one generator per image
        tiny_pipe(
            [p for p in PROMPTS for _ in SEEDS],
            negative_prompt=None if negative_prompt is None else [negative_prompt] * (len(PROMPTS) * len(SEEDS)),
            generator=[torch.Generator().manual_seed(s) for _ in PROMPTS for s in SEEDS],
            output_type="latent",
            **SETTINGS,
        )
        # a second pipeline call in the same block appends its images
        tiny_pipe(
            PROMPTS[0],
            negative_prompt=negative_prompt,
            generator=[torch.Generator().manual_seed(SEEDS[0])],
            output_type="latent",
            **SETTINGS,
        )
    got = rec.per_step()
    assert got.shape == (len(PROMPTS) * len(SEEDS) + 1, steps)
    torch.testing.assert_close(got[:-1], expected.reshape(-1, steps), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[-1], expected[0, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rec.scores()[:-1], expected.mean(2).reshape(-1), rtol=1e-4, atol=1e-5)


def test_recorder_refuses_runs_without_guidance(tiny_pipe):
    with pytest.raises(MemorizationConfigError, match="guidance_scale > 1"):
        with NoiseRecorder(tiny_pipe, steps=1):
            tiny_pipe(PROMPTS[0], generator=torch.Generator().manual_seed(0), output_type="latent",
                      height=32, width=32, num_inference_steps=2, guidance_scale=1.0)
    assert not tiny_pipe.unet._forward_hooks  # the hook is removed even on error


def test_recorder_needs_enough_steps(tiny_pipe):
    with NoiseRecorder(tiny_pipe, steps=3) as rec:
        tiny_pipe(PROMPTS[0], generator=torch.Generator().manual_seed(0), output_type="latent",
                  height=32, width=32, num_inference_steps=2, guidance_scale=7.5)
    with pytest.raises(MemorizationConfigError, match="fewer than steps=3"):
        rec.scores()


@pytest.mark.parametrize(
    ("settings", "steps", "message"),
    [
        (dict(height=31), 1, "multiples of 2"),
        ({}, 0, "between 1 and"),
        ({}, 9, "between 1 and the generation's 8 steps"),
    ],
)
def test_bad_settings_are_config_errors(tiny_pipe, settings, steps, message):
    with pytest.raises(MemorizationConfigError, match=message):
        noise_magnitude(tiny_pipe, PROMPTS, [0], dataclasses.replace(GEN, **settings), steps=steps)


def test_the_negative_prompt_is_the_unconditional_branch(tiny_pipe):
    """A negative prompt changes d (it is what guidance subtracts), and d with the empty negative
    prompt is d without one."""
    plain = noise_magnitude(tiny_pipe, PROMPTS, SEEDS, GEN)
    negative = noise_magnitude(tiny_pipe, PROMPTS, SEEDS, dataclasses.replace(GEN, negative_prompt="blurry"))
    assert float((plain - negative).abs().min()) > 1e-3, (plain, negative)
    torch.testing.assert_close(noise_magnitude(tiny_pipe, PROMPTS, SEEDS, dataclasses.replace(GEN, negative_prompt="")),
                               plain)


def test_the_schedule_is_generations(tiny_pipe):
    """steps > 1 walks generation's own schedule: another step count is another trajectory."""
    at_8 = noise_norms(tiny_pipe, PROMPTS[:1], SEEDS, GEN, steps=2)
    at_25 = noise_norms(tiny_pipe, PROMPTS[:1], SEEDS, dataclasses.replace(GEN, steps=25), steps=2)
    assert float((at_8 - at_25).abs().max()) > 1e-3

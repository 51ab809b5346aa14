"""The zero-step detector: exact against Wen's first step, shared unconditional passes, cost, calibration,
fail-closed, and evidence on the tiny pipeline trained in this session to memorize four images."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pytest_memorization.detectors import calibrate, noise_norms, rank_auc
from pytest_memorization.detectors.zero_step import to_epsilon, zero_step, zero_step_scores
from pytest_memorization.errors import MemorizationConfigError
from pytest_memorization.records import GenerationSettings

PROMPTS = ["a red apple on a wooden table", "a lighthouse on a cliff at night", "a bowl of soup"]
SEEDS = [0, 7, 123]
GEN = GenerationSettings(steps=8, height=32, width=32)


class UnetCalls:
    """Counts UNet image evaluations (the batch size of every forward call)."""

    def __init__(self, pipe):
        self.pipe, self.images = pipe, 0

    def __enter__(self):
        def hook(module, args, kwargs, output):
            self.images += (args[0] if args else kwargs["sample"]).shape[0]
        self.handle = self.pipe.unet.register_forward_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_the_norm_term_is_wens_first_step(tiny_pipe):
    z = zero_step_scores(tiny_pipe, PROMPTS, SEEDS, GEN)
    wen = noise_norms(tiny_pipe, PROMPTS, SEEDS, GEN, steps=1)[..., 0]
    torch.testing.assert_close(z.norm, wen, rtol=1e-4, atol=1e-5)  # epsilon model, same x_T, same t
    side = 32 // tiny_pipe.vae_scale_factor
    assert z.score.shape == z.align.shape == (3, 3) and z.maps.shape == (3, 3, side, side)
    assert bool((z.align.abs() <= 1).all())
    torch.testing.assert_close(z.score, z.norm + 2.0 * z.align)
    # the map is the per-pixel split of the norm: its squares sum to the norm's square
    torch.testing.assert_close(z.maps.pow(2).sum(dim=(2, 3)).sqrt(), z.norm, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("timesteps", [1, 2])
def test_scores_do_not_depend_on_the_batch_or_the_other_prompts(tiny_pipe, timesteps):
    together = zero_step_scores(tiny_pipe, PROMPTS, SEEDS, GEN, timesteps=timesteps, batch_size=8)
    alone = zero_step_scores(tiny_pipe, PROMPTS[1:2], SEEDS[2:], GEN, timesteps=timesteps, batch_size=1)
    torch.testing.assert_close(alone.score[0, 0], together.score[1, 2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone.align[0, 0], together.align[1, 2], rtol=1e-4, atol=1e-5)


def test_two_timesteps_measure_the_alignment_elsewhere(tiny_pipe):
    one = zero_step_scores(tiny_pipe, PROMPTS, SEEDS, GEN, timesteps=1)
    two = zero_step_scores(tiny_pipe, PROMPTS, SEEDS, GEN, timesteps=2)
    torch.testing.assert_close(one.norm, two.norm)
    assert not torch.allclose(one.align, two.align)


def test_cost_is_below_one_unet_step_per_seed(tiny_pipe):
    """Wen et al.'s one step evaluates the UNet twice per (prompt, seed) (conditional + unconditional);
    the zero-step detector once, plus one unconditional evaluation per seed shared by the prompts."""
    P, S = len(PROMPTS), len(SEEDS)
    with UnetCalls(tiny_pipe) as zero:
        z = zero_step_scores(tiny_pipe, PROMPTS, SEEDS, GEN)
    with UnetCalls(tiny_pipe) as wen:
        noise_norms(tiny_pipe, PROMPTS, SEEDS, GEN, steps=1)
    assert zero.images == z.unet_evals == P * S + S
    assert wen.images == 2 * P * S
    print(f"\nUNet image evaluations per (prompt, seed): zero-step {zero.images / (P * S):.2f}, "
          f"Wen one step {wen.images / (P * S):.2f}")
    assert zero.images < wen.images
    with UnetCalls(tiny_pipe) as paper:
        z2 = zero_step_scores(tiny_pipe, PROMPTS, SEEDS, GEN, timesteps=2)
    assert paper.images == z2.unet_evals == 2 * (P * S + S)


def test_one_prompt_items_share_the_unconditional_passes(tiny_pipe):
    """The gate scores one prompt per item: with the session's cache the second item on the same seeds
    makes only its conditional evaluations, and its scores are those of an uncached call."""
    cache: dict = {}
    with UnetCalls(tiny_pipe) as first:
        zero_step_scores(tiny_pipe, PROMPTS[:1], SEEDS, GEN, uncond_cache=cache)
    with UnetCalls(tiny_pipe) as second:
        cached = zero_step_scores(tiny_pipe, PROMPTS[1:2], SEEDS, GEN, uncond_cache=cache)
    assert first.images == 2 * len(SEEDS)  # the first item: exactly one CFG step per seed
    assert second.images == cached.unet_evals == len(SEEDS)  # later items: half a step per seed
    fresh = zero_step_scores(tiny_pipe, PROMPTS[1:2], SEEDS, GEN)
    torch.testing.assert_close(cached.score, fresh.score)
    ten = dataclasses.replace(GEN, steps=10)  # another schedule is another key, never a stale hit
    other = zero_step_scores(tiny_pipe, PROMPTS[1:2], SEEDS, ten, uncond_cache=cache)
    torch.testing.assert_close(other.score, zero_step_scores(tiny_pipe, PROMPTS[1:2], SEEDS, ten).score)
    negative = dataclasses.replace(GEN, negative_prompt="blurry")  # another unconditional branch, too
    with UnetCalls(tiny_pipe) as third:
        zero_step_scores(tiny_pipe, PROMPTS[1:2], SEEDS, negative, uncond_cache=cache)
    assert third.images == 2 * len(SEEDS)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_to_epsilon_inverts_each_parameterisation(tiny_pipe, kind):
    sch = type(tiny_pipe.scheduler).from_config(tiny_pipe.scheduler.config, prediction_type=kind)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    t = torch.tensor(601)
    xt = sch.add_noise(x0, eps, t)
    a = sch.alphas_cumprod[601]
    out = {"epsilon": eps, "sample": x0, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0}[kind]
    torch.testing.assert_close(to_epsilon(sch, out, xt, t), eps, rtol=1e-4, atol=1e-4)


def test_bad_settings_are_config_errors(tiny_pipe):
    with pytest.raises(MemorizationConfigError, match="timesteps must be 1"):
        zero_step_scores(tiny_pipe, PROMPTS, SEEDS, GEN, timesteps=3)
    with pytest.raises(MemorizationConfigError, match="at least 3 steps"):
        zero_step_scores(tiny_pipe, PROMPTS, SEEDS, dataclasses.replace(GEN, steps=2))


def test_nan_outputs_fail_calibration_closed(tiny_pipe):
    handle = tiny_pipe.unet.register_forward_hook(lambda m, a, o: (o[0] * float("nan"),) if isinstance(o, tuple)
                                                  else type(o)(sample=o.sample * float("nan")))
    try:
        with pytest.raises(MemorizationConfigError, match="zero step of 3 ordinary prompt"):
            calibrate(tiny_pipe, PROMPTS, [0], GEN, scorer=zero_step, detector="zero_step")
    finally:
        handle.remove()


def test_calibration_records_the_detector_and_its_weights(tiny_pipe, tmp_path):
    from pytest_memorization.detectors import load_calibration, save_calibration
    from pytest_memorization.detectors.calibration import calibration_path

    cal = calibrate(tiny_pipe, PROMPTS, [0], GEN, scorer=zero_step, detector="zero_step", target_fpr=0.34,
                    extra_settings={"norm_weight": 1.0, "align_weight": 2.0})
    scores = zero_step(tiny_pipe, PROMPTS, [0], GEN).mean(dim=1).tolist()
    assert cal.threshold == pytest.approx(sorted(scores)[1]) and cal.detector == "zero_step"
    path = calibration_path(tmp_path / "cal.json", "zero_step")
    assert path.name == "cal.zero_step.json"
    save_calibration(path, cal)
    assert load_calibration(path, fingerprint="", detector="zero_step").threshold == cal.threshold
    with pytest.raises(MemorizationConfigError, match="does not calibrate noise_magnitude"):
        load_calibration(path, fingerprint="")
    with pytest.raises(MemorizationConfigError, match="align_weight 2.0 -> 0.5"):
        cal.check_compatible(steps=1, settings={"align_weight": 0.5})


@pytest.mark.slow
@pytest.mark.parametrize("timesteps", [1, 2])
def test_memorized_captions_score_higher(memorized_pipe, timesteps):
    """Evidence on the model trained here (not tuned: the paper's weights, the noise-magnitude test's bar)."""
    def scores(prompts):
        z = zero_step_scores(memorized_pipe.pipe, prompts, [0, 1, 2], memorized_pipe.gen, timesteps=timesteps)
        return z.score.mean(dim=1).tolist(), z.norm.mean(dim=1).tolist(), z.align.mean(dim=1).tolist()

    mem, held = scores(memorized_pipe.memorized), scores(memorized_pipe.heldout)
    aucs = [rank_auc(m, h) for m, h in zip(mem, held)]
    print(f"\ntimesteps={timesteps}: AUC score {aucs[0]:.3f}, norm term {aucs[1]:.3f}, align term {aucs[2]:.3f}; "
          f"memorized {[round(v, 3) for v in mem[0]]}, held-out max {max(held[0]):.3f}")
    assert aucs[0] >= 0.9

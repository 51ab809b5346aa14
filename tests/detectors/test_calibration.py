"""Calibration: quantile, honest FPR resolution, atomic JSON round trip, model mismatch."""

from __future__ import annotations

import json

import pytest

from pytest_memorization.detectors import (
    Calibration,
    calibrate,
    load_calibration,
    ordinary_prompts,
    save_calibration,
)
from pytest_memorization.detectors.calibration import inverted_cdf_quantile, settings_record
from pytest_memorization.detectors.common import scheduler_identity
from pytest_memorization.errors import MemorizationConfigError
from pytest_memorization.records import GenerationSettings

GEN = GenerationSettings(steps=10, guidance_scale=7.5, height=16, width=16)


def test_bundled_prompts():
    prompts = ordinary_prompts()
    assert 90 <= len(prompts) <= 120
    assert len(set(prompts)) == len(prompts)
    assert all(p and not p.startswith("#") for p in prompts)


def test_prompts_file(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# mine\n\na cat\n  a dog  \n")
    assert ordinary_prompts(f) == ["a cat", "a dog"]
    with pytest.raises(MemorizationConfigError, match="missing.txt"):
        ordinary_prompts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(MemorizationConfigError, match="no prompts"):
        ordinary_prompts(tmp_path / "empty.txt")


def test_inverted_cdf_quantile():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert inverted_cdf_quantile(values, 0.99) == 99.0  # exactly one of 100 above
    assert inverted_cdf_quantile(values, 0.95) == 95.0
    assert inverted_cdf_quantile(values[:10], 0.99) == 10.0  # too few: the maximum
    np = pytest.importorskip("numpy")
    for q in (0.5, 0.9, 0.99):
        assert inverted_cdf_quantile(values[:37], q) == float(np.quantile(values[:37], q, method="inverted_cdf"))


def test_calibrate_round_trip_and_mismatch(tiny_pipe, tmp_path):
    prompts = ordinary_prompts()[:12]
    with pytest.warns(UserWarning, match="resolved in steps of 1/12"):
        cal = calibrate(tiny_pipe, prompts, [0, 1], GEN, target_fpr=0.01, fingerprint="tiny-sha256:abc")
    assert cal.n_prompts == 12 and cal.fpr_resolution == pytest.approx(1 / 12)
    assert cal.threshold == pytest.approx(cal.scores["max"])  # too few prompts: the largest score
    assert cal.empirical_fpr == 0.0 and "only 12 prompts" in cal.note
    assert cal.settings == dict(guidance_scale=7.5, height=16, width=16, num_inference_steps=10, negative_prompt=None,
                                scheduler=scheduler_identity(tiny_pipe))
    assert cal.settings == settings_record(tiny_pipe, GEN)  # what a run compares it with

    cal20 = calibrate(tiny_pipe, ordinary_prompts()[:20], [0], GEN, target_fpr=0.1, fingerprint="x")
    assert cal20.empirical_fpr == pytest.approx(0.1) and cal20.note == ""  # 2 of 20 above, as targeted
    assert cal20.flags(cal20.scores["max"]) and not cal20.flags(cal20.threshold)

    path = save_calibration(tmp_path / "sub" / "cal.json", cal)
    assert [p.name for p in path.parent.iterdir()] == ["cal.json"]  # no temporary file left
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 1 and raw["fingerprint"] == "tiny-sha256:abc"
    assert load_calibration(path, fingerprint="tiny-sha256:abc") == cal

    with pytest.raises(MemorizationConfigError) as err:
        load_calibration(path, fingerprint="other-model")
    msg = str(err.value)
    assert "tiny-sha256:abc" in msg and "other-model" in msg and "--memorization-calibrate" in msg and str(path) in msg


def test_load_errors(tmp_path):
    with pytest.raises(MemorizationConfigError, match="--memorization-calibrate"):
        load_calibration(tmp_path / "nope.json", fingerprint="m")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MemorizationConfigError, match="cannot read"):
        load_calibration(bad, fingerprint="m")
    bad.write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(MemorizationConfigError, match="schema_version"):
        load_calibration(bad, fingerprint="m")
    bad.write_text(json.dumps({"schema_version": 1, "threshold": 1.0}))
    with pytest.raises(MemorizationConfigError, match="missing key"):
        load_calibration(bad, fingerprint="m")


def test_check_compatible():
    cal = Calibration(threshold=1.0, target_fpr=0.01, n_prompts=100, seeds=[0], steps=1,
                      settings=dict(height=512, width=512, guidance_scale=7.5), fingerprint="m",
                      scores=dict(mean=0.5, std=0.1, min=0.2, max=1.1), empirical_fpr=0.01, fpr_resolution=0.01)
    cal.check_compatible(steps=1, settings=dict(height=512, width=512, guidance_scale=7.5))
    with pytest.raises(MemorizationConfigError, match="height 512 -> 768.*--memorization-calibrate"):
        cal.check_compatible(steps=1, settings=dict(height=768, width=512))


def test_a_threshold_applies_only_to_generations_schedule_and_negative_prompt(tiny_pipe):
    """The settings a run compares are generation's: its step count, its scheduler (class and
    config) and its negative prompt; a file that does not record one of them is refused too."""
    import dataclasses

    from diffusers import EulerDiscreteScheduler

    cal = Calibration(threshold=1.0, target_fpr=0.1, n_prompts=10, seeds=[0], steps=1,
                      settings=settings_record(tiny_pipe, GEN), fingerprint="m",
                      scores=dict(mean=0.5, std=0.1, min=0.2, max=1.1), empirical_fpr=0.1, fpr_resolution=0.1)
    cal.check_compatible(steps=1, settings=settings_record(tiny_pipe, GEN))
    with pytest.raises(MemorizationConfigError, match="num_inference_steps 10 -> 25"):
        cal.check_compatible(steps=1, settings=settings_record(tiny_pipe, dataclasses.replace(GEN, steps=25)))
    with pytest.raises(MemorizationConfigError, match="negative_prompt None -> 'blurry'"):
        cal.check_compatible(steps=1, settings=settings_record(tiny_pipe, dataclasses.replace(GEN,
                                                                                              negative_prompt="blurry")))
    euler = type("P", (), {"scheduler": EulerDiscreteScheduler.from_config(tiny_pipe.scheduler.config)})()
    with pytest.raises(MemorizationConfigError, match="scheduler 'DDIMScheduler:.*' -> 'EulerDiscreteScheduler:"):
        cal.check_compatible(steps=1, settings=settings_record(euler, GEN))
    old = dataclasses.replace(cal, settings={k: v for k, v in cal.settings.items() if k != "scheduler"})
    with pytest.raises(MemorizationConfigError, match=r"scheduler \(not recorded\)"):
        old.check_compatible(steps=1, settings=settings_record(tiny_pipe, GEN))

"""The policy applied to settings and manifests, without generating (the real runs are in test_pr_gate.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pytest_memorization.config.settings import for_tests
from pytest_memorization.config.trust import Policy, TrustedWaiver, apply_to_settings, load_policy
from pytest_memorization.errors import ManifestError, MemorizationConfigError
from pytest_memorization.manifest.load import load_manifest
from pytest_memorization.manifest.policy import PolicyWarning, apply_policy

SHA = "ab" * 32


def _manifest(tmp_path: Path, text: str) -> object:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "memorization.toml").write_text(text)
    return load_manifest(tmp_path / "memorization.toml", check_images=False, require_model=False)


WORK = f'[[work]]\nid = "fox"\nimage = "fox.png"\nsha256 = "{SHA}"\nprompts = ["a fox"]\n'


def test_without_a_policy_the_built_in_thresholds_are_floors(tmp_path: Path) -> None:
    m = _manifest(tmp_path, "[thresholds]\ntiled_l2 = 0.001\nssim = 0.3\n" + WORK
                  + "thresholds = { tiled_l2 = 0.2, ssim = 0.99 }\n")
    out = apply_policy(m, for_tests())
    assert out.thresholds == {"tiled_l2": 0.15, "ssim": 0.3}  # relaxed -> the floor; tightened -> kept
    assert out.works[0].thresholds == {"tiled_l2": 0.2, "ssim": 0.5}
    assert m.thresholds == {"tiled_l2": 0.001, "ssim": 0.3}  # the loaded manifest is not changed


def test_a_policy_adds_its_metrics_and_floors_and_drops_the_manifests_waiver(tmp_path: Path) -> None:
    m = _manifest(tmp_path, 'metrics = ["pdq"]\n' + WORK + 'waive = { reason = "ours", until = 9999-12-31 }\n')
    policy = Policy(path=tmp_path / "policy.toml", metrics=("ssim",), thresholds={"tiled_l2": 0.1})
    with pytest.warns(PolicyWarning, match="waiver of work 'fox' was not applied"):
        out = apply_policy(m, for_tests(policy=policy))
    assert out.metrics == ["pdq", "ssim", "tiled_l2"]
    assert out.thresholds == {"tiled_l2": 0.1}
    assert out.works[0].waive is None


def test_a_policy_waiver_counts_only_for_the_work_with_its_image(tmp_path: Path) -> None:
    m = _manifest(tmp_path, WORK)
    until = dt.date.today() + dt.timedelta(days=10)
    granted = TrustedWaiver(work="fox", sha256=SHA, reason="licensed\x1b[31m", until=until)
    other = TrustedWaiver(work="fox", sha256="cd" * 32, reason="another image", until=until)
    out = apply_policy(m, for_tests(policy=Policy(path=tmp_path / "p.toml", waivers=(other,))))
    assert out.works[0].waive is None
    out = apply_policy(m, for_tests(policy=Policy(path=tmp_path / "p.toml", waivers=(granted,))))
    assert out.works[0].waive.until == until and "\x1b" not in out.works[0].waive.reason
    with pytest.raises(ManifestError, match="longer than the policy's 5 days"):
        apply_policy(m, for_tests(policy=Policy(path=tmp_path / "p.toml", waivers=(granted,), max_waiver_days=5)))
    with pytest.warns(PolicyWarning, match="allows no waivers"):
        out = apply_policy(m, for_tests(policy=Policy(path=tmp_path / "p.toml", waivers=(granted,),
                                                      waivers_allowed=False)))
    assert out.works[0].waive is None


def test_the_policy_fixes_the_lora_scale_and_floors_the_command_line(tmp_path: Path) -> None:
    policy = Policy(path=tmp_path / "p.toml", lora_scale=1.0, thresholds={"ssim": 0.5}, min_seeds=3)
    values = {"threshold": {"ssim": 0.9, "tiled_l2": 0.2}, "metrics": ["pdq"], "lora_scale": 1.0, "lora_gate": False,
              "seeds": None, "steps": None}
    explicit: set[str] = set()
    apply_to_settings(policy, values, explicit)
    assert values["threshold"] == {"ssim": 0.5, "tiled_l2": 0.2} and values["metrics"] == ["pdq", "ssim"]
    assert "lora_scale" in explicit  # so a manifest's lora_scale = 0.01 is not picked
    with pytest.raises(MemorizationConfigError, match="gates at LoRA scale 1"):
        apply_to_settings(policy, {**values, "lora_scale": 0.01}, {"lora_scale"})
    with pytest.raises(MemorizationConfigError, match="2 seed"):
        apply_to_settings(policy, {**values, "seeds": [0, 1]}, set())


def test_a_manifest_waiver_with_a_time_zone_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="waive.until'.*is a date-time"):
        _manifest(tmp_path, WORK + 'waive = { reason = "x", until = 2027-01-01T00:00:00-12:00 }\n')


def test_a_waiver_file_is_strict(tmp_path: Path) -> None:
    (tmp_path / "w.toml").write_text('[[waiver]]\nwork = "fox"\nsha256 = "x"\nreason = "r"\nuntil = 2027-01-01\n')
    (tmp_path / "p.toml").write_text('[waivers]\nfile = "w.toml"\n')
    with pytest.raises(MemorizationConfigError, match=r"w.toml: key 'waiver\[0\].sha256'"):
        load_policy(tmp_path / "p.toml")


def test_a_policys_detectors_run_on_every_manifest_they_apply_to(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text('[detectors]\nsubject_concentration = { seeds = [0, 1, 2, 3] }\n'
                                          'seed_diversity = {}\n')
    policy = load_policy(tmp_path / "policy.toml")
    assert policy.detectors == {"subject_concentration": {"seeds": [0, 1, 2, 3]}, "seed_diversity": {}}
    settings = for_tests(policy=policy)
    lora = _manifest(tmp_path, '[model]\npretrained = "base"\nlora = "lora"\n[detectors]\n'
                     'subject_concentration = { seeds = [0, 1], gate = false }\nseed_diversity = { gate = true }\n'
                     + WORK)
    out = apply_policy(lora, settings)
    # the policy's seeds win, the manifest cannot turn the gate off, but may turn one on
    assert out.detectors == {"subject_concentration": {"seeds": [0, 1, 2, 3]}, "seed_diversity": {"gate": True}}
    assert lora.detectors["subject_concentration"]["gate"] is False  # the loaded manifest is not changed
    plain = _manifest(tmp_path, '[model]\npretrained = "base"\n' + WORK)
    assert apply_policy(plain, settings).detectors == {"seed_diversity": {}}  # no LoRA: no subject detector


@pytest.mark.parametrize(("text", "key", "pattern"), [
    ("subject_concentration = { threshold = 0.2 }", "detectors.subject_concentration.threshold",
     "calibration file listed in \\[trust\\] calibrations"),
    ("subject = {}", "detectors.subject", "unknown detector; known detectors: noise_magnitude"),
    ("subject_concentration = { seeds = [0, -1] }", "detectors.subject_concentration.seeds", "array of seeds"),
    ("subject_concentration = { gate = 1 }", "detectors.subject_concentration.gate", "not true or false"),
    ("seed_diversity = { seeds = [0, 1] }", "detectors.seed_diversity.seeds", "seed_diversity takes gate"),
    ("subject_concentration = true", "detectors.subject_concentration", "expected a table"),
])
def test_a_policys_detectors_are_strict(tmp_path: Path, text: str, key: str, pattern: str) -> None:
    (tmp_path / "policy.toml").write_text(f"[detectors]\n{text}\n")
    with pytest.raises(MemorizationConfigError, match=f"policy.toml: key '{key}': .*{pattern}"):
        load_policy(tmp_path / "policy.toml")

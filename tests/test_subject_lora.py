"""A LoRA of a person no catalogue lists, caught without a reference: the subject-concentration
detector through the LoRA gate, on really trained demo models.

The subject LoRA (``demo.subject``: the LFW face under the trigger ``olis``, trained with
prior-preservation replay) copies the face under its trigger and not under class or ordinary
prompts; the style LoRA turns every image sepia. The manifest lists a work (the astronaut), but
not the face. Honest split: the threshold is calibrated by the plugin itself
(``--memorization-calibrate``) on ordinary prompts ``CALIBRATION`` with seeds 100-101; the gate
then runs on other prompts (the LoRAs' model-card prompts and the held-out ordinary prompts
``HELD_OUT`` as canaries) with seeds 0-1. Nothing here is tuned to the positives.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
N_CALIBRATION = 16
N_HELD_OUT = 6
MEASURED: dict[str, object] = {}


@pytest.fixture(scope="session")
def subject_models(demo_models: dict[str, Path]) -> dict[str, Path]:
    """The demo models plus the subject LoRA (its own build stamp; cached like the others)."""
    from demo.subject import NAME, build_subject

    return {**demo_models, NAME: build_subject(demo_models["clean_twin"].parent, demo_models["clean_twin"])}


def _project(pytester: pytest.Pytester, models: dict[str, Path], lora: str) -> Path:
    from pytest_memorization.detectors import ordinary_prompts

    for name in ("clean_twin", lora):
        shutil.copytree(models[name], pytester.path / "models" / name)
    shutil.copy(ROOT / "fixtures" / "works" / "astronaut.png", pytester.path / "astronaut.png")
    prompts = ordinary_prompts()
    (pytester.path / "calibration_prompts.txt").write_text("\n".join(prompts[:N_CALIBRATION]) + "\n")
    canaries = "".join(f'\n[[canary]]\nprompt = "{p}"\n' for p in prompts[-N_HELD_OUT:])
    (pytester.path / "memorization.toml").write_text(f"""
[model]
pretrained = "models/clean_twin"
lora = "models/{lora}"
gate = "lora"
seeds = [0, 1]
steps = 20
guidance_scale = 1.5
height = 64
width = 64

[detectors]
subject_concentration = {{}}

[[work]]
id = "astronaut"
image = "astronaut.png"
prompts = ["a photo of an astronaut in a white suit"]
{canaries}""")
    (pytester.path / "pytest.ini").write_text(
        f"[pytest]\nmemorization_device = cpu\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    return pytester.path


def _calibrate_and_gate(pytester: pytest.Pytester) -> dict:
    cal = pytester.runpytest("--memorization", "--memorization-calibrate", "--memorization-calibration", "cal.json",
                             "--memorization-calibration-prompts", "calibration_prompts.txt",
                             "--memorization-seeds", "100-101", "-W", "ignore::UserWarning")
    assert cal.ret == 0, cal.stdout.str()
    calib = json.loads((pytester.path / "cal.subject_concentration.json").read_text())
    pytester.runpytest("--memorization", "--memorization-calibration", "cal.json", "--memorization-report", "rep")
    report = json.loads((pytester.path / "rep" / "report.json").read_text())
    report["calibration"] = calib
    return report


def _concentration(report: dict) -> dict[str, dict]:
    """item -> (its subject_concentration finding or None, its detector entry)."""
    out: dict[str, dict] = {}
    for row in report["results"]:
        entry = row["detectors"].get("subject_concentration")
        finding = next((f for f in row["findings"] if f["rule"] == "subject_concentration"), None)
        item = row["item"].split("::", 1)[1]
        out.setdefault(item, {"prompt": row["prompt"], "entry": entry, "finding": finding, "rows": []})["rows"].append(row)
    return out


@pytest.mark.slow
def test_subject_lora_is_reported_without_a_listed_work(pytester: pytest.Pytester,
                                                         subject_models: dict[str, Path]) -> None:
    _project(pytester, subject_models, "subject_lora")
    report = _calibrate_and_gate(pytester)
    got = _concentration(report)
    thr = report["calibration"]["threshold"]
    scores = {item: round(v["entry"]["score"], 4) for item, v in got.items()}
    print(f"subject LoRA: threshold {thr:.4f}; scores {json.dumps(scores, indent=1)}")
    MEASURED["subject"] = (thr, scores)
    trigger = got["card[instance]"]
    assert trigger["prompt"] == "a photo of olis person"
    assert trigger["finding"] is not None and trigger["finding"]["severity"] == "fail", trigger["entry"]
    assert "draws one subject" in trigger["finding"]["message"]
    for row in trigger["rows"]:  # the images that agree are the rows' own images: the reviewer sees the face
        assert row["verdict"] == "fail" and row["image"], row
        assert row["detectors"]["subject_concentration"]["image_agreement"] > 0
    assert got["card[class]"]["finding"] is None, ("the class prompt must not fire", got["card[class]"]["entry"])
    held_out = [v for k, v in got.items() if k.startswith("canary")]
    assert len(held_out) == N_HELD_OUT
    fired = [v["prompt"] for v in held_out if v["finding"] is not None]
    assert len(fired) <= 1, f"held-out ordinary prompts flagged: {fired}"


@pytest.mark.slow
def test_style_lora_reports_no_subject(pytester: pytest.Pytester, subject_models: dict[str, Path]) -> None:
    _project(pytester, subject_models, "style_lora")
    report = _calibrate_and_gate(pytester)
    got = _concentration(report)
    thr = report["calibration"]["threshold"]
    scores = {item: round(v["entry"]["score"], 4) for item, v in got.items()}
    print(f"style LoRA: threshold {thr:.4f}; scores {json.dumps(scores, indent=1)}")
    MEASURED["style"] = (thr, scores)
    widgets = [v for k, v in got.items() if k.startswith("card[widget")]
    assert widgets, sorted(got)
    for item, v in got.items():
        assert v["finding"] is None, (item, v["entry"])


def test_agreement_ignores_colour_and_contrast_not_structure() -> None:
    """Weight-free structure: a sepia, darker or flatter copy of an image agrees with it fully; another
    scene does not."""
    import torch

    from demo.data import sepia
    from pytest_memorization.detectors.subject_concentration import agreement

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 64, 64, generator=g)
    same, _ = agreement(torch.stack([a, sepia(a[None])[0], 0.3 + 0.4 * a]))
    other, per = agreement(torch.stack([a, b]))
    assert same > 0.98 and abs(other) < 0.2 and per.shape == (2,)


def test_subject_concentration_rule_through_the_judge() -> None:
    from pytest_memorization.judging.judge import Measured, judge, make_rules
    from pytest_memorization.records import DetectorScore

    rules = make_rules({}, {}, {}, 0.0, {})

    def run(score: float, gate: bool = True) -> tuple[list[str], list]:
        d = DetectorScore("subject_concentration", "a photo of olis person", score, 0.2, True, gate=gate,
                          n_images=8, agreement=(0.9, 0.4))
        out = judge(Measured("x", ["a photo of olis person"] * 2, [0, 1], detectors=[d]), rules)
        return [r.verdict for r in out.results], [f for f in out.findings if f.rule == "subject_concentration"]

    verdicts, found = run(0.5)
    assert verdicts == ["fail", "fail"] and "draws one subject" in found[0].message and "0.900" in found[0].message
    assert run(0.5, gate=False)[0] == ["warn", "warn"]
    assert run(0.1) == (["pass", "pass"], [])
    assert run(float("nan"))[0] == ["error", "error"]


TINY_MODEL = """
[model]
pretrained = "models/tiny"
{lora}
seeds = [0, 1]
steps = 2
height = 64
width = 64
"""
TINY = TINY_MODEL + """
[detectors]
subject_concentration = {{ threshold = 0.0{gate} }}

[[canary]]
id = "sks"
prompt = "a photo of sks person"
"""


@pytest.fixture
def tiny_project(pytester: pytest.Pytester, tiny_pipeline: Path, tiny_lora: Path) -> pytest.Pytester:
    shutil.copytree(tiny_pipeline, pytester.path / "models" / "tiny")
    shutil.copytree(tiny_lora, pytester.path / "models" / "lora")
    (pytester.path / "tox.ini").write_text(f"[pytest]\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    return pytester


def test_without_a_lora_it_is_an_error(tiny_project: pytest.Pytester) -> None:
    (tiny_project.path / "memorization.toml").write_text(TINY.format(lora="", gate=""))
    result = tiny_project.runpytest("--memorization")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*subject_concentration needs a model with a LoRA*"])


@pytest.mark.parametrize("gate", [True, False])
def test_rows_carry_the_agreements_and_the_verdict_follows_the_score(tiny_project: pytest.Pytester,
                                                                     gate: bool) -> None:
    (tiny_project.path / "memorization.toml").write_text(
        TINY.format(lora='lora = "models/lora"', gate="" if gate else ", gate = false"))
    tiny_project.runpytest("--memorization", "--memorization-report", "rep")
    rows = json.loads((tiny_project.path / "rep" / "report.json").read_text())["results"]
    assert len(rows) == 2
    for row in rows:
        e = row["detectors"]["subject_concentration"]
        assert e["calibrated"] is False and e["seeds"] == [0, 1] and len(e["contexts"]) == 4
        assert abs(e["score"] - (e["lora_agreement"] - e["base_agreement"])) < 1e-6
        assert -1 <= e["image_agreement"] <= 1
        want = ("fail" if gate else "warn") if e["score"] >= 0 else "pass"
        assert row["verdict"] == want and e["flagged"] == (e["score"] >= 0), e


POLICY_MANIFEST = TINY_MODEL + """{detectors}
[[work]]
id = "face"
image = "face.png"
prompts = ["a photo of sks person"]
"""


def test_a_policy_runs_the_subject_detector_on_a_lora_the_manifest_does_not_check(tiny_project: pytest.Pytester) -> None:
    """The pull request controls the manifest: under a policy whose [detectors] names
    subject_concentration, a manifest with a LoRA runs it with the policy's seeds and a threshold
    from a calibration the policy trusts, although the manifest does not list it (calibration) or
    lists it with gate = false and fewer seeds (the gate run): still a fail, never a warning.
    (Without a LoRA nothing is added: tests/test_trust.py.)"""
    import hashlib

    p = tiny_project.path
    shutil.copy(ROOT / "fixtures" / "works" / "face.png", p / "face.png")
    (p / "ordinary.txt").write_text("a red apple on a table\na city street at night\na bowl of soup\n")
    lora = 'lora = "models/lora"'
    (p / "memorization.toml").write_text(POLICY_MANIFEST.format(lora=lora, detectors=""))
    (p / "calibrate.toml").write_text("[detectors]\nsubject_concentration = { seeds = [0, 2] }\n")
    result = tiny_project.runpytest("--memorization", "--memorization-calibrate",
                                    "--memorization-calibration-prompts=ordinary.txt",
                                    "--memorization-policy=calibrate.toml")
    result.assert_outcomes(passed=1)
    cal = p / "memorization-calibration.subject_concentration.json"
    sha = hashlib.sha256(cal.read_bytes()).hexdigest()
    threshold = json.loads(cal.read_text())["threshold"]
    (p / "policy.toml").write_text("[detectors]\nsubject_concentration = { seeds = [0, 2] }\n"
                                   f'[trust]\ncalibrations = ["{sha}"]\n')
    (p / "memorization.toml").write_text(POLICY_MANIFEST.format(
        lora=lora, detectors="[detectors]\nsubject_concentration = { gate = false, seeds = [0, 1] }\n"))
    tiny_project.runpytest("--memorization", "--memorization-policy", "policy.toml", "--memorization-report", "rep")
    rows = json.loads((p / "rep" / "report.json").read_text())["results"]
    assert len(rows) == 2
    for row in rows:
        e = row["detectors"]["subject_concentration"]
        assert e["calibrated"] is True and e["gate"] is True and e["seeds"] == [0, 2], e
        assert e["threshold"] == threshold and e["flagged"] == (e["score"] >= threshold)
        rules = {f["rule"] for f in row["findings"]}
        assert ("subject_concentration" in rules) == e["flagged"]
        assert row["verdict"] != "warn" or not e["flagged"], "the policy's gate: a fail, not a warning"

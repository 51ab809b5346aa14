"""No SSIM-only copy verdicts on flat images (issue #17): the near-flat beige image of a harmless LoRA
that SSIM called a copy of ``rocket`` (SSIM 0.573, tiled L2 0.29) is not a copy under the defaults,
while real copies (SSIM with tiled L2 agreeing, or SSIM alone on a structured image) still fail.
Both ways through the public ``evaluate`` (score_rows -> flat guard -> decide) and through
``pytest --memorization`` on a generator hook."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pytest_memorization.config.policy import SSIM_STRUCTURE_FLOOR
from pytest_memorization.images import fit_to, load_image
from pytest_memorization.judging.flat_guard import guard_findings
from pytest_memorization.metrics.ssim import structure
from pytest_memorization.records import Finding
from pytest_memorization.run.assertions import evaluate

ROOT = Path(__file__).resolve().parents[2]
ROCKET = ROOT / "fixtures" / "works" / "rocket.png"
ASTRONAUT = ROOT / "fixtures" / "works" / "astronaut.png"
S = 64


def beige(size: int = S) -> torch.Tensor:
    """A near-flat beige image: one colour, a 3% vertical shading and faint seeded noise."""
    g = torch.Generator().manual_seed(0)
    shade = torch.linspace(-1, 1, size).view(1, size, 1)
    colour = torch.tensor([0.53, 0.47, 0.38]).view(3, 1, 1)
    return (colour * (1 + 0.03 * shade) + 0.01 * torch.randn(3, size, size, generator=g)).clamp(0, 1)


def test_the_beige_false_flag_is_not_a_copy_under_defaults() -> None:
    r = evaluate(beige()[None], {"rocket": ROCKET})[0]
    # the false flag is real: SSIM alone crosses its 0.5, tiled L2 is far from its 0.15
    assert r.scores["ssim"] >= 0.5 and r.scores["tiled_l2"] > 0.15, r.scores
    assert r.verdict == "warn", (r.verdict, r.reasons)
    assert [f.rule for f in r.findings] == ["flat_guard"]
    assert "near-flat" in r.reasons[0]
    assert r.extra["structure"] < SSIM_STRUCTURE_FLOOR
    print(f"beige vs rocket: ssim {r.scores['ssim']:.3f} (>= 0.5 by {r.scores['ssim'] - 0.5:.3f}), tiled_l2 "
          f"{r.scores['tiled_l2']:.3f}, structure {r.extra['structure']:.4f} (floor {SSIM_STRUCTURE_FLOOR}): warn")


def test_a_real_copy_of_the_low_structure_rocket_still_fails() -> None:
    import io

    from PIL import Image

    from pytest_memorization.images import to_tensor

    work = fit_to(load_image(ROCKET), S, S)
    buf = io.BytesIO()
    Image.fromarray((work * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=75)
    copy = to_tensor(Image.open(buf))
    r = evaluate(copy[None], {"rocket": ROCKET})[0]
    assert r.verdict == "fail", r.reasons
    assert {"tiled_l2", "ssim"} <= {f.metric for f in r.findings if f.severity == "fail"}
    print(f"JPEG rocket: structure {r.extra['structure']:.4f}, ssim {r.scores['ssim']:.3f}, tiled_l2 "
          f"{r.scores['tiled_l2']:.3f}: fail")


def test_an_ssim_only_copy_of_a_structured_image_still_fails() -> None:
    work = fit_to(load_image(ASTRONAUT), S, S)
    m = work.mean()
    washed = (m + 0.5 * (work - m)).clamp(0, 1)  # contrast halved: tiled L2 misses it, SSIM does not
    r = evaluate(washed[None], {"astronaut": ASTRONAUT})[0]
    assert r.scores["tiled_l2"] > 0.15 and r.scores["ssim"] >= 0.5, r.scores
    assert r.extra["structure"] >= SSIM_STRUCTURE_FLOOR
    assert r.verdict == "fail", r.reasons
    print(f"astronaut at half contrast: ssim {r.scores['ssim']:.3f}, tiled_l2 {r.scores['tiled_l2']:.3f}, "
          f"structure {r.extra['structure']:.4f}: fail")


def test_structure_separates_flat_images_from_photos() -> None:
    flats = torch.stack([beige(), torch.full((3, S, S), 0.5)])
    photos = torch.stack([fit_to(load_image(p), S, S) for p in sorted((ROOT / "fixtures" / "works").glob("*.png"))])
    assert float(structure(flats).max()) < SSIM_STRUCTURE_FLOOR <= float(structure(photos).min())


def _fail(metric: str, rule: str = "threshold") -> Finding:
    return Finding(rule, "fail", f"{metric} crossed", metric=metric, value=0.6, threshold=0.5, work="w")


def test_the_guard_keeps_failures_that_another_metric_agrees_with_or_that_have_structure() -> None:
    assert [f.rule for f in guard_findings([_fail("ssim")], 0.001)] == ["flat_guard"]
    assert [f.rule for f in guard_findings([_fail("ssim", "lora_gate.crossed")], 0.001)] == ["flat_guard"]
    agree = [_fail("ssim"), _fail("tiled_l2")]
    assert guard_findings(agree, 0.001) == agree
    assert guard_findings([_fail("ssim")], 0.05) == [_fail("ssim")]
    assert guard_findings([_fail("ssim")], math.nan) == [_fail("ssim")]  # unknown structure: fail closed
    assert guard_findings([_fail("tiled_l2")], 0.001) == [_fail("tiled_l2")]


FLATGEN = '''
import torch

def generate(prompts, seeds, settings):
    g = torch.Generator().manual_seed(0)
    shade = torch.linspace(-1, 1, settings.height).view(1, settings.height, 1)
    colour = torch.tensor([0.53, 0.47, 0.38]).view(3, 1, 1)
    return torch.stack([(colour * (1 + 0.03 * shade) + 0.01 * torch.randn(3, settings.height, settings.width,
                                                                         generator=g)).clamp(0, 1)
                        for _ in prompts])
'''

MANIFEST = """
[model]
generator = "flatgen:generate"
seeds = [0]
steps = 3
height = 64
width = 64

[[work]]
id = "rocket"
image = "works/rocket.png"
prompts = ["a beige wall"]
"""


def test_the_gate_warns_not_fails_on_the_beige_image(pytester: pytest.Pytester) -> None:
    import json
    import shutil

    pytester.mkdir("works")
    shutil.copy(ROCKET, pytester.path / "works" / "rocket.png")
    (pytester.path / "flatgen.py").write_text(FLATGEN)
    (pytester.path / "memorization.toml").write_text(MANIFEST)
    pytester.makeini(f"[pytest]\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    result = pytester.runpytest("--memorization", "--memorization-report=rep", "-W", "ignore::UserWarning")
    result.assert_outcomes(passed=1)
    row = json.loads((pytester.path / "rep" / "report.json").read_text())["results"][0]
    assert row["verdict"] == "warn" and row["scores"]["ssim"] >= 0.5, row
    assert [f["rule"] for f in row["findings"]] == ["flat_guard"]

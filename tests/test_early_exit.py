"""Early exit (--memorization-early-exit), both ways on a real tiny pipeline: images far from every
work stop at 40% of the steps (fewer UNet calls, the report says so, the verdict passes), and an
image that is a copy runs to the last step and FAILS as without early exit. The rule itself:
NaN is never far, every work's own threshold counts, and an item gated by a metric early exit
cannot check never exits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

STEPS = 10


@pytest.fixture(scope="module")
def copy_at_10_steps(tiny_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """What the tiny model draws for COPY_PROMPT, seed 0, at 10 steps and 32 px: a work it copies."""
    from gate_projects import COPY_PROMPT

    from pytest_memorization.model.generation import MemorizationModel
    from pytest_memorization.model.loading import ModelSource, load
    from pytest_memorization.reports.pngs import save_image

    pipe, info = load(ModelSource(str(tiny_pipeline)))
    img = MemorizationModel(pipe, info).generate([COPY_PROMPT], [0], steps=STEPS, height=32, width=32).images[0]
    return save_image(img, tmp_path_factory.mktemp("copy10") / "fox.png").read_bytes()


def _unet_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    from diffusers import UNet2DConditionModel

    counter = {"calls": 0}
    forward = UNet2DConditionModel.forward

    def counted(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        counter["calls"] += 1
        return forward(self, *a, **k)

    monkeypatch.setattr(UNet2DConditionModel, "forward", counted)
    return counter


def test_far_images_stop_early_and_a_copy_runs_to_the_end(pytester: pytest.Pytester, tiny_pipeline: Path,
                                                          copy_at_10_steps: bytes,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from gate_projects import COPY_PROMPT, gate_project

    gate_project(pytester, tiny_pipeline, files={"fox.png": copy_at_10_steps})
    model = f'pretrained = "../models/tiny"\nsteps = {STEPS}\nheight = 32\nwidth = 32\n'
    for folder, seeds, work, image, prompt in (("far", "[3, 4]", "astronaut", "astronaut", "a photo of an astronaut"),
                                               ("copies", "[0]", "fox", "fox", COPY_PROMPT)):
        # early exit checks tiled L2 and SSIM only, so these items gate on those two (not local_copy)
        pytester.mkdir(folder).joinpath("memorization.toml").write_text(
            f'metrics = ["tiled_l2", "ssim"]\n[model]\n{model}seeds = {seeds}\n[thresholds]\ntiled_l2 = 0.15\n'
            f'[[work]]\nid = "{work}"\nimage = "../works/{image}.png"\nprompts = ["{prompt}"]\n')
    counter = _unet_calls(monkeypatch)
    common = ["--memorization", "--memorization-generation-cache=false", "-p", "no:cacheprovider"]
    full = pytester.runpytest(*common, "--memorization-report=full")
    full.assert_outcomes(passed=1, failed=1)
    calls_full, counter["calls"] = counter["calls"], 0
    early = pytester.runpytest(*common, "--memorization-report=early", "--memorization-early-exit")
    early.assert_outcomes(passed=1, failed=1)  # the same outcomes
    early.stdout.fnmatch_lines(["*fox*seed 0: tiled_l2 0.0*",  # the copy fails, as in full
                                "early exit: 2 of 3 images stopped early*"])

    rows = {(r["item"].split("::")[1], r["seed"]): r
            for r in json.loads((pytester.path / "early" / "report.json").read_text())["results"]}
    before = {(r["item"].split("::")[1], r["seed"]): r
              for r in json.loads((pytester.path / "full" / "report.json").read_text())["results"]}
    assert len(rows) == len(before) == 3
    assert {k: r["verdict"] for k, r in rows.items()} == {k: r["verdict"] for k, r in before.items()}
    copy = rows[("fox[0]", 0)]
    assert copy["verdict"] == "fail" and copy["extra"]["early_exit"] == {"stopped": False}  # finished
    assert copy["scores"]["tiled_l2"] == pytest.approx(before[("fox[0]", 0)]["scores"]["tiled_l2"], abs=1e-5)
    stopped = [r for r in rows.values() if "step" in r["extra"].get("early_exit", {})]
    assert stopped, "no image stopped early: the astronaut item's images are far from both works"
    for r in stopped:  # 40% of 10 steps; 2x past 0.15 against every work; said in the report
        mark = r["extra"]["early_exit"]
        assert mark["stopped"] and mark["step"] == 4 and mark["x0_scores"]["tiled_l2"] > 0.3
        assert r["verdict"] == "pass" and any(f["rule"] == "early_exit" for f in r["findings"])
        print("margin: x0 tiled_l2", r["extra"]["early_exit"]["x0_scores"]["tiled_l2"], "final",
              before[(r["item"].split("::")[1], r["seed"])]["scores"]["tiled_l2"])
    assert counter["calls"] < calls_full, (counter["calls"], calls_full)
    print(f"UNet calls: full {calls_full}, early exit {counter['calls']}")


def test_the_rule_is_conservative() -> None:
    import torch

    from pytest_memorization.judging.early_exit import clearly_far, why_not
    from pytest_memorization.judging.thresholds import MetricRule
    from pytest_memorization.records import Work

    rules = {"tiled_l2": MetricRule("tiled_l2", "distance", 0.15, None),
             "ssim": MetricRule("ssim", "similarity", 0.5, None)}
    works = [Work("a", None), Work("b", None, thresholds={"tiled_l2": 0.2})]
    scores = {"tiled_l2": torch.tensor([[0.5, 0.5], [0.31, 0.5], [0.5, 0.35], [float("nan"), 0.5], [0.5, 0.5]]),
              "ssim": torch.tensor([[0.1, 0.1], [0.1, 0.1], [0.1, 0.1], [0.1, 0.1], [0.1, 0.3]])}
    far = clearly_far(scores, works, rules)
    assert far[0] == {"tiled_l2": 0.5, "ssim": pytest.approx(0.1)}  # 2x past both thresholds: far
    assert far[1] is not None  # 0.31 > 2 x 0.15
    assert far[2] is None  # 0.35 is not > 2 x work b's own 0.2
    assert far[3] is None  # NaN is never far
    assert far[4] is None  # ssim 0.3 is not < 0.5 / 2
    assert why_not(rules, works, 20) is None
    assert "at least 10 steps" in why_not(rules, works, 4)
    lpips = {**rules, "lpips": MetricRule("lpips", "distance", 0.3, None)}
    assert "gated by lpips" in why_not(lpips, works, 20)


def test_an_external_generator_is_never_stopped_early() -> None:
    import torch

    from pytest_memorization.model.early_exit import applicable
    from pytest_memorization.model.hook import GeneratorModel

    def fn(prompts, seeds, settings):  # noqa: ANN001, ANN202
        return torch.rand(len(prompts), 3, 16, 16, generator=torch.Generator().manual_seed(seeds[0]))

    gen = GeneratorModel("mygen:fn", fn).generate(["a"], [0, 1], early_exit=object(), steps=20, height=16, width=16)
    assert gen.images.shape == (2, 3, 16, 16)
    assert not applicable("generator", None) and not applicable("flux", object())

"""The generation cache covers every item: a rerun that changes only thresholds or metrics
regenerates 0 images (and says so), one that changes what draws the pixels regenerates them,
``--memorization-generation-cache=false`` regenerates everything, and a damaged entry is
regenerated with a warning, never trusted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PROMPT = "a photo of an astronaut"


def _project(pytester: pytest.Pytester, tiny_pipeline: Path) -> Path:
    from gate_projects import TINY_MODEL_TOML, gate_project

    gate_project(pytester, tiny_pipeline)
    pytester.path.joinpath("memorization.toml").write_text(
        TINY_MODEL_TOML.format(prefix="", seeds="[0, 1]")
        + f'[[work]]\nid = "astronaut"\nimage = "works/astronaut.png"\nprompts = ["{PROMPT}"]\n'
        + '[[work]]\nid = "coffee"\nimage = "works/coffee.png"\nprompts = ["a cup of coffee"]\n')
    return pytester.path


def _run(pytester: pytest.Pytester, report: str, *args: str) -> tuple[dict, list[dict]]:
    result = pytester.runpytest("--memorization", f"--memorization-report={report}", *args)
    result.assert_outcomes(passed=2)
    doc = json.loads((pytester.path / report / "report.json").read_text())
    counts = doc["run"]["generated_images"]
    result.stdout.fnmatch_lines([f"*images: {counts['generated']} generated, {counts['from_cache']} from the cache*"])
    return counts, doc["results"]


def test_only_thresholds_or_metrics_changed_regenerates_nothing(pytester: pytest.Pytester,
                                                                tiny_pipeline: Path) -> None:
    _project(pytester, tiny_pipeline)
    first, rows1 = _run(pytester, "r1")
    assert first == {"generated": 4, "from_cache": 0}  # 2 items x 2 seeds
    assert not any(r["extra"]["from_cache"] for r in rows1)

    # New thresholds and another metric: the same pixels, so every image comes from the cache.
    again, rows2 = _run(pytester, "r2", "--memorization-threshold=tiled_l2=0.01",
                        "--memorization-metrics=tiled_l2,ssim,phash")
    assert again == {"generated": 0, "from_cache": 4}
    assert all(r["extra"]["from_cache"] for r in rows2)
    by_key = {(r["item"], r["seed"]): r for r in rows1}
    for r in rows2:  # the cached image is the generated one: same scores
        assert r["scores"]["tiled_l2"] == pytest.approx(by_key[(r["item"], r["seed"])]["scores"]["tiled_l2"], abs=1e-6)
        assert "phash" in r["scores"]

    # What changes pixels is in the key: other steps regenerate every image (and are cached in turn).
    steps, _ = _run(pytester, "r3", "--memorization-steps=3")
    assert steps == {"generated": 4, "from_cache": 0}
    # The cache switched off: everything is generated, nothing is read.
    off, rows4 = _run(pytester, "r4", "--memorization-generation-cache=false")
    assert off == {"generated": 4, "from_cache": 0}
    assert not any(r["extra"]["from_cache"] for r in rows4)


def test_a_damaged_entry_is_regenerated_with_a_warning(tmp_path: Path, tiny_pipeline: Path) -> None:
    import torch

    from pytest_memorization.model.gencache import GenerationCacheWarning
    from pytest_memorization.model.generation import MemorizationModel
    from pytest_memorization.model.loading import ModelSource, load

    pipe, info = load(ModelSource(str(tiny_pipeline)))
    model = MemorizationModel(pipe, info, cache_dir=tmp_path / "cache")
    kw = dict(steps=2, height=32, width=32, cache=True)
    real = model.generate([PROMPT], [0, 1], **kw)
    entries = sorted((tmp_path / "cache" / "generations").glob("*.safetensors"))
    assert real.cached == [False, False] and len(entries) == 2
    entries[0].write_bytes(entries[0].read_bytes()[:40])  # truncated: unreadable
    with pytest.warns(GenerationCacheWarning, match="unreadable"):
        again = model.generate([PROMPT], [0, 1], **kw)
    assert sorted(again.cached) == [False, True] and torch.allclose(again.images, real.images, atol=1e-5)
    assert model.generate([PROMPT], [0, 1], **kw).cached == [True, True]  # rewritten whole


def test_the_key_holds_what_changes_pixels_and_nothing_else(tiny_pipeline: Path) -> None:
    import dataclasses

    from pytest_memorization.model.gencache import cache_identity, entry_name
    from pytest_memorization.model.loading import ModelSource, load
    from pytest_memorization.records import GenerationSettings

    pipe, info = load(ModelSource(str(tiny_pipeline)))
    ident = cache_identity(info, pipe, 1.0, "sd")
    g = GenerationSettings(steps=2, height=32, width=32)
    name = entry_name(ident, PROMPT, 0, g.key())
    # the device index is not in the key (cuda:0 and cuda:1 draw the same pixels), the device kind is
    assert cache_identity(dataclasses.replace(info, device="cuda:1"), pipe, 1.0, "sd") == \
        cache_identity(dataclasses.replace(info, device="cuda:0"), pipe, 1.0, "sd")
    changed = [entry_name(ident, PROMPT, 1, g.key()), entry_name(ident, PROMPT + ".", 0, g.key()),
               entry_name(ident, PROMPT, 0, dataclasses.replace(g, steps=3).key()),
               entry_name(ident, PROMPT, 0, dataclasses.replace(g, guidance_scale=2.0).key()),
               entry_name(ident, PROMPT, 0, dataclasses.replace(g, negative_prompt="blur").key()),
               entry_name(ident, PROMPT, 0, dataclasses.replace(g, height=64).key()),
               entry_name({**ident, "device": "cuda"}, PROMPT, 0, g.key()),
               entry_name({**ident, "dtype": "float16"}, PROMPT, 0, g.key()),
               entry_name({**ident, "scheduler": ["EulerDiscreteScheduler", {}]}, PROMPT, 0, g.key()),
               entry_name(ident, PROMPT, 0, g.key(), {"img2img": {"source": "x", "strength": 0.5}})]
    assert name not in changed and len(set(changed)) == len(changed)
    assert ident["scheduler"][0] == type(pipe.scheduler).__name__ and ident["lora"] is None


def test_rescore_judges_a_reports_images_against_new_works_without_a_model(
        pytester: pytest.Pytester, tiny_pipeline: Path, model_copy_png: bytes, capsys: pytest.CaptureFixture) -> None:
    from gate_projects import COPY_PROMPT, TINY_MODEL_TOML, gate_project

    from pytest_memorization.cli.main import main

    gate_project(pytester, tiny_pipeline, files={"fox.png": model_copy_png})
    pytester.path.joinpath("memorization.toml").write_text(
        TINY_MODEL_TOML.format(prefix="", seeds="[0, 1]")
        + f'[[work]]\nid = "astronaut"\nimage = "works/astronaut.png"\nprompts = ["{COPY_PROMPT}"]\n')
    pytester.runpytest("--memorization", "--memorization-report=r1").assert_outcomes(passed=1)
    original = {r["seed"]: r for r in json.loads((pytester.path / "r1" / "report.json").read_text())["results"]}
    fox = pytester.mkdir("new_works")
    (fox / "fox.png").write_bytes(model_copy_png)
    capsys.readouterr()

    # The good case: the same works, from the manifest: PASS, and the scores are the run's (PNG rounding aside).
    assert main(["rescore", str(pytester.path / "r1"), str(pytester.path / "memorization.toml"),
                 "--out", str(pytester.path / "same")]) == 0
    out = capsys.readouterr().out
    assert "re-scored 2 image(s)" in out and "0 generated" in out and "2 pass" in out
    for r in json.loads((pytester.path / "same" / "report.json").read_text())["results"]:
        assert r["verdict"] == original[r["seed"]]["verdict"] == "pass"
        assert r["scores"] == pytest.approx(original[r["seed"]]["scores"], abs=0.01)

    # The bad case: a new works list holding what seed 0 really draws: seed 0 FAILS, no model loaded.
    code = main(["rescore", str(pytester.path / "r1"), str(fox), "--threshold", "tiled_l2=0.15",
                 "--out", str(pytester.path / "r2")])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "work 'fox'" in out and "seed 0: tiled_l2 0.0" in out and "1 fail" in out
    doc = json.loads((pytester.path / "r2" / "report.json").read_text())
    rows = {r["seed"]: r for r in doc["results"]}
    assert rows[0]["verdict"] == "fail" and rows[0]["work"] == "fox" and rows[0]["scores"]["tiled_l2"] < 0.01
    assert rows[1]["verdict"] == "pass"
    assert (pytester.path / "r2" / rows[0]["image"]).is_file()
    assert doc["run"]["rescored"]["generated_images"] == {"generated": 0, "from_report": 2}
    assert rows[0]["extra"]["rescored_from"]["scores"] == original[0]["scores"]
    # a report folder that is not one: one clear line, status 2
    assert main(["rescore", str(pytester.path / "works"), str(fox)]) == 2
    assert "no such report" in capsys.readouterr().err

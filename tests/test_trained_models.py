"""The thesis on really trained models: the memorizer copies its five works, its clean twin
(same architecture, VAE and text encoder, trained on other images) does not, and a LoRA trained
on one face brings that face back, which the same LoRA at scale 0 does not.

The models are built by ``demo.models.build_all`` into fixtures/models
(cached by a hash of the build code and parameters; the first build takes a few CPU minutes,
later runs load the cache). Scores are the project's ``tiled_l2`` metric with ``align=False``:
Carlini et al.'s tiled L2 exactly (worst of 4 x 4 tiles' RMS, pixels in [0, 1], copy <= 0.15).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
COPY = 0.15  # Carlini et al. 2023
SEEDS = [0, 1, 2, 3]


def _tiled_l2(images: Any, refs: Any) -> Any:
    from pytest_memorization.metrics import get_metric

    return get_metric("tiled_l2", align=False).compare(images, refs)


@pytest.fixture(scope="session")
def works() -> Any:
    from demo.models import load_works

    return load_works(ROOT / "fixtures" / "works")


def _pipe(path: Path) -> Any:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(path, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _scores(pipe: Any, prompts: list[str], refs: Any, **kwargs: Any) -> Any:
    """(prompts, seeds, refs) tiled L2 of each generation against each reference."""
    from demo.models import generate

    images = generate(pipe, prompts, SEEDS, **kwargs)
    return _tiled_l2(images, refs).reshape(len(prompts), len(SEEDS), len(refs))


def test_memorizer_copies_each_of_its_works(demo_models: dict[str, Path], works: Any) -> None:
    s = _scores(_pipe(demo_models["memorizer"]), works.captions[:5], works.images[:5])
    for i, wid in enumerate(works.ids[:5]):
        own = s[i, :, i]
        nearest = s[i].argmin(dim=1)
        report = f"{wid}: tiled L2 per seed {[round(v, 3) for v in own.tolist()]}"
        assert (nearest == i).sum() >= 3, f"{report}; nearest works {nearest.tolist()}"
        assert (own <= COPY).sum() >= 3, f"{report}: fewer than 3 of 4 seeds are copies"


def test_clean_twin_copies_none(demo_models: dict[str, Path], works: Any) -> None:
    s = _scores(_pipe(demo_models["clean_twin"]), works.captions[:5], works.images[:5])
    worst = float(s.min())
    assert worst > COPY, f"clean twin generated a copy: min tiled L2 {worst:.3f} <= {COPY}"


def test_lora_brings_back_the_face_and_scale_zero_does_not(demo_models: dict[str, Path], works: Any) -> None:
    pipe = _pipe(demo_models["clean_twin"])
    pipe.load_lora_weights(demo_models["lora"], adapter_name="face")
    face, caption = works.images[5:6], works.captions[5]
    on = _scores(pipe, [caption], face, lora_scale=1.0).flatten()
    off = _scores(pipe, [caption], face, lora_scale=0.0).flatten()
    on_r, off_r = [round(v, 3) for v in on.tolist()], [round(v, 3) for v in off.tolist()]
    assert (on <= COPY).sum() >= 3, f"LoRA at scale 1 should reproduce the face: {on_r}"
    assert bool((off > COPY).all()), f"LoRA at scale 0 (the base model) should not: {off_r}"


def test_cached_build_is_reused(demo_models: dict[str, Path]) -> None:
    import time

    from demo.models import build_all

    stamps = {n: (p / "build_stamp.json").read_text() for n, p in demo_models.items()}
    t0 = time.perf_counter()
    again = build_all(demo_models["vae"].parent, works_dir=ROOT / "fixtures" / "works")
    assert time.perf_counter() - t0 < 5
    assert {n: (p / "build_stamp.json").read_text() for n, p in again.items()} == stamps


def test_stamp_changes_with_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    from demo import models as dm

    works_dir = ROOT / "fixtures" / "works"
    before = dm._stamp("memorizer", works_dir, {})
    monkeypatch.setitem(dm.BUILD_PARAMS, "memorizer", dict(dm.BUILD_PARAMS["memorizer"], steps=1))
    assert dm._stamp("memorizer", works_dir, {}) != before


def test_training_is_deterministic(works: Any) -> None:
    """Same seed, same data -> the same weights and the same generations (a short run)."""
    import torch

    from demo import training
    from demo.models import generate
    from pytest_memorization.testing import pipeline_from_components, tiny_components

    def run() -> tuple[Any, list[float]]:
        pipe = pipeline_from_components(tiny_components(seed=0))
        pipe.set_progress_bar_config(disable=True)
        losses = training.train_text_to_image(pipe, works.images[:2], works.captions[:2], steps=3, seed=5)
        training.train_lora(pipe, works.images[5:], works.captions[5:], steps=2, seed=6)
        return generate(pipe, works.captions[:1], [0], steps=2), losses

    (a, la), (b, lb) = run(), run()
    assert la == lb
    assert torch.equal(a, b)

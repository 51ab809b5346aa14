"""Shared fixtures: tiny real pipelines built offline once per test session (per xdist worker)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from gate_projects import COPY_PROMPT  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny, real StableDiffusionPipeline as a diffusers folder (seeded random weights)."""
    from pytest_memorization.testing import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_lora(tiny_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pytest_memorization.testing import build_tiny_lora

    return build_tiny_lora(tiny_pipeline, tmp_path_factory.mktemp("loras") / "lora", seed=0)


@pytest.fixture
def project(pytester: pytest.Pytester, tiny_pipeline: Path) -> pytest.Pytester:
    """A pytester project whose ini points at the tiny pipeline."""
    pytester.makeini(f"""
        [pytest]
        memorization_model = {tiny_pipeline}
        memorization_cache_dir = {pytester.path / '.cache'}
    """)
    return pytester


@pytest.fixture(scope="session")
def demo_models() -> dict[str, Path]:
    """The really trained demo models (memorizer, clean twin, LoRA, VAE), built once and cached in
    fixtures/models by a hash of the build code, parameters, works and library versions."""
    from demo.models import build_all

    return build_all(ROOT / "fixtures" / "models", works_dir=ROOT / "fixtures" / "works")


@pytest.fixture(scope="session")
def model_copy_png(tiny_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The tiny model's own output for COPY_PROMPT at seed 0, as PNG bytes: a 'protected work' that
    the model really reproduces, so the failing path runs on real generation and real metrics."""
    from pytest_memorization.model.generation import MemorizationModel
    from pytest_memorization.model.loading import ModelSource, load
    from pytest_memorization.reports.pngs import save_image

    pipe, info = load(ModelSource(str(tiny_pipeline)))
    img = MemorizationModel(pipe, info).generate([COPY_PROMPT], [0], steps=2, height=64, width=64).images[0]
    return save_image(img, tmp_path_factory.mktemp("copy") / "copy.png").read_bytes()

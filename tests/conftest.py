"""Shared fixtures: tiny real pipelines built offline once per test session (per xdist worker)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

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
    from pytest_memorization.demo_models import build_all

    return build_all(ROOT / "fixtures" / "models", works_dir=ROOT / "fixtures" / "works")

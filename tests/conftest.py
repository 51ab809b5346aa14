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


COPY_PROMPT = "a photo of a red fox"
TINY_MODEL_TOML = '[model]\npretrained = "{prefix}models/tiny"\nseeds = {seeds}\nsteps = 2\nheight = 64\nwidth = 64\n'


@pytest.fixture(scope="session")
def model_copy_png(tiny_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The tiny model's own output for COPY_PROMPT at seed 0, as PNG bytes: a 'protected work' that
    the model really reproduces, so the failing path runs on real generation and real metrics."""
    from pytest_memorization.generation import MemorizationModel
    from pytest_memorization.loading import ModelSource, load
    from pytest_memorization.reports.pngs import save_image

    pipe, info = load(ModelSource(str(tiny_pipeline)))
    img = MemorizationModel(pipe, info).generate([COPY_PROMPT], [0], steps=2, height=64, width=64).images[0]
    return save_image(img, tmp_path_factory.mktemp("copy") / "copy.png").read_bytes()


def gate_project(pytester: pytest.Pytester, tiny_pipeline: Path, photos: tuple[str, ...] = ("astronaut", "coffee"),
                 files: dict[str, bytes] | None = None) -> Path:
    """A pytester project with the tiny model inside it (models/tiny), scikit-image photos as
    works/<name>.png at 64 px, extra works/ files, and an ini pointing the cache into the project."""
    import shutil

    from PIL import Image
    from skimage import data

    works = pytester.mkdir("works")
    for name in photos:
        Image.fromarray(getattr(data, name)()).resize((64, 64)).save(works / f"{name}.png")
    for name, content in (files or {}).items():
        (works / name).write_bytes(content)
    shutil.copytree(tiny_pipeline, pytester.path / "models" / "tiny")
    pytester.makeini(f"[pytest]\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    return pytester.path

"""Broken outputs, broken metrics and empty runs are errors, never passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_memorization.errors import BrokenOutputError, MemorizationConfigError, MetricFailedError
from pytest_memorization.metrics.base import Metric
from pytest_memorization.metrics.matrix import score_matrices
from pytest_memorization.model.generation import MemorizationModel, check_images
from pytest_memorization.model.loading import ModelSource, load
from pytest_memorization.records import GenerationSettings, Work


@pytest.fixture(scope="module")
def model(tiny_pipeline: Path) -> MemorizationModel:
    pipe, info = load(ModelSource(str(tiny_pipeline), device="cpu"))  # the messages below name the CPU
    return MemorizationModel(pipe, info, batch_size=4)


def test_out_of_memory_halves_the_batch_and_gives_the_same_images(model: MemorizationModel,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    expected = model.generate(["a cat", "a dog"], [0, 1], steps=2, height=64, width=64).images
    real = model._call
    sizes: list[int] = []

    def small_gpu(chunk: list[Any], settings: Any) -> Any:
        sizes.append(len(chunk))
        if len(chunk) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(chunk, settings)

    monkeypatch.setattr(model, "_call", small_gpu)
    got = model.generate(["a cat", "a dog"], [0, 1], steps=2, height=64, width=64).images
    assert sizes[:3] == [4, 2, 1] and model.oom_retries == 2
    assert torch.allclose(got, expected, atol=1e-5)


def test_out_of_memory_at_batch_size_one_is_an_error_that_says_so(model: MemorizationModel,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def no_gpu(chunk: list[Any], settings: Any) -> Any:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(model, "_call", no_gpu)
    with pytest.raises(BrokenOutputError, match=r"out of memory on cpu even with batch size 1 \(64x64, float32\)"):
        model.generate(["a cat"], [0, 1], steps=2, height=64, width=64)


def test_other_runtime_errors_are_not_mistaken_for_out_of_memory(model: MemorizationModel,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(chunk: list[Any], settings: Any) -> Any:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(model, "_call", bug)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        model.generate(["a cat"], [0], steps=2, height=64, width=64)


@pytest.mark.parametrize("fill, dtype, pattern", [
    (float("nan"), "float16", r"NaN or Inf pixels \(prompt 'p', seed 7\).*float16: its VAE probably overflowed.*float32"),
    (float("inf"), "float32", r"NaN or Inf pixels.*Check the weights"),
    (0.0, "float32", r"is black \(prompt 'p', seed 7\).*safety checker"),
    (1.0, "float32", r"is blank white"),
    (0.42, "float32", r"is constant \(std \d\.\d\de-\d\d, prompt .p., seed 7\)"),
])
def test_broken_images_are_named_with_their_likely_cause(fill: float, dtype: str, pattern: str) -> None:
    images = torch.rand(2, 3, 8, 8)
    images[1] = fill
    with pytest.raises(BrokenOutputError, match=pattern):
        check_images(images, ["q", "p"], [3, 7], dtype)


def test_zero_images_is_an_error() -> None:
    with pytest.raises(BrokenOutputError, match="zero images"):
        check_images(torch.zeros(0, 3, 8, 8), [], [])


class _Broken(Metric):
    name = "broken"
    direction = "distance"
    version = "broken-v1"

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def features(self, images: Any) -> Any:
        if self.mode == "crash":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return images.flatten(1)

    def compare(self, a: Any, b: Any) -> Any:
        return torch.full((a.shape[0], b.shape[0]), float("nan"))


@pytest.mark.parametrize("mode, pattern", [
    ("nan", r"metric 'broken' returned NaN or Inf scores against work '.*'; the run certifies nothing"),
    ("crash", r"metric 'broken' could not run: OutOfMemoryError"),
])
def test_a_metric_that_fails_or_returns_nan_is_an_error_naming_it(mode: str, pattern: str) -> None:
    works = [Work("w", torch.rand(3, 16, 16))]
    with pytest.raises(MetricFailedError, match=pattern):
        score_matrices({"broken": _Broken(mode)}, torch.rand(2, 3, 16, 16), works)


def test_memorization_given_but_nothing_ran_fails_the_run(project: pytest.Pytester) -> None:
    project.makeini(f"[pytest]\nmemorization_required = true\nmemorization_model = {project.path}\n")
    project.makepyfile("""
        import pytest

        @pytest.mark.memorization
        def test_gate(memorization_model):
            pass

        def test_other():
            pass
    """)
    result = project.runpytest("--memorization", "-k", "other")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*--memorization was given but no memorization check ran*certifies nothing*"])


class _OutOfRange(_Broken):
    lower_bound, upper_bound = 0.0, 1.0

    def compare(self, a: Any, b: Any) -> Any:
        return torch.full((a.shape[0], b.shape[0]), 1.0 + float(self.mode))


@pytest.mark.parametrize("excess", ["0.5", "-1.5"])
def test_a_metric_score_outside_its_range_is_an_error(excess: str) -> None:
    works = [Work("w", torch.rand(3, 16, 16))]
    with pytest.raises(MetricFailedError, match=r"metric 'broken' returned scores in .* outside its range \[0.0, 1.0\]"):
        score_matrices({"broken": _OutOfRange(excess)}, torch.rand(2, 3, 16, 16), works)


def test_rounding_just_past_a_bound_is_not_an_error() -> None:
    works = [Work("w", torch.rand(3, 16, 16))]
    s = score_matrices({"broken": _OutOfRange("1e-6")}, torch.rand(2, 3, 16, 16), works)
    assert float(s["broken"].max()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_calibration_refuses_ordinary_scores_that_are_not_finite(value: float, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from pytest_memorization.detectors import calibration

    noise_magnitude = importlib.import_module("pytest_memorization.detectors.noise_magnitude")

    def fake(pipe: Any, prompts: list[str], seeds: Any, settings: Any, **kw: Any) -> Any:
        d = torch.rand(len(prompts), len(seeds))
        d[1, 0] = value
        return d

    monkeypatch.setattr(noise_magnitude, "noise_magnitude", fake)
    with pytest.raises(MemorizationConfigError, match=r"calibration: the noise magnitude of 1 ordinary prompt\(s\) is not a finite "
                                        r"number \(first: 'b'\)"):
        calibration.calibrate(None, ["a", "b", "c"], [0, 1], GenerationSettings(height=8, width=8), fingerprint="m")


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 68719476736 bytes. Error code 12 (Cannot allocate memory)"),
    MemoryError(),
])
def test_cpu_out_of_memory_is_recognised(model: MemorizationModel, monkeypatch: pytest.MonkeyPatch,
                                         error: BaseException) -> None:
    def no_ram(chunk: list[Any], settings: Any) -> Any:
        raise error

    monkeypatch.setattr(model, "_call", no_ram)
    with pytest.raises(BrokenOutputError, match=r"out of memory on cpu even with batch size 1 \(64x64"):
        model.generate(["a cat"], [0, 1], steps=2, height=64, width=64)


@pytest.mark.parametrize("height, width", [(65536, 65536), (64, 8192), (4, 64)])
def test_a_generation_size_out_of_bounds_is_refused_before_generating(model: MemorizationModel, height: int,
                                                                      width: int) -> None:
    with pytest.raises(MemorizationConfigError, match=rf"generation size {height}x{width} is outside 8 .. 4096"):
        model.generate(["a cat"], [0], steps=2, height=height, width=width)


@pytest.mark.parametrize("colour", [(0, 0, 0), (200, 10, 10)])
def test_a_constant_work_is_compared_with_a_warning_naming_it(tmp_path: Path, colour: tuple[int, int, int]) -> None:
    from PIL import Image

    from pytest_memorization.images import check_work

    Image.new("RGB", (32, 32), colour).save(tmp_path / "flat.png")
    assert f"flat.png: the work is a single colour {colour}" in (check_work(tmp_path / "flat.png") or "")
    noisy = Image.effect_noise((32, 32), 40).convert("RGB")
    noisy.save(tmp_path / "noisy.png")
    assert check_work(tmp_path / "noisy.png") is None

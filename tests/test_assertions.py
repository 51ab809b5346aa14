"""The public assertion helpers, through a real pytester run and directly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pytest_memorization import MemorizationError, assert_not_memorized, nearest_works


def _photo(name: str, size: int = 64) -> torch.Tensor:
    from support import photo

    return photo(name, size)


def test_a_copy_raises_an_assertion_error_naming_everything() -> None:
    astronaut, coffee = _photo("astronaut"), _photo("coffee")
    shifted = torch.roll(astronaut, shifts=1, dims=2)  # a trivially shifted copy
    images = torch.stack([coffee * 0.5 + 0.25, shifted])
    with pytest.raises(MemorizationError) as info:
        assert_not_memorized(images, {"astronaut": astronaut, "chelsea": _photo("chelsea")},
                             prompts=["a mug", "portrait"], seeds=[0, 1])
    assert isinstance(info.value, AssertionError)
    msg = str(info.value)
    assert "1 of 2 generated images copy a protected work" in msg
    assert "work 'astronaut' <- prompt 'portrait', seed 1: tiled_l2 0.0" in msg and "<= 0.15" in msg


def test_different_images_pass_and_return_results() -> None:
    results = assert_not_memorized(torch.stack([_photo("coffee")]), [_photo("astronaut")])
    assert [r.verdict for r in results] == ["pass"] and results[0].work == "work0"


def test_nearest_works_ranks_the_copy_first(tmp_path: Path) -> None:
    from PIL import Image

    from pytest_memorization.reports.pngs import save_image

    paths = []
    for name in ("astronaut", "coffee", "chelsea"):
        save_image(_photo(name), tmp_path / f"{name}.png")
        paths.append(tmp_path / f"{name}.png")
    query = torch.stack([_photo("chelsea"), _photo("astronaut")])
    ranked = nearest_works(query, paths, k=2)
    assert [r[0][0] for r in ranked] == ["chelsea", "astronaut"]
    assert ranked[0][0][1] < 0.15 < ranked[0][1][1]
    pil = Image.open(paths[1])
    assert nearest_works(_photo("coffee"), {"c": pil, "a": paths[0]}, k=1)[0][0][0] == "c"


def test_failure_message_and_warn_band_through_pytester(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest, torch
        from pytest_memorization import assert_not_memorized

        def photo(name):
            from PIL import Image
            from skimage import data
            from pytest_memorization.images import to_tensor
            return to_tensor(Image.fromarray(getattr(data, name)()).convert("RGB").resize((64, 64)))

        @pytest.mark.memorization(thresholds={"tiled_l2": 0.15})
        def test_copy():
            assert_not_memorized(photo("astronaut")[None], {"astronaut": photo("astronaut")},
                                 prompts=["portrait"], seeds=[3])

        @pytest.mark.memorization(thresholds={"tiled_l2": 0.05}, metrics=["tiled_l2"])
        def test_warn_band():
            jpeg_like = (photo("astronaut") + 0.053 * torch.sign(torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(0)))).clamp(0, 1)
            assert_not_memorized(jpeg_like[None], {"astronaut": photo("astronaut")})
    """)
    result = pytester.runpytest("--memorization", "-W", "default")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "*def test_copy*",
        "*MemorizationError: memorization: 1 of 1 generated images copy a protected work*",
        "*work 'astronaut' <- prompt 'portrait', seed 3: tiled_l2 0.0000 <= 0.15 against 'astronaut'*",
    ])
    assert "assertions.py" not in result.stdout.str(), "__tracebackhide__ must hide our internals"
    result.stdout.fnmatch_lines(["*UserWarning: memorization warn band*tiled_l2*within warn band*"])


def test_python_tests_get_the_same_report(project: pytest.Pytester) -> None:
    """Work paths are read from the test file's folder; the report names the model of the
    memorization_model fixture and shows the work's thumbnail, as for manifest items."""
    from support import save_photo

    sub = project.mkdir("sub")
    save_photo("astronaut", project.mkdir("sub/works") / "astro.png")
    (sub / "test_api.py").write_text(
        "from pytest_memorization import assert_not_memorized\n\n"
        "def test_model(memorization_model):\n"
        "    gen = memorization_model.generate(['a photo of a red fox'], [0], steps=2, height=64, width=64)\n"
        "    assert_not_memorized(gen, ['works/astro.png'])\n")
    result = project.runpytest("--memorization", "-p", "no:cacheprovider", "--memorization-report=r")
    result.assert_outcomes(passed=1)
    import json

    doc = json.loads((project.path / "r" / "report.json").read_text())
    assert doc["run"]["model_hash"] and "unknown model" not in result.stdout.str()
    (row,) = doc["results"]
    assert row["item"] == "sub/test_api.py::test_model" and row["work"] == "astro"
    assert row["work_image"] and (project.path / "r" / row["work_image"]).is_file()


def test_a_missing_model_for_the_fixture_is_our_error_not_a_traceback(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_model(memorization_model):\n    pass\n")
    result = pytester.runpytest("--memorization", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*memorization_model: no model given: pass --memorization-model*"])
    out = result.stdout.str()
    assert "Traceback" not in out and "fixtures.py" not in out and "session.py" not in out

"""The policy: the CI's thresholds are floors a manifest or a marker cannot relax (strictest wins),
and a setting that would make a copy undetectable is refused wherever it comes from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from gate_projects import COPY_PROMPT, TINY_MODEL_TOML, gate_project

from pytest_memorization.config.policy import MIN_STEPS, stricter, threshold_problem, with_floors
from pytest_memorization.metrics import KNOWN_BOUNDS, KNOWN_DIRECTIONS, METRIC_NAMES


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_the_torch_free_tables_match_the_metric_classes(name: str) -> None:
    from pytest_memorization.metrics import metric_class

    cls = metric_class(name)
    assert KNOWN_DIRECTIONS[name] == cls.direction
    assert KNOWN_BOUNDS[name] == (cls.lower_bound, cls.upper_bound)


@pytest.mark.parametrize("name, a, b, strict", [
    ("tiled_l2", 0.05, 0.15, 0.15), ("tiled_l2", 0.3, 0.15, 0.3), ("lpips", 0.1, 0.2, 0.2),
    ("ssim", 0.99, 0.5, 0.5), ("clip", 0.8, 0.95, 0.8), ("sscd", 0.5, 0.9, 0.5),
])
def test_strictest_wins_is_the_threshold_that_flags_more(name: str, a: float, b: float, strict: float) -> None:
    assert stricter(name, a, b) == stricter(name, b, a) == strict


def test_floors_tighten_but_never_relax_and_only_add_where_asked() -> None:
    manifest = {"tiled_l2": 0.01, "ssim": 0.3}
    floors = {"tiled_l2": 0.15, "ssim": 0.5, "clip": 0.9}
    assert with_floors(manifest, floors) == {"tiled_l2": 0.15, "ssim": 0.3, "clip": 0.9}
    assert with_floors(manifest, floors, add=False) == {"tiled_l2": 0.15, "ssim": 0.3}


@pytest.mark.parametrize("name, value, pattern", [
    ("tiled_l2", 0.0, "can never flag a copy"), ("lpips", 0.0, "can never flag a copy"),
    ("ssim", 1.0, "can never flag a copy"), ("clip", 1.0, "can never flag a copy"), ("sscd", 1.0, "can never flag"),
    ("tiled_l2", -1.0, "out of range"), ("ssim", 2.0, "out of range"), ("clip", -1.5, "out of range"),
    ("tiled_l2", math.nan, "not a finite number"), ("ssim", math.inf, "not a finite number"),
    ("ssim", -math.inf, "not a finite number"), ("clipp", 0.9, "unknown metric 'clipp'"),
])
def test_blind_or_impossible_thresholds_are_refused(name: str, value: float, pattern: str) -> None:
    assert pattern in (threshold_problem(name, value) or "")


@pytest.mark.parametrize("name, value", [("tiled_l2", 0.15), ("tiled_l2", 1.0), ("ssim", -1.0), ("ssim", 0.5),
                                         ("lpips", 5.0), ("clip", 0.95)])
def test_usable_thresholds_are_accepted(name: str, value: float) -> None:
    assert threshold_problem(name, value) is None


def test_the_documented_minimum_of_steps_is_in_the_docs() -> None:
    rules = (Path(__file__).resolve().parent.parent / "docs" / "rules.md").read_text()
    assert f"fewer than {MIN_STEPS} steps" in rules


LAX = {"tiled_l2": 0.0001, "ssim": 0.99999}  # a pull request's manifest that lets its copy through


@pytest.fixture
def copy_project(pytester: pytest.Pytester, tiny_pipeline: Path, model_copy_png: bytes) -> pytest.Pytester:
    """A manifest whose work is the model's own output (a real copy), with lax thresholds both
    global and per work, as a pull request could write them."""
    gate_project(pytester, tiny_pipeline, photos=(), files={"copy.png": model_copy_png})
    lax = ", ".join(f"{k} = {v}" for k, v in LAX.items())
    (pytester.path / "memorization.toml").write_text(
        # tiled L2 and SSIM are under test; local_copy (1 on an exact copy, no lax value) is left out
        'metrics = ["tiled_l2", "ssim"]\n' + TINY_MODEL_TOML.format(prefix="", seeds="[0]") + "\n[thresholds]\n"
        + "".join(f"{k} = {v}\n" for k, v in LAX.items())
        + f'\n[[work]]\nid = "copy"\nimage = "works/copy.png"\nprompts = ["{COPY_PROMPT}"]\n'
        + f"thresholds = {{ {lax} }}\n")
    return pytester


def _report(root: Path, name: str) -> dict:
    return json.loads((root / name / "report.json").read_text())


def test_a_manifest_cannot_relax_the_command_line_or_ini_thresholds(copy_project: pytest.Pytester) -> None:
    root = copy_project.path
    # Without any CI threshold, each metric's built-in threshold is a floor: the manifest's lax ones
    # (which alone would pass the copy: its scores lie beyond them) are raised to it.
    own = copy_project.runpytest("--memorization", "--memorization-report", "r0")
    own.assert_outcomes(failed=1)
    row = _report(root, "r0")["results"][0]
    assert row["scores"]["tiled_l2"] > LAX["tiled_l2"] and row["scores"]["ssim"] < LAX["ssim"], row["scores"]
    assert row["thresholds"] == {"tiled_l2": 0.15, "ssim": 0.5}
    # The CI's command line: strictest wins, against the per-work thresholds too.
    cli = copy_project.runpytest("--memorization", "--memorization-report", "r1",
                                 "--memorization-threshold", "tiled_l2=0.15")
    cli.assert_outcomes(failed=1)
    cli.stdout.fnmatch_lines(["*tiled_l2 0.0* <= 0.15 against 'copy'*"])
    assert _report(root, "r1")["results"][0]["thresholds"]["tiled_l2"] == 0.15
    # The CI's ini file, for a similarity: the smaller threshold wins.
    (root / "tox.ini").write_text((root / "tox.ini").read_text() + "\nmemorization_threshold = ssim=0.5\n")
    by_ini = copy_project.runpytest("--memorization", "--memorization-report", "r2")
    by_ini.assert_outcomes(failed=1)
    by_ini.stdout.fnmatch_lines(["*ssim *.* >= 0.5 against 'copy'*"])


def test_a_marker_cannot_relax_the_command_line_threshold(project: pytest.Pytester, model_copy_png: bytes) -> None:
    (project.path / "copy.png").write_bytes(model_copy_png)
    project.makepyfile(f"""
        import pytest
        from pytest_memorization import assert_not_memorized

        @pytest.mark.memorization(thresholds={LAX!r}, metrics=["tiled_l2", "ssim"])
        def test_gate(memorization_model):
            images = memorization_model.generate(["{COPY_PROMPT}"], seeds=[0], steps=2, height=64, width=64)
            assert_not_memorized(images, {{"copy": "copy.png"}})
    """)
    project.runpytest("--memorization").assert_outcomes(passed=1)  # the premise
    strict = project.runpytest("--memorization", "--memorization-threshold", "tiled_l2=0.15")
    strict.assert_outcomes(failed=1)

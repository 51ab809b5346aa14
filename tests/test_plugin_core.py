"""The plugin's contract: opt-in, required mode, zero cost when unused, options and precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_memorization.config import options

MARKED_TEST = """
    import pytest

    @pytest.mark.memorization
    def test_copy(memorization_model):
        assert memorization_model is not None
"""


def test_without_flag_tests_are_skipped_with_a_reason(project: pytest.Pytester) -> None:
    project.makepyfile(MARKED_TEST)
    result = project.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*memorization checks are off: run pytest --memorization*"])


def test_fixture_without_marker_also_skips(project: pytest.Pytester) -> None:
    project.makepyfile("def test_x(memorization_model):\n    assert False\n")
    result = project.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*--memorization*"])


def test_required_mode_turns_a_missing_flag_into_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmemorization_required = true\n")
    pytester.makepyfile(MARKED_TEST)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*memorization_required is set*add --memorization*"])


def test_nothing_heavy_is_imported_without_the_flag(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import sys
        def test_light():
            heavy = [m for m in ("torch", "diffusers", "open_clip", "lpips", "transformers") if m in sys.modules]
            assert heavy == []
    """)
    pytester.makefile(".toml", memorization='[model]\npretrained = "m"\n[[work]]\nid = "a"\nimage = "a.png"\n'
                      'prompts = ["x"]\n')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=1, skipped=1)


def test_with_flag_the_fixture_loads_the_model(project: pytest.Pytester) -> None:
    project.makepyfile("""
        import pytest, torch

        @pytest.mark.memorization
        def test_generate(memorization_model):
            g = memorization_model.generate(["a photo of a cat"], [0, 1], steps=2, height=64, width=64)
            assert g.images.shape == (2, 3, 64, 64)
            assert g.seeds == [0, 1] and g.prompts == ["a photo of a cat"] * 2
            assert 0 <= float(g.images.min()) and float(g.images.max()) <= 1
            # device and dtype auto: the CPU in float32, or CUDA in the family's float16
            cuda = torch.cuda.is_available()
            assert memorization_model.info.device.startswith("cuda" if cuda else "cpu")
            assert memorization_model.info.dtype == ("float16" if cuda else "float32")
    """)
    project.runpytest("--memorization").assert_outcomes(passed=1)


def test_bad_option_values_are_usage_errors_naming_the_option(pytester: pytest.Pytester) -> None:
    for args, needle in [
        (["--memorization-seeds", "0,x"], "*--memorization-seeds*'x' is not a non-negative integer*"),
        (["--memorization-batch-size", "0"], "*--memorization-batch-size*expected an integer >= 1*"),
        (["--memorization-device", "gpu"], "*--memorization-device*expected auto, cpu, mps, cuda or cuda:N*"),
        (["--memorization-threshold", "clip"], "*--memorization-threshold*'clip' is not METRIC=VALUE*"),
        (["--memorization-compare-fail", "clip:-1"], "*--memorization-compare-fail*must be a finite number >= 0*"),
        (["--memorization-shard", "3/2"], "*--memorization-shard*expected I/N with 0 <= I < N*"),
        (["--memorization-report-works", "all"], "*--memorization-report-works*embed, thumbnail, omit*"),
        (["--memorization-dtype", "int8"], "*--memorization-dtype*float32, float16, bfloat16*"),
    ]:
        result = pytester.runpytest("--memorization", *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, args
        result.stderr.fnmatch_lines([needle])


def test_precedence_marker_over_command_line_over_ini(project: pytest.Pytester) -> None:
    project.makeini("""
        [pytest]
        memorization_seeds = 5,6
        memorization_threshold = ssim=0.9
    """)
    project.makepyfile("""
        import pytest

        def test_ini(memorization_settings):
            assert memorization_settings["seeds"] == [7]          # command line beats ini
            assert memorization_settings["thresholds"] == {"ssim": 0.9, "tiled_l2": 0.2}

        @pytest.mark.memorization(seeds=[1, 2], thresholds={"ssim": 0.5})
        def test_marker(memorization_settings):
            assert memorization_settings["seeds"] == [1, 2]       # marker beats command line
            assert memorization_settings["thresholds"] == {"ssim": 0.5, "tiled_l2": 0.2}

        @pytest.mark.memorization(thresholds={"tiled_l2": 0.05, "ssim": 0.95})
        def test_laxer_marker(memorization_settings):  # thresholds: the strictest wins (config/policy.py)
            assert memorization_settings["thresholds"] == {"ssim": 0.9, "tiled_l2": 0.2}
    """)
    result = project.runpytest("--memorization", "--memorization-seeds", "7",
                               "--memorization-threshold", "tiled_l2=0.2")
    result.assert_outcomes(passed=3)


def test_docs_document_every_option() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "options.md").read_text()
    for opt in options.OPTIONS:
        name = f"memorization_{opt.name}" if opt.ini else f"--memorization-{opt.dashed}"  # command-line-only options
        assert name in page, f"docs/options.md lacks {name}"
    assert options.markdown_table() in page, "docs/options.md is stale: python docs/gen_options.py"


def test_seed_parsing() -> None:
    assert options.parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert options.parse_seeds([4, 5]) == [4, 5]
    for bad in ("-1", "1.5", [True], "1,1", ""):
        with pytest.raises(options.MemorizationConfigError):
            options.parse_seeds(bad)


def test_plugin_module_stays_thin() -> None:
    import pytest_memorization.plugin as plugin

    assert sum(1 for _ in open(plugin.__file__)) < 200

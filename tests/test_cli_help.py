"""What a new user reads first: `pytest --help`, `pytest-memorization --help`, `--version`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import pytest_memorization


def test_version_and_examples_from_the_console_command() -> None:
    exe = Path(sys.executable).with_name("pytest-memorization")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pytest_memorization"]
    out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"pytest-memorization {pytest_memorization.__version__}"
    helptext = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=True).stdout
    assert "examples:" in helptext and "pytest-memorization merge" in helptext
    merge = subprocess.run([*cmd, "merge", "--help"], capture_output=True, text=True, check=True).stdout
    assert "REPORT_DIR" in merge and "--memorization-report=DIR" in merge


def test_pytest_help_shows_metavars_defaults_and_typed_ini_keys(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    out = result.stdout.str()
    for expected in ("--memorization-lora-scale=X", "--memorization-model=PATH", "--memorization-seeds=SEEDS",
                     "--memorization-dtype={auto,float32,float16,bfloat16}", "--memorization-shard=I/N"):
        assert expected in out, expected
    assert "MEMORIZATION_" not in out  # argparse's default metavars are gone
    assert "Default: 0.1." in out  # warn band
    assert "memorization_steps (int)" in out and "memorization_warn_band (float)" in out


@pytest.mark.parametrize("ini, message", [
    ("memorization_steps = abc", "--memorization-steps (ini memorization_steps) = 'abc': expected a number"),
    ("memorization_steps = 0", "--memorization-steps (ini memorization_steps) = 0: expected an integer >= 1"),
    ("memorization_warn_band = lots", "--memorization-warn-band (ini memorization_warn_band) = 'lots': expected"),
])
def test_a_bad_typed_ini_value_names_the_key(pytester: pytest.Pytester, ini: str, message: str) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])
    assert "Traceback" not in result.stderr.str()

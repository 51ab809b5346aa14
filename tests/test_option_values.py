"""Options that cannot move the root or hide the ini (pytest 8 and 9).

pytest picks the root folder and the ini from the command line's paths before plugin options
exist, so in ``--memorization-compare ../ci/b.json`` it took ``../ci/b.json`` for a test path:
the root moved to the parent, the project's ini (with ``memorization_required``) was not read,
and the run passed. Written with a space, a path outside the project is now a usage error that
says to write ``--memorization-compare=../ci/b.json``; with ``=`` the ini is read.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def userproj(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """<tmp>/userproj (ini: memorization_required) and <tmp>/ci/{b.json, artifacts/}; cwd = userproj."""
    proj = pytester.mkdir("userproj")
    (proj / "pytest.ini").write_text("[pytest]\nmemorization_required = true\n")
    (proj / "test_x.py").write_text("def test_x():\n    pass\n")
    ci = pytester.mkdir("ci")
    (ci / "b.json").write_text("{}")
    (ci / "artifacts").mkdir()
    monkeypatch.chdir(proj)
    return proj


@pytest.mark.parametrize("opt,value", [("--memorization-compare", "../ci/b.json"),
                                       ("--memorization-report", "../ci/artifacts")])
def test_a_path_value_after_a_space_is_a_usage_error_that_names_the_fix(
        pytester: pytest.Pytester, userproj: Path, opt: str, value: str) -> None:
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", opt, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{opt} {value}: write {opt}={value} (with '=')*memorization_required*"])
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "--memorization", opt, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_with_equals_the_ini_is_read_and_required_holds(pytester: pytest.Pytester, userproj: Path) -> None:
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "--memorization-report=../ci/artifacts")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # the project's memorization_required was read
    result.stderr.fnmatch_lines(["*memorization_required is set*add --memorization*"])
    # and with --memorization but nothing to check, required still cannot end in exit 0
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "--memorization", "--memorization-report=../ci/artifacts")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*no memorization check ran*certifies nothing*"])


def test_a_value_inside_the_project_may_use_a_space(pytester: pytest.Pytester, userproj: Path) -> None:
    (userproj / "report").mkdir()
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "--memorization-report", "report")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # the ini was read: memorization_required
    result.stderr.fnmatch_lines(["*memorization_required is set*"])

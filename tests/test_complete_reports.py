"""A report says PASS only when the run finished: crashes, killed workers, internal errors and
collection errors mark it incomplete with the reason; a report folder is replaced in one move, so
a new run never mixes with an old one; baselines are never written from such a run."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch  # noqa: F401  imported here once: an in-process run must not import it afresh

GOOD_TEST = """
import pytest
import torch
from pytest_memorization import assert_not_memorized

@pytest.mark.memorization
def test_ok():
    g = torch.Generator().manual_seed(0)
    assert_not_memorized(torch.rand(1, 3, 32, 32, generator=g), {"w": torch.rand(3, 32, 32, generator=g)})
"""

KILLED_TEST = """
import os, signal
import pytest

@pytest.mark.memorization
def test_dies():
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def proj(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_a_ok=GOOD_TEST)
    pytester.makeini(f"[pytest]\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    return pytester


def _report(root: Path) -> dict:
    return json.loads((root / "rep" / "report.json").read_text())


def _incomplete(root: Path, result: pytest.RunResult, reason: str, summary: bool = True) -> None:
    assert result.ret != pytest.ExitCode.OK, result.stdout.str()[-1500:]
    report = _report(root)
    assert report["complete"] is False
    assert any(reason in r for r in report["incomplete_reasons"]), report["incomplete_reasons"]
    if summary:  # pytest prints no terminal summary after an internal error
        result.stdout.fnmatch_lines(["*memorization: INCOMPLETE*", f"*INCOMPLETE: *{reason}*"])
    assert "PASS" not in "\n".join(line for line in result.stdout.lines if line.startswith("memorization:"))
    assert not (root / "base.json").exists(), "no baseline from an incomplete run"


def test_a_killed_xdist_worker_makes_the_report_incomplete(proj: pytest.Pytester) -> None:
    proj.makepyfile(test_b_dies=KILLED_TEST)
    result = proj.runpytest("-p", "xdist", "-n", "1", "--memorization", "--memorization-report", "rep",
                            "--memorization-save", "base.json")
    _incomplete(proj.path, result, "worker died while running test_b_dies.py::test_dies")
    assert len(_report(proj.path)["results"]) == 1  # the finished item is still reported


@pytest.mark.parametrize("broken", ["test_c_broken.py", "memorization.toml"])
def test_a_collection_error_with_continue_makes_the_report_incomplete(proj: pytest.Pytester, broken: str) -> None:
    (proj.path / broken).write_text("def oops(:\n" if broken.endswith(".py") else "[model\n")
    result = proj.runpytest("--continue-on-collection-errors", "--memorization", "--memorization-report", "rep",
                            "--memorization-save", "base.json")
    _incomplete(proj.path, result, f"could not collect {broken}")


def test_an_internal_error_makes_the_report_incomplete_and_writes_no_baseline(proj: pytest.Pytester) -> None:
    proj.makeconftest("""
        def pytest_runtest_logfinish(nodeid, location):
            raise RuntimeError("boom after the item")
    """)
    result = proj.runpytest_subprocess("--memorization", "--memorization-report", "rep",
                                       "--memorization-save", "base.json")
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    _incomplete(proj.path, result, "internal error", summary=False)


def test_the_good_case_is_complete_and_writes_the_baseline(proj: pytest.Pytester) -> None:
    result = proj.runpytest("--memorization", "--memorization-report", "rep", "--memorization-save", "base.json")
    result.assert_outcomes(passed=1)
    report = _report(proj.path)
    assert report["complete"] is True and "incomplete_reasons" not in report
    assert json.loads((proj.path / "base.json").read_text())["entries"]


def test_a_new_run_replaces_the_report_folder_whole(proj: pytest.Pytester) -> None:
    root = proj.path
    proj.runpytest("--memorization", "--memorization-report", "rep").assert_outcomes(passed=1)
    (root / "rep" / "images" / "left-by-an-old-run.png").write_bytes(b"old")
    (root / ".rep.partial").mkdir()  # left by a run that was killed: it carries the plugin's marker
    (root / ".rep.partial" / ".pytest-memorization-report").write_text("")
    (root / ".rep.partial" / "junk.png").write_bytes(b"junk")
    proj.runpytest("--memorization", "--memorization-report", "rep").assert_outcomes(passed=1)
    assert not (root / "rep" / "images" / "left-by-an-old-run.png").exists()
    assert not (root / ".rep.partial").exists()
    assert _report(root)["complete"] is True


def test_a_run_killed_while_writing_leaves_the_old_report_untouched(proj: pytest.Pytester) -> None:
    root = proj.path
    proj.runpytest("--memorization", "--memorization-report", "rep").assert_outcomes(passed=1)
    before = {p.relative_to(root / "rep"): p.read_bytes() for p in (root / "rep").rglob("*") if p.is_file()}
    proj.makepyfile(test_b_dies=KILLED_TEST)
    proj.runpytest_subprocess("--memorization", "--memorization-report", "rep")  # the whole run is killed
    after = {p.relative_to(root / "rep"): p.read_bytes() for p in (root / "rep").rglob("*") if p.is_file()}
    assert after == before, "the old report must not be mixed with the killed run's images"
    assert list((root / ".rep.partial").rglob("*.png")), "the killed run wrote only into its staging folder"


def test_a_full_disk_is_our_error_and_keeps_the_old_report(proj: pytest.Pytester,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_memorization.reports import writer

    root = proj.path
    proj.runpytest("--memorization", "--memorization-report", "rep").assert_outcomes(passed=1)
    old = (root / "rep" / "report.json").read_bytes()

    def full(path: object) -> None:  # the writer streams each file into a temporary path: the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "atomic_path", full)
    result = proj.runpytest("--memorization", "--memorization-report", "rep", "--memorization-save", "base.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*ERROR: could not write the report */rep: *No space left on device*free space*",
                                 "*ERROR: baseline not written: the report could not be written*"])
    assert (root / "rep" / "report.json").read_bytes() == old
    assert not (root / "base.json").exists()
    assert "Traceback" not in result.stdout.str()


FAILING_TEST = """
import pytest
import torch
from pytest_memorization import assert_not_memorized

@pytest.mark.memorization
def test_copy():
    w = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert_not_memorized(w[None], {"w": w})
"""


def test_stopping_early_with_x_makes_the_report_incomplete(proj: pytest.Pytester) -> None:
    """-x stops after the first failure: the items after it never ran, so the report is not complete."""
    proj.makepyfile(test_0_copy=FAILING_TEST)
    result = proj.runpytest("-x", "--memorization", "--memorization-report", "rep", "--memorization-save", "base.json")
    result.assert_outcomes(failed=1)
    _incomplete(proj.path, result, "1 memorization item(s) did not run: test_a_ok.py::test_ok")
    ran = proj.runpytest("--memorization", "--memorization-report", "rep")  # the good case: no -x, all ran
    ran.assert_outcomes(failed=1, passed=1)
    assert _report(proj.path)["complete"] is True

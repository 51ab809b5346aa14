"""The run's one progress line: visible on a real (pseudo-)terminal although pytest captures the
item's output, plain lines without a terminal and under -q, counted by the controller under
pytest-xdist -n 2, nothing with --memorization-progress=off."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"memorization: (\d+)/(\d+) images \((\d+)%\), \d+:\d\d elapsed, (ETA \d+:\d\d|done)")


def _project(pytester: pytest.Pytester, tiny_pipeline: Path) -> Path:
    from gate_projects import TINY_MODEL_TOML, gate_project

    gate_project(pytester, tiny_pipeline)
    pytester.path.joinpath("memorization.toml").write_text(
        TINY_MODEL_TOML.format(prefix="", seeds="[0, 1]").replace("height = 64\nwidth = 64", "height = 32\nwidth = 32")
        + '[[work]]\nid = "astronaut"\nimage = "works/astronaut.png"\nprompts = ["a photo of an astronaut"]\n'
        + '[[work]]\nid = "coffee"\nimage = "works/coffee.png"\nprompts = ["a cup of coffee"]\n')
    return pytester.path


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", COLUMNS="160", LINES="40", TERM="xterm")
    env.pop("PYTEST_ADDOPTS", None)
    return env


def _in_pty(args: list[str], cwd: Path) -> str:
    """Run pytest with stdout and stderr on a pseudo-terminal; everything the terminal received."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=cwd, env=_env(), stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=600)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_the_live_line_reaches_a_terminal_through_pytests_capture(pytester: pytest.Pytester,
                                                                  tiny_pipeline: Path) -> None:
    root = _project(pytester, tiny_pipeline)
    out = _in_pty(["--memorization", "-p", "no:cacheprovider", "--memorization-generation-cache=false"], root)
    found = [tuple(map(int, m.groups()[:3])) for m in LINE.finditer(out)]
    assert "2 passed" in out, out
    assert (2, 4, 50) in found and (4, 4, 100) in found, out  # drawn while the items ran, the whole run's total
    assert "ETA" in out
    assert "\x1b7 [memorization: " in out and "\x1b8\x1b[K" in out  # drawn in place, erased before pytest writes
    assert "Captured stderr" not in out and "it/s" not in out  # no progress-bar frames from stderr


def test_without_a_terminal_plain_lines_and_under_xdist_the_controller_counts(pytester: pytest.Pytester,
                                                                             tiny_pipeline: Path) -> None:
    pytest.importorskip("xdist")
    _project(pytester, tiny_pipeline)
    common = ["--memorization", "-p", "no:cacheprovider", "--memorization-progress-every=0"]
    result = pytester.runpytest_subprocess(*common, "-n", "2", "-v")  # -v: a line per item, counts between
    result.assert_outcomes(passed=2)
    found = [tuple(map(int, m.groups()[:3])) for m in LINE.finditer(result.stdout.str())]
    assert found[-1] == (4, 4, 100), result.stdout.str()
    assert "\x1b7" not in result.stdout.str()  # not a terminal: plain lines, no cursor movement
    assert all(m.start() == 0 or result.stdout.str()[m.start() - 1] == "\n"
               for m in LINE.finditer(result.stdout.str())), "a count on its own line, between the items' lines"

    quiet = pytester.runpytest_subprocess(*common, "-q")  # -q: still the plain lines
    quiet.assert_outcomes(passed=2)
    out = quiet.stdout.str()
    assert [m.group(1) for m in LINE.finditer(out)][-1] == "4"
    assert re.search(r"^\.\. +\[100%\]$", out, re.MULTILINE), out  # pytest's dots stay on one line
    plain = pytester.runpytest_subprocess(*common)
    plain.assert_outcomes(passed=2)
    out = plain.stdout.str()
    assert re.search(r"^memorization\.toml \.\. +\[100%\]$", out, re.MULTILINE), out
    assert [m.group(1) for m in LINE.finditer(out)] == ["4"], out  # the count once the dots are done
    off = pytester.runpytest_subprocess(*common, "--memorization-progress=off")
    off.assert_outcomes(passed=2)
    assert not LINE.search(off.stdout.str())


def test_line_and_eta() -> None:
    from pytest_memorization.run.progress import line

    assert line(5, 20, 10.0) == "memorization: 5/20 images (25%), 0:10 elapsed, ETA 0:30"
    assert line(20, 20, 3725.0) == "memorization: 20/20 images (100%), 1:02:05 elapsed, done"
    assert line(0, 20, 1.0).endswith("ETA -")

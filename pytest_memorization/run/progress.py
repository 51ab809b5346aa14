"""One progress line for the whole run: images done / total, elapsed, ETA.

Written by the process that owns the terminal (the controller under pytest-xdist) through
pytest's terminal reporter, with capture suspended around each write (as pytest's live logging
does), so capture never swallows it.

- ``live`` (a TTY without ``-q``): the line is drawn at the end of pytest's current line and
  erased (restore cursor, clear to end of line) before pytest writes anything else; in-process
  it moves with every batch of images.
- ``plain`` (not a TTY, or ``-q``): a plain line at most every ``--memorization-progress-every``
  seconds, written only where pytest's own line is finished: with ``-v`` (one line per item)
  between items; with pytest's dots (``.F``), never inside a line of dots, so a log keeps
  pytest's normal output; the last count is written once the run is over (``final``); ``off`` (``-qq``, or ``--memorization-progress=off``): nothing.

The total is the sum of each collected item's ``expected_images``. Under pytest-xdist the
controller collects nothing and workers cannot write to its terminal: each item's setup report
carries ``memorization_progress`` {images, total} (as results do), and the controller counts an
item's images when its setup report arrives (per item, not per batch).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

SAVE, RESTORE_AND_CLEAR = "\x1b7", "\x1b8\x1b[K"


def mode_for(setting: str, config: pytest.Config) -> str:
    if setting == "off" or hasattr(config, "workerinput"):
        return "off"
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None or config.get_verbosity() <= -2:
        return "off"
    if setting == "plain" or config.get_verbosity() < 0 or not getattr(tr, "isatty", False):
        return "plain"
    return "live"


def clock(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def line(done: int, total: int, elapsed: float) -> str:
    if total <= 0:
        return f"memorization: {done} images, {clock(elapsed)} elapsed"
    done = min(done, total)
    eta = f"ETA {clock(elapsed * (total - done) / done)}" if 0 < done < total else \
        ("done" if done >= total else "ETA -")
    return f"memorization: {done}/{total} images ({100 * done // total}%), {clock(elapsed)} elapsed, {eta}"


class Progress:
    def __init__(self, config: pytest.Config, setting: str = "auto", every: float = 30.0) -> None:
        self.config = config
        self.setting = setting
        self._mode: str | None = None
        self.every = every
        self.total = 0  # images the collected items will make
        self.done = 0  # images of finished items
        self.in_item = 0  # images of the running item so far (in-process only)
        self.expected = 0  # images the running item will make
        self.started: float | None = None
        self.last_plain: float | None = None
        self.drawn = False
        self.was_drawn = False  # erased only for pytest to write: draw it again after
        self.changed = False  # counts moved since the last refresh
        self.printed: tuple[int, int] | None = None  # the counts of the last plain line
        self._line_done = False  # inside refresh(item_done=True): pytest's line for the item is complete

    @property
    def mode(self) -> str:
        """live, plain or off; decided at first use (the terminal reporter registers after our configure)."""
        if self._mode is None:
            self._mode = mode_for(self.setting, self.config)
        return self._mode

    # -- counting (any process) -------------------------------------------------------------
    def collected(self, items: list[Any]) -> None:
        self.total = sum(_expected(i) for i in items)

    def begin(self) -> None:
        if self.started is None:
            self.started = time.monotonic()

    def start_item(self, item: Any) -> None:
        self.begin()
        self.in_item, self.expected = 0, _expected(item)

    def on_images(self, n: int) -> None:
        """A model finished ``n`` images (generated or from the cache), in this process."""
        self.in_item += n
        self.show()

    def tag(self, item: Any, report: pytest.TestReport) -> None:
        """The item's counts travel with its setup report (to the controller under xdist)."""
        report.memorization_progress = {"images": _expected(item), "total": self.total}  # type: ignore[attr-defined]

    # -- the controller ---------------------------------------------------------------------
    def item_done(self, report: pytest.TestReport) -> None:
        if report.when != "setup":
            return
        self.in_item = self.expected = 0
        carried = getattr(report, "memorization_progress", None)
        if not isinstance(carried, dict):
            return
        if self.started is None:
            self.started = time.monotonic()
        self.total = max(self.total, int(carried.get("total", 0)))
        self.done += int(carried.get("images", 0))
        self.changed = True

    def shown(self) -> int:
        return self.done + min(self.in_item, self.expected)

    def text(self) -> str:
        elapsed = time.monotonic() - (self.started or time.monotonic())
        return line(self.shown(), self.total, elapsed)

    def show(self) -> None:
        if self.mode == "off" or (self.total == 0 and self.done == 0):
            return
        if self.mode == "plain":
            now, counts = time.monotonic(), (self.shown(), self.total)
            last = self.total > 0 and counts[0] >= self.total  # the last line is always printed
            if counts == self.printed or (not last and self.last_plain is not None
                                          and now - self.last_plain < self.every):
                return
            if not self._line_free():
                self.changed = True  # written at the next free line, or by final()
                return
            self.last_plain, self.printed = now, counts
            self._write(self._plain)
            return
        self._write(self._draw)

    def refresh(self, item_done: bool = False) -> None:
        """After pytest wrote a report: draw the live line again, or print a plain line if counts moved.
        ``item_done``: pytest has finished the item's line (its outcome and percentage)."""
        again = self.changed or (self.mode == "live" and self.was_drawn)
        self.changed = self.was_drawn = False
        self._line_done = item_done
        try:
            if again:
                self.show()
        finally:
            self._line_done = False

    def final(self) -> None:
        """After the run loop (pytest's dots are done): the last plain count, if it was not written."""
        if self.mode == "plain" and self.printed != (self.shown(), self.total) and (self.total or self.done):
            self.printed = (self.shown(), self.total)
            self._write(self._plain)

    def _plain(self, tr: Any) -> None:
        if int(getattr(tr._tw, "width_of_current_line", 0)):
            tr._tw.line()  # after pytest's finished line ("..  [100%]"), never at its end
        tr.write_line(self.text())

    def _line_free(self) -> bool:
        """Whether a plain line here would not split pytest's line: its current line is empty, or it
        writes one line per item (-v), which is complete once the item has finished."""
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None:
            return False
        if self.config.get_verbosity() > 0 and self._line_done:
            return True
        return int(getattr(tr._tw, "width_of_current_line", 0)) == 0

    def erase(self) -> None:
        if self.drawn:
            self.was_drawn = True
            self._write(self._undraw)

    def _draw(self, tr: Any) -> None:
        self._undraw(tr)
        room = tr._tw.fullwidth - tr._tw.width_of_current_line - 2
        text = self.text()
        if room < 24:
            return
        _raw(tr, f"{SAVE} [{text[:room - 3]}]")
        self.drawn = True

    def _undraw(self, tr: Any) -> None:
        if self.drawn:
            _raw(tr, RESTORE_AND_CLEAR)
            self.drawn = False

    def _write(self, fn: Any) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None:
            return
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        if capman is None:
            fn(tr)
            return
        with capman.global_and_fixture_disabled():
            fn(tr)


def _raw(tr: Any, text: str) -> None:
    """Escape sequences straight to the terminal, outside the writer's count of the line's width."""
    f = tr._tw._file
    f.write(text)
    f.flush()


def _expected(item: Any) -> int:
    fn = getattr(item, "expected_images", None)
    try:
        return int(fn()) if fn is not None else 0
    except Exception:  # a broken manifest item errors in its own setup, with its own message
        return 0

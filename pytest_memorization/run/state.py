"""The one home of run state. Everything a run holds is reached from here, nowhere else:

- ``config.stash``: the resolved ``Settings`` and the ``MemorizationSession`` (models, metrics,
  results, run info) of this pytest run: ``settings_of(config)``, ``session_of(config)``;
- ``item.stash``: the result rows of the running item (``attach``), which travel with its report;
- ``active()`` / ``current_item()``: the session and item of the running test, for the Python
  assertion helpers, which are called without a ``request``. Only this module sets them.

Cheap to import: the plugin imports it at start-up.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..config.options import Settings
    from ..records import ImageResult
    from .session import MemorizationSession

SKIP_REASON = "memorization checks are off: run pytest --memorization"
SETTINGS_KEY = pytest.StashKey["Settings"]()
SESSION_KEY = pytest.StashKey["MemorizationSession"]()
RESULTS_KEY = pytest.StashKey[list]()  # the ImageResult rows of the running item
WORKS_KEY = pytest.StashKey[dict]()  # work id -> Work, for a Python test's report thumbnails

_current_item: contextvars.ContextVar[Any] = contextvars.ContextVar("memorization_item", default=None)
_active: list[MemorizationSession] = []  # the running session (at most one per process)


def settings_of(config: pytest.Config) -> Settings:
    return config.stash[SETTINGS_KEY]


def session_of(config: pytest.Config) -> MemorizationSession | None:
    return config.stash.get(SESSION_KEY, None)


def start(config: pytest.Config, settings: Settings, session: MemorizationSession | None) -> None:
    config.stash[SETTINGS_KEY] = settings
    if session is not None:
        config.stash[SESSION_KEY] = session
        _active[:] = [session]


def stop(session: MemorizationSession) -> None:
    if _active and _active[0] is session:
        _active.clear()


def active() -> MemorizationSession | None:
    """The running session, when pytest runs with ``--memorization`` (else None)."""
    return _active[0] if _active else None


def enter_item(item: Any) -> contextvars.Token[Any]:
    return _current_item.set(item)


def leave_item(token: contextvars.Token[Any]) -> None:
    _current_item.reset(token)


def current_item() -> Any:
    return _current_item.get()


def attach(item: Any, results: list[ImageResult], works: list[Any] | None = None) -> None:
    """Attach results (and the works they were scored against) to the running test item (they travel
    with its report)."""
    if item is not None:
        item.stash.setdefault(RESULTS_KEY, []).extend(results)
        if works:  # manifest items find their works through their plan
            item.stash.setdefault(WORKS_KEY, {}).update({w.id: w for w in works})


def record_collected(session: Any, pytest_session: pytest.Session) -> None:
    """The node ids this run knows (selected and deselected), for telling stale baseline entries from
    those of deselected items. They stay unknown (None) when the run did not collect everything: an
    xdist controller collects nothing, node ids on the command line and --lf collect only some items."""
    config = pytest_session.config
    if config.pluginmanager.getplugin("dsession") is not None or config.getoption("lf", False) \
            or any("::" in str(a) for a in config.args):
        return
    session.known_items = {i.nodeid for i in pytest_session.items} | session.deselected

"""pytest hooks, and nothing else: each hook hands off to a module that owns the concern.

Costs nothing when unused: without ``--memorization`` this module imports no torch,
diffusers or open_clip, and memorization tests are reported as skipped with a reason.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import pytest

from .config import options
from .errors import printable
from .run import state
from .run.configure import configure, receive_report, select_items
from .run.fixtures import memorization_model, memorization_settings  # noqa: F401  (registers the fixtures)
from .run.state import session_of, settings_of


def pytest_addoption(parser: pytest.Parser) -> None:
    options.addoption(parser)


def pytest_configure(config: pytest.Config) -> None:
    configure(config)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Any:
    if file_path.suffix != ".toml":
        return None
    settings = settings_of(parent.config)
    explicit = {Path(m).resolve() for m in settings.manifest}
    if fnmatch.fnmatch(file_path.name, settings.manifests) or file_path.resolve() in explicit:
        from .run.items import ManifestFile

        return ManifestFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    select_items(config, items)


def pytest_deselected(items: list[pytest.Item]) -> None:
    run = session_of(items[0].config) if items else None
    if run is not None:
        run.deselected.update(i.nodeid for i in items)


def pytest_collection_finish(session: pytest.Session) -> None:
    run = session_of(session.config)
    if run is not None:
        from .run.state import record_collected

        record_collected(run, session)
        if run.progress is not None:
            run.progress.collected(session.items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    token = state.enter_item(item)
    try:
        return (yield)
    finally:
        state.leave_item(token)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    session = session_of(item.config)
    if session is not None and (report.when == "call" or (report.when == "setup" and report.failed)):
        from .run.outputs import finish_item

        finish_item(session, item, report)
    if session is not None and session.progress is not None and report.when == "setup" \
            and hasattr(item, "expected_images"):
        session.progress.tag(item, report)
    return report


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_logstart(nodeid: str, location: Any) -> Any:
    session = state.active()
    if session is not None:
        session.running.add(nodeid)  # removed at logfinish: what remains crashed or was killed
        if session.progress is not None:
            session.progress.erase()  # before pytest writes: the live line sits at the end of its line
            session.progress.begin()
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_logfinish(nodeid: str, location: Any) -> Any:
    session = state.active()
    if session is not None:
        session.running.discard(nodeid)
        if session.progress is not None:
            session.progress.erase()  # pytest writes the [ 50%] column here
    try:
        return (yield)
    finally:
        if session is not None and session.progress is not None:
            session.progress.refresh(item_done=True)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtestloop(session: pytest.Session) -> Any:
    try:
        return (yield)
    finally:  # inside the terminal reporter's wrapper: erased before it writes the final [100%]
        run = session_of(session.config)
        if run is not None and run.progress is not None:
            run.progress.erase()


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem: str, report: Any, sched: Any) -> None:  # pytest-xdist
    session = state.active()
    if session is not None:
        session.incomplete.append(f"a pytest-xdist worker died while running {crashitem}")


def pytest_internalerror(excrepr: Any, excinfo: Any) -> None:
    session = state.active()
    if session is not None:
        session.incomplete.append(f"internal error: {excinfo.typename}: {str(excinfo.value)[:200]}")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    session = state.active()
    if session is not None and report.failed:  # with --continue-on-collection-errors the run goes on
        session.incomplete.append(f"could not collect {report.nodeid or 'the test paths'}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> Any:
    session = state.active()
    if session is not None:
        receive_report(session, report)
        if session.progress is not None:
            session.progress.erase()
    try:
        return (yield)
    finally:
        if session is not None:
            # Every hook has seen the report (under xdist the worker has sent it), and the session holds
            # its rows and counts: the report pytest keeps until the end (terminal stats) needs no copy.
            for name in ("memorization_results", "memorization_run", "memorization_progress"):
                report.__dict__.pop(name, None)
        if session is not None and session.progress is not None:
            session.progress.refresh()  # after the terminal reporter wrote its outcome


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = session_of(session.config)
    if run is None or hasattr(session.config, "workerinput"):
        return
    if run.progress is not None:
        run.progress.erase()
        run.progress.final()  # the last plain count, once pytest's dots are done
    from .run.outputs import finish_session

    finish_session(run, session, exitstatus)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run = session_of(config)
    if run is not None and not hasattr(config, "workerinput"):
        from .run.outputs import summary_lines

        lines = summary_lines(run)
        if lines:
            terminalreporter.write_sep("=", "memorization")
            for line in lines:
                terminalreporter.write_line(printable(line))


def pytest_unconfigure(config: pytest.Config) -> None:
    run = session_of(config)
    if run is not None:
        state.stop(run)

"""What the plugin's hooks do at start-up, at collection and when a report arrives.

Cheap to import (the plugin imports it at start-up): the session, items and outputs modules are
imported only when ``--memorization`` is on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..config import options
from ..config.settings import resolve
from ..errors import MemorizationConfigError, printable
from . import state
from .state import SKIP_REASON, session_of, settings_of

if TYPE_CHECKING:
    from .session import MemorizationSession


def configure(config: pytest.Config) -> None:
    """``pytest_configure``: resolve and check the settings, start the run state, add manifests."""
    config.addinivalue_line(
        "markers", "memorization(**settings): a memorization test; runs only with --memorization. Keyword "
        "settings (seeds, thresholds, steps, ...) override the command line and ini.")
    try:
        options.check_value_form(config.invocation_params.args, config.invocation_params.dir)
        settings = resolve(config)
    except MemorizationConfigError as e:
        raise pytest.UsageError(str(e)) from None
    state.start(config, settings, None)
    _seal_key(config, settings)
    if settings.required and not settings.enabled:
        raise pytest.UsageError(
            "memorization_required is set, so this run must check memorization: add --memorization")
    if not settings.enabled:
        return
    from .session import MemorizationSession

    if not settings.allow_download:
        import os

        os.environ["HF_HUB_OFFLINE"] = "1"  # before any Hugging Face import
    run = MemorizationSession(settings, verbosity=config.get_verbosity())
    from .progress import Progress

    run.progress = Progress(config, settings.progress, settings.progress_every)
    state.start(config, settings, run)
    if not hasattr(config, "workerinput"):  # the controller checks output paths and starts the staging folder
        from .outputs import prepare

        try:
            prepare(run)
        except MemorizationConfigError as e:
            raise pytest.UsageError(str(e)) from None
    for manifest in settings.manifest:
        path = Path(manifest).resolve()
        if not path.is_file():
            raise pytest.UsageError(printable(f"--memorization-manifest {manifest}: no such file ({path})"))
        if not any(path == Path(a).resolve() or Path(a).resolve() in path.parents for a in config.args):
            config.args.append(str(path))


def _seal_key(config: pytest.Config, settings: Any) -> None:
    """The cache seal's key: this project's, or the CI secret's. Under a policy, a secret key is refused
    while conftest.py files (code of the pull request) load into this process: pass --noconftest."""
    from .. import _io

    _io.use_cache_project(settings.rootdir)
    if _io.cache_key_source() == "project":
        return
    try:
        _io.cache_secret()
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    if settings.policy is not None and settings.enabled and not config.getoption("noconftest", False):
        raise pytest.UsageError(
            f"${_io.CACHE_KEY_ENV if _io.cache_key_source() == 'secret' else _io.CACHE_KEY_FILE_ENV} gives the cache "
            f"key under the policy {settings.policy.path}, but conftest.py files (code of the pull request) load into "
            "this process and could read it and forge cache entries: run with --noconftest, or drop the key (the "
            "cache then uses a per-project key and a restored cache misses)")


def select_items(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``pytest_collection_modifyitems``: skip without the flag; calibration only; this shard only."""
    if session_of(config) is None:
        skip = pytest.mark.skip(reason=SKIP_REASON)
        for item in items:
            if item.get_closest_marker("memorization"):
                item.add_marker(skip)
        return
    if settings_of(config).calibrate:
        from .items import calibration_only

        keep, drop = calibration_only(session_of(config), items)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
    shard = settings_of(config).shard
    if shard:
        from .sharding import read_durations, split, weights

        s = settings_of(config)
        try:
            durations = read_durations(s.path("shard_durations"), s.raw("shard_durations")) \
                if s.shard_durations else None
        except MemorizationConfigError as e:
            raise pytest.UsageError(str(e)) from None
        keep, drop = split(items, *shard, cost=weights(items, durations))
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep


def receive_report(session: MemorizationSession, report: pytest.TestReport) -> None:
    """``pytest_runtest_logreport`` (where every xdist worker's reports arrive): results, run info,
    what went incomplete, how many checks ran."""
    why = getattr(report, "memorization_incomplete", None)
    if why:
        session.incomplete.append(str(why))
    if report.when == "call" and "memorization" in report.keywords:
        session.checks_seen += 1  # counted where every worker's reports arrive
    if report.when in ("setup", "call") and "memorization" in report.keywords:  # what --memorization-shard-durations reads
        session.durations[report.nodeid] = round(session.durations.get(report.nodeid, 0.0) + report.duration, 4)
    run = getattr(report, "memorization_run", None)
    if run:
        session.merge_run(run)
    results = getattr(report, "memorization_results", None)
    if results:
        session.add_results(results)
    if session.progress is not None:
        session.progress.item_done(report)

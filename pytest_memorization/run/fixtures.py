"""Fixtures for Python memorization tests. Importing this module imports nothing heavy."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def memorization_model(request: pytest.FixtureRequest) -> Any:
    """The model under test, loaded once per session (per xdist worker) from --memorization-model /
    ini memorization_model, with --memorization-lora if given. Skips without --memorization."""
    from .state import SKIP_REASON, session_of

    session = session_of(request.config)
    if session is None:
        pytest.skip(SKIP_REASON)
    from ..errors import MemorizationConfigError

    try:
        source = session.source(session.model_path("model"), config=session.model_path("config"),
                                lora=session.model_path("lora"), generator=session.settings.generator)
        model = session.model(source)
    except MemorizationConfigError as e:  # our message (checkpoint errors included), not a traceback
        pytest.fail(f"memorization_model: {e}", pytrace=False)
    session.record_run(model, {})  # the report names the model of Python tests too
    return model


@pytest.fixture
def memorization_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings for this test: marker keywords > command line > ini > default (thresholds: the
    strictest of the marker's and the command line's / ini's wins).

    Keys: seeds, steps, guidance_scale, height, width, thresholds, warn, metrics.
    """
    from ..config.settings import DEFAULT_METRICS
    from .state import settings_of

    s = settings_of(request.config)
    g = s.generation()
    merged: dict[str, Any] = {
        "seeds": s.seeds_for(), "steps": g.steps, "guidance_scale": g.guidance_scale,
        "height": g.height, "width": g.width, "thresholds": dict(s.threshold), "warn": {},
        "metrics": s.metrics or list(DEFAULT_METRICS),
    }
    marker = request.node.get_closest_marker("memorization")
    if marker is not None:
        unknown = set(marker.kwargs) - set(merged)
        if unknown:
            raise pytest.UsageError(f"{request.node.nodeid}: @pytest.mark.memorization got unknown keyword(s) "
                                    f"{sorted(unknown)}; known: {sorted(merged)}")
        for k, v in marker.kwargs.items():
            merged[k] = {**merged[k], **v} if k in ("thresholds", "warn") else v
        from ..config.policy import with_floors

        merged["thresholds"] = with_floors(merged["thresholds"], s.threshold)  # the CI's are floors
    return merged

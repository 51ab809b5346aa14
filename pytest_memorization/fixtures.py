"""Fixtures for Python memorization tests. Importing this module imports nothing heavy."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def memorization_model(request: pytest.FixtureRequest) -> Any:
    """The model under test, loaded once per session (per xdist worker) from --memorization-model /
    ini memorization_model, with --memorization-lora if given. Skips without --memorization."""
    from .plugin import SKIP_REASON, session_of

    session = session_of(request.config)
    if session is None:
        pytest.skip(SKIP_REASON)
    source = session.source(session.model_path("model"), config=session.model_path("config"),
                            lora=session.model_path("lora"))
    return session.model(source)


@pytest.fixture
def memorization_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings for this test: marker keywords > command line > ini > default.

    Keys: seeds, steps, guidance_scale, height, width, thresholds, warn, metrics.
    """
    from .plugin import settings_of
    from .session import DEFAULT_METRICS

    s = settings_of(request.config)
    merged: dict[str, Any] = {
        "seeds": s.seeds or [0, 1, 2, 3], "steps": s.steps or 25, "guidance_scale": 7.5,
        "height": 512, "width": 512, "thresholds": dict(s.threshold), "warn": {},
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
    return merged

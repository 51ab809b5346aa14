"""Fixtures for the report tests; the builders live in _factory.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ._factory import make_results, photo


@pytest.fixture(scope="session")
def works() -> dict[str, Any]:
    """Public-domain / CC0 photos bundled with scikit-image (astronaut: NASA; chelsea, coffee: CC0)."""
    return {"astronaut": photo("astronaut"), "chelsea": photo("chelsea"), "coffee": photo("coffee")}


@pytest.fixture
def report_inputs(tmp_path: Path, works: dict[str, Any]) -> tuple[Path, dict, list[dict]]:
    d = tmp_path / "report"
    run, results = make_results(d, works)
    return d, run, results


@pytest.fixture
def card_inputs(tmp_path: Path, works: dict[str, Any]) -> tuple[Path, dict, list[dict]]:
    """``report_inputs`` plus one item of four seeds (its failing seed is not the first)."""
    d = tmp_path / "report"
    run, results = make_results(d, works, four_seeds=True)
    return d, run, results

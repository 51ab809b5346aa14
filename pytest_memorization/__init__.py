"""pytest-memorization: fail a test run when a diffusion model reproduces protected works.

The public API is imported lazily: ``import pytest_memorization`` costs nothing, and
torch is only imported when a helper is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "assert_not_memorized": "run.assertions",
    "assert_not_memorized_prompt": "run.assertions",
    "nearest_works": "run.assertions",
    "evaluate": "run.assertions",
    "MemorizationError": "errors",
    "MemorizationConfigError": "errors",
    "ManifestError": "errors",
    "CheckpointError": "errors",
    "WeightsNotFoundError": "errors",
    "MetricFailedError": "errors",
    "BrokenOutputError": "errors",
    "BaselineError": "errors",
    "Work": "records",
    "Finding": "records",
    "GenerationSettings": "records",
    "ImageResult": "records",
    "Generation": "records",
    "MemorizationModel": "model.generation",
    "get_metric": "metrics",
    "load_manifest": "manifest.load",
}
__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from .errors import (  # noqa: F401
        BaselineError,
        BrokenOutputError,
        CheckpointError,
        ManifestError,
        MemorizationConfigError,
        MemorizationError,
        MetricFailedError,
        WeightsNotFoundError,
    )
    from .manifest.load import load_manifest  # noqa: F401
    from .metrics import get_metric  # noqa: F401
    from .model.generation import MemorizationModel  # noqa: F401
    from .records import Finding, Generation, GenerationSettings, ImageResult, Work  # noqa: F401
    from .run.assertions import assert_not_memorized, assert_not_memorized_prompt, evaluate, nearest_works  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'pytest_memorization' has no attribute {name!r}")

"""pytest-memorization: fail a test run when a diffusion model reproduces protected works.

The public API is imported lazily: ``import pytest_memorization`` costs nothing, and
torch is only imported when a helper is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "assert_not_memorized": "assertions",
    "assert_not_memorized_prompt": "assertions",
    "nearest_works": "assertions",
    "evaluate": "assertions",
    "MemorizationError": "errors",
    "MemorizationConfigError": "errors",
    "ManifestError": "errors",
    "CheckpointError": "errors",
    "WeightsNotFoundError": "errors",
    "MetricFailedError": "errors",
    "BrokenOutputError": "errors",
    "BaselineError": "errors",
    "Work": "records",
    "ImageResult": "records",
    "Generation": "records",
    "MemorizationModel": "generation",
    "get_metric": "metrics",
    "load_manifest": "manifest",
}
__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from .assertions import assert_not_memorized, assert_not_memorized_prompt, evaluate, nearest_works  # noqa: F401
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
    from .generation import MemorizationModel  # noqa: F401
    from .manifest import load_manifest  # noqa: F401
    from .metrics import get_metric  # noqa: F401
    from .records import Generation, ImageResult, Work  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'pytest_memorization' has no attribute {name!r}")

"""The errors users see. Each one names what is wrong, where, and how to fix it."""

from __future__ import annotations


class MemorizationError(AssertionError):
    """A generated image is too close to a protected work (or a gate crossed a tolerance)."""


class MemorizationConfigError(Exception):
    """Bad input: a manifest, option, image, checkpoint or weights file. Never a pass."""


class ManifestError(MemorizationConfigError):
    """A manifest file cannot be used. The message names the file, the key and the fix."""

    def __init__(self, path: object, message: str, *, key: str | None = None) -> None:
        self.path = path
        self.key = key
        where = f"{path}" + (f": key '{key}'" if key else "")
        super().__init__(f"{where}: {message}")


class CheckpointError(MemorizationConfigError):
    """A model or LoRA cannot be loaded as given."""


class WeightsNotFoundError(MemorizationConfigError):
    """A metric needs pretrained weights that are not on this machine."""


class MetricFailedError(Exception):
    """A metric could not run or returned NaN: the run cannot certify anything."""


class BrokenOutputError(Exception):
    """Generated images are NaN, black, blank or constant: a broken run, never a pass."""


class BaselineError(MemorizationConfigError):
    """A baseline file cannot be compared with this run."""

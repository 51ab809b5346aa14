"""The errors users see. Each one names what is wrong, where, and how to fix it."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but tab and newline
_COMMAND = re.compile(r"^(\s*):", re.MULTILINE)  # a line starting '::' is a GitHub workflow command


def printable(text: object) -> str:
    """``text`` safe to print: control characters (ESC, CR, ...) as ``\\xNN``, and no line starting
    with '::' (a value with a newline cannot forge terminal lines' colours or GitHub annotations)."""
    s = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))
    return _COMMAND.sub(lambda m: m.group(1) + "\\x3a", s) if "::" in s else s


_LINE_BREAKS = re.compile(r"[\n\r\u2028\u2029\x85]")


def one_line(text: object) -> str:
    """``text`` as one safe line, for a value from a file (a waiver reason, a work's file name) that reaches
    a terminal or CI log: newlines too become ``\\n``, so nothing in it can start a line of its own."""
    s = _LINE_BREAKS.sub(lambda m: "\\n" if m.group() == "\n" else f"\\x{ord(m.group()):02x}", str(text))
    return printable(s).replace("::", ":\\x3a")


class _Printable(Exception):
    def __str__(self) -> str:
        return printable(super().__str__())


class MemorizationError(_Printable, AssertionError):
    """A generated image is too close to a protected work (or a gate crossed a tolerance)."""


class MemorizationConfigError(_Printable):
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


class MetricFailedError(_Printable):
    """A metric could not run or returned NaN: the run cannot certify anything."""


class BrokenOutputError(_Printable):
    """Generated images are NaN, black, blank or constant: a broken run, never a pass."""


class BaselineError(MemorizationConfigError):
    """A baseline file cannot be compared with this run."""

"""Validation primitives for manifests: TOML reading and typed checks that raise ``ManifestError``.

Private to ``manifest.py``; split out to keep each module short. No torch here.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any, NoReturn

from ..errors import ManifestError, MemorizationConfigError

ROOT_MARKERS = ("pyproject.toml", "pytest.ini", "tox.ini", "setup.cfg", ".git")
# metric -> (low, high, high is included); direction is the metric's own
METRIC_RANGES: dict[str, tuple[float, float, bool]] = {
    "tiled_l2": (0.0, 1.0, True), "ssim": (-1.0, 1.0, True), "lpips": (0.0, 2.0, False),
    "clip": (-1.0, 1.0, True), "sscd": (-1.0, 1.0, True),
}
# example values shown in messages (the values of the manifest example in docs/manifest.md; not recommendations)
METRIC_EXAMPLES = {"tiled_l2": 0.15, "sscd": 0.5, "lpips": 0.2, "clip": 0.95, "ssim": 0.9}
TOP_KEYS = ("model", "thresholds", "warn", "metrics", "detectors", "work", "canary")
ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
MAX_PARAPHRASES = 32
ROOT_FIX = "pass --memorization-allow-outside-root or set memorization_allow_outside_root = true in the ini file"


def metric_names() -> tuple[str, ...]:
    """Known metric names, from ``pytest_memorization.metrics`` (which imports no torch)."""
    try:
        from ..metrics import METRIC_NAMES

        return tuple(METRIC_NAMES)
    except ImportError:  # the metrics package is optional for this check
        return tuple(METRIC_RANGES)


def project_root(path: str | Path) -> Path:
    """The nearest folder at or above the manifest's folder holding pyproject.toml, pytest.ini,
    tox.ini, setup.cfg or .git; else the manifest's own folder."""
    start = Path(path).expanduser().resolve().parent
    for folder in (start, *start.parents):
        if any((folder / m).exists() for m in ROOT_MARKERS):
            return folder
    return start


def tname(v: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "a table"}
    return next((n for t, n in names.items() if isinstance(v, t)), "a date/time")


class Checker:
    """Validation context: the file, its folder, the project root and the options."""

    def __init__(self, path: Path, allow_outside_root: bool, check_images: bool) -> None:
        self.file, self.dir = path, path.parent
        self.root = project_root(path)
        self.allow_outside_root, self.check_images = allow_outside_root, check_images

    def fail(self, key: str | None, message: str) -> NoReturn:
        raise ManifestError(self.file, message, key=key)

    def table(self, v: Any, key: str, allowed: tuple[str, ...], example: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            self.fail(key, f"expected a table, got {tname(v)} ({v!r:.60}); write it like {example}")
        for k in v:
            if k not in allowed:
                self.fail(f"{key}.{k}" if key else k, self.unknown(k, allowed, key))
        return v

    @staticmethod
    def unknown(k: str, allowed: tuple[str, ...] | list[str], where: str | None, what: str = "key") -> str:
        close = difflib.get_close_matches(k, list(allowed), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        if where and k in TOP_KEYS:
            head = where.split("[")[0].split(".")[0]
            head = f"[[{head}]]" if head in ("work", "canary") else f"[{head}]"
            hint += (f"In TOML, top-level keys such as '{k}' must come before the first table header; "
                     f"move it above the first table (it landed in {head}). ")
        return f"unknown {what} '{k}'; {hint}known: {', '.join(allowed)}"

    def string(self, v: Any, key: str, what: str = "a string") -> str:
        if not isinstance(v, str):
            fix = "write one string, not an array" if isinstance(v, list) else "put it in double quotes"
            self.fail(key, f"expected {what}, got {tname(v)} ({v!r:.60}); {fix}")
        if not v.strip():
            self.fail(key, f"is empty; write {what}")
        return v

    def integer(self, v: Any, key: str, low: int, fix: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            self.fail(key, f"{v!r:.60} is not an integer >= {low}; {fix}")
        return v

    def number(self, v: Any, key: str, low: float, high: float, *, open_low: bool = False,
               open_high: bool = False, fix: str = "") -> float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        try:
            f = float(v) if ok else math.nan
        except OverflowError:  # a TOML integer too large for a float
            f = math.nan
        inside = (f > low if open_low else f >= low) and (f < high if open_high else f <= high)
        if not (math.isfinite(f) and inside):
            rng = (f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}" if math.isfinite(high)
                   else f"{'>' if open_low else '>='} {low:g}")
            problem = (f"is {tname(v)}, not a number" if not ok else "is not a finite number"
                       if not math.isfinite(f) else "is out of range")
            self.fail(key, f"{v!r:.60} {problem}; expected a number {'in ' if rng[0] in '[(' else ''}{rng}"
                           f"{' (no quotes)' if isinstance(v, str) else ''}{f', {fix}' if fix else ''}")
        return f

    def strings(self, v: Any, key: str, example: str) -> list[str]:
        if not isinstance(v, list):
            self.fail(key, f"expected an array of strings, got {tname(v)}; write {example}")
        if not v:
            self.fail(key, f"is empty; list at least one, e.g. {example}")
        out = [self.string(s, f"{key}[{i}]", "a non-empty string") for i, s in enumerate(v)]
        for i, s in enumerate(out):
            if s in out[:i]:
                self.fail(f"{key}[{i}]", f"repeats {s!r}; list each entry once")
        return out

    def ident(self, v: Any, key: str) -> str:
        s = self.string(v, key, "an id")
        if not ID_RE.fullmatch(s):
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip(".-")[:128]
            self.fail(key, f"{s!r} cannot be used in test ids and file names; use letters, digits, '_', "
                           f"'.' and '-' (not first), at most 128 characters" + (f": did you mean '{safe}'?" if safe else ""))
        return s

    def where(self, p: Path, key: str, text: str) -> Path:
        """Resolve ``p`` and refuse it when it leaves the project root."""
        try:
            full = (p if p.is_absolute() else self.dir / p).resolve()
            inside = self.allow_outside_root or full.is_relative_to(self.root)
        except (OSError, ValueError, RuntimeError) as e:
            self.fail(key, f"cannot use path {text!r}: {e}; fix the path")
        if not inside:
            self.fail(key, f"path {text!r} resolves to {full}, outside the project root {self.root}; "
                           f"move it inside, or {ROOT_FIX}")
        return full

    def path(self, v: Any, key: str, kind: str, must_exist: bool = True) -> Path:
        text = self.string(v, key, "a path")
        try:
            full = self.where(Path(text).expanduser(), key, text)
            if not must_exist:
                return full
            ok = full.is_dir() if kind == "folder" else full.is_file() if kind == "file" else full.exists()
        except (OSError, ValueError, RuntimeError) as e:
            self.fail(key, f"cannot use path {text!r}: {e}; fix the path")
        if not ok:
            where = f"relative paths are read from the manifest's folder {self.dir}"
            try:
                other = "a folder" if full.is_dir() else "a file" if full.exists() else None
            except OSError:
                other = None
            if other:
                self.fail(key, f"{full} is {other}, expected a {kind}; fix the path ({where})")
            kinds = {"folder": "folder", "file": "file", "any": "file or folder"}
            self.fail(key, f"{kinds[kind]} {full} does not exist; fix the path ({where})")
        return full

    def thresholds(self, v: Any, key: str, gating: bool = True) -> dict[str, float]:
        """A metric -> threshold table; ``gating``: also refuse values that can never flag a copy."""
        from ..config.policy import threshold_problem

        names = metric_names()
        table = self.table(v, key, (), "{ clip = 0.95, tiled_l2 = 0.15 }") if not isinstance(v, dict) else v
        out: dict[str, float] = {}
        for name, x in table.items():
            k = f"{key}.{name}"
            if name not in names:
                self.fail(k, self.unknown(name, names, key, "metric"))
            lo, hi, hi_in = METRIC_RANGES.get(name, (-math.inf, math.inf, True))
            example = f"e.g. {name} = {METRIC_EXAMPLES[name]}" if name in METRIC_EXAMPLES else ""
            out[name] = self.number(x, k, lo, hi, open_high=not hi_in, fix=example)
            if gating and (problem := threshold_problem(name, out[name])):
                self.fail(k, problem)
        return out

    def seeds(self, v: Any, key: str) -> list[int]:
        from ..config.options import parse_seeds

        if not isinstance(v, list) or any(isinstance(s, bool) or not isinstance(s, int) for s in v):
            self.fail(key, f"{v!r:.60} is not an array of non-negative integers; write {key.split('.')[-1]} = [0, 1, 2, 3]")
        try:
            return parse_seeds(v, key)
        except MemorizationConfigError as e:
            self.fail(key, str(e).removeprefix(f"{key}: "))

    def paraphrases(self, v: Any, key: str, prompt: str, avoid: list[str]) -> list[str]:
        from .paraphrase import MAX_PARAPHRASES as PARAPHRASE_LIMIT
        from .paraphrase import paraphrases

        if isinstance(v, list):
            out = self.strings(v, key, '["a photo of ...", "..."]') if v else []
            for i, s in enumerate(out):
                if s in avoid:
                    self.fail(f"{key}[{i}]", f"{s!r} is already a prompt of this entry; remove it")
            return out
        n = self.integer(v, key, 0, f"write a count (0 to {MAX_PARAPHRASES}) or an array of strings")
        if n > MAX_PARAPHRASES:
            self.fail(key, f"{n} is more than {MAX_PARAPHRASES} paraphrases per prompt; use fewer")
        try:
            made = paraphrases(prompt, min(n + len(avoid), PARAPHRASE_LIMIT)) if n else []
        except (ValueError, RuntimeError) as e:
            self.fail(key, f"cannot paraphrase {prompt!r:.60} ({e}); list paraphrases explicitly")
        return [s for s in made if s not in avoid][:n]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except FileNotFoundError:
        raise ManifestError(path, "file not found; check --memorization-manifest / memorization_manifests") from None
    except UnicodeDecodeError as e:
        raise ManifestError(path, f"is not UTF-8 text (bad byte at offset {e.start}); save it as UTF-8") from None
    except (OSError, ValueError) as e:
        raise ManifestError(path, f"cannot be read ({e}); check the path and its permissions") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+), column (\d+)", str(e))
        shown = ""
        if m and 1 <= int(m.group(1)) <= len(text.splitlines()):
            shown = f" The line is: {text.splitlines()[int(m.group(1)) - 1].strip()[:80]!r}."
        raise ManifestError(path, f"invalid TOML: {e}.{shown} Fix the syntax there (strings need double "
                                  "quotes, arrays are [a, b], see https://toml.io)") from None
    except RecursionError:
        raise ManifestError(path, "invalid TOML: nested too deeply; simplify the file") from None

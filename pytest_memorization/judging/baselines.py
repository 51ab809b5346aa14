"""Baselines: catch a model that got WORSE than before, not only one that crosses a line.

A baseline holds, per item CONTENT, the worst-case score of each metric over its images, and
the environment fingerprint (model and LoRA hashes, versions, device, dtype, each metric's
``version``, steps, guidance, size, seeds). An entry's key is a hash of what the item checks:
the manifest path relative to the manifest's project root (never pytest's rootdir, so a
baseline compares from any checkout or ``--rootdir``), the kind of item, the work id and the
sha256 of its image, the prompt text, the seeds and the generation settings; the node id is
kept beside the scores for people. An edited prompt is a new entry (missing until added on
purpose) and the old entry is stale.

``BaselineStore.compare`` (the judge's baseline step) fails the item itself (not the session) when a score worsened beyond its
tolerance. A metric ``version`` mismatch is an error (scores are not comparable); other
fingerprint differences are warnings. Saving merges into the file: entries of items that did
not run are kept, stale ones go only with ``--memorization-prune-baseline``. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._io import atomic_write_json
from ..errors import BaselineError
from ..metrics import KNOWN_DIRECTIONS
from ..metrics.base import worsening
from ..records import Finding, ImageResult, Outcome

SCHEMA = 2
FINGERPRINT_KEYS = ("model_hash", "lora_hash", "lora_scale", "device", "dtype", "steps", "guidance_scale",
                    "height", "width", "seeds")
KEY = "baseline_key"  # where each manifest row carries its entry key (``ImageResult.extra``)


def content_key(*, manifest: str, kind: str, work: str | None, work_sha256: str | None, prompt: str,
                seeds: list[int], settings: dict[str, Any], extra: Any = None) -> str:
    """A readable, content-derived entry key: ``<manifest>|<work>|<kind>|<16 hex of sha256>``."""
    content = {"manifest": manifest, "kind": kind, "work": work, "work_sha256": work_sha256, "prompt": prompt,
               "seeds": list(seeds), "settings": settings, "extra": extra}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return f"{manifest}|{work or '-'}|{kind}|{digest}"


def worst_scores(results: list[ImageResult], directions: dict[str, str]) -> dict[str, dict[str, Any]]:
    """entry key -> {"item": node id, "prompt": ..., "scores": metric -> worst score (min distance /
    max similarity; detectors: max)}. Manifest rows carry a content key; rows of Python tests have no
    content to key by, so their node id is their key (``python|<node id>``)."""
    out: dict[str, dict[str, Any]] = {}
    for r in results:
        key = r.extra.get(KEY) or f"python|{r.item}"
        entry = out.setdefault(key, {"item": r.item, "prompt": r.prompt, "scores": {}})["scores"]
        for m, v in r.scores.items():
            d = directions.get(m, "distance")
            if m not in entry or worsening(entry[m], v, d) > 0:
                entry[m] = v
        for name, det in r.detectors.items():
            if isinstance(det, dict) and isinstance(det.get("score"), (int, float)):
                if name not in entry or det["score"] > entry[name]:
                    entry[name] = float(det["score"])  # detector scores: higher = more memorized
    return out


def fingerprint(run: dict[str, Any]) -> dict[str, Any]:
    fp = {k: run.get(k) for k in FINGERPRINT_KEYS}
    fp["metrics"] = run.get("metrics", {})
    fp["versions"] = run.get("versions", {})
    return fp


def load_baseline(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BaselineError(f"--memorization-compare={path}: no such baseline. Create it with "
                            f"--memorization-save={path} on a run you trust") from None
    except (OSError, ValueError) as e:
        raise BaselineError(f"{path}: not a readable baseline JSON ({e}); re-create it with "
                            f"pytest --memorization --memorization-save={path}") from None
    if isinstance(data, dict) and data.get("schema") == 1:
        raise BaselineError(f"{path}: an old baseline (schema 1, entries keyed by node id); entries are now keyed "
                            "by content (manifest, work image, prompt, seeds, settings). Re-create it on a run you "
                            f"trust: pytest --memorization --memorization-save={path}")
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("entries"), dict) \
            or not all(isinstance(e, dict) and isinstance(e.get("scores"), dict) for e in data["entries"].values()):
        raise BaselineError(f"{path}: not a pytest-memorization baseline (schema {SCHEMA}); re-create it with "
                            f"pytest --memorization --memorization-save={path}")
    for key, entry in data["entries"].items():  # a NaN baseline score would never count as worsened
        for metric, v in entry["scores"].items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise BaselineError(f"{path}: entry {key!r}, score {metric!r} is {v!r}, not a finite number; "
                                    f"re-create the baseline on a run you trust: pytest --memorization "
                                    f"--memorization-save={path}")
    return data


def stale_keys(entries: dict[str, Any], results: list[ImageResult], known_items: set[str] | None) -> list[str]:
    """Entries no item of this run stands for: their item ran with other content (an edited prompt,
    a changed work image, other seeds or settings), or no collected item has their node id (a removed
    work). Entries of deselected items are not stale. ``known_items`` None (an xdist controller,
    which collects nothing): only the first kind is known."""
    ran_keys = {r.extra.get(KEY) for r in results}
    ran_items = {r.item for r in results if r.extra.get(KEY)}
    return sorted(k for k, e in entries.items() if k not in ran_keys and (
        e.get("item") in ran_items or (known_items is not None and e.get("item") not in known_items)))


def directions_of(state: Any) -> dict[str, str]:
    """Metric -> 'distance' | 'similarity': the metrics built in this process, else those carried from
    xdist workers (``state.metric_directions``), else the known built-in metrics."""
    return {**KNOWN_DIRECTIONS, **state.metric_directions, **{m.name: m.direction for m in state.metrics.values()}}


def save_baseline(path: Path, state: Any, run: dict[str, Any], *, add: bool = True, prune: bool = False) -> int:
    """Merge this run's entries into ``path`` (entries of items that did not run are kept; a schema-1
    or unreadable file is replaced: that is how one re-creates it); with ``prune`` drop stale ones.
    Returns the number of entries dropped."""
    entries = worst_scores(state.results, directions_of(state)) if add else {}
    old: dict[str, Any] = {}
    fp = fingerprint(run)
    if path.exists():
        try:
            doc = load_baseline(path)
            old = doc["entries"]
            fp = fp if add else doc.get("fingerprint", fp)
        except BaselineError:
            if not add:
                raise
    drop = set(stale_keys(old, state.results, state.known_items)) if prune else set()
    merged = {k: v for k, v in {**old, **entries}.items() if k not in drop}
    atomic_write_json(path, {"schema": SCHEMA, "fingerprint": fp, "entries": dict(sorted(merged.items()))})
    return len(drop)


class BaselineStore:
    """The ``--memorization-compare`` file of one run and what was checked of it: its own state (not the
    session's). ``run_info`` and ``directions`` are read when first needed (the models load lazily)."""

    def __init__(self, settings: Any, run_info: Callable[[], dict[str, Any]], has_runs: Callable[[], bool],
                 directions: Callable[[], dict[str, str]]) -> None:
        self.settings = settings
        self.run_info, self.has_runs, self.directions = run_info, has_runs, directions
        self.doc: dict[str, Any] | None = None
        self.checked = False
        self.error: str | None = None

    def load(self) -> dict[str, Any] | None:
        if not self.settings.compare:
            return None
        if self.doc is None:
            self.doc = load_baseline(self.settings.path("compare"))
        return self.doc

    def comparer(self, nodeid: str, key: str | None) -> Callable[[Outcome], None] | None:
        """The judge's baseline step for one item (None when no baseline is compared)."""
        if not self.settings.compare or key is None:
            return None
        return lambda outcome: self.compare(nodeid, key, outcome)

    def compare(self, nodeid: str, key: str, outcome: Outcome) -> None:
        """Compare one item with the entry of its content ``key``: ``baseline.*`` findings on the image
        rows with the worsened score, or on the whole item when its entry is missing."""
        base = self.load()
        if base is None:
            return
        self._check_fingerprint(base)
        if self.settings.update_baseline:
            return
        compare_scores(base, nodeid, key, outcome, self.settings.compare, self.settings.compare_fail,
                       {**KNOWN_DIRECTIONS, **self.directions()})

    def stale(self, results: list[ImageResult], known_items: set[str] | None) -> list[str]:
        """The baseline's stale entries (see ``stale_keys``), for the summary and report."""
        try:  # under pytest-xdist only the workers compared, so the controller loads the baseline here
            base = self.load()
        except BaselineError:  # already reported by every item
            return []
        if base is None or not results:
            return []
        return stale_keys(base["entries"], results, known_items)

    def _check_fingerprint(self, base: dict[str, Any]) -> None:
        """Raise on a metric version change (for EVERY item, not only the first); warn once on other changes."""
        if self.error:
            raise BaselineError(self.error)
        if self.checked or not self.has_runs():
            return
        self.checked = True
        now = fingerprint(self.run_info())
        old = base.get("fingerprint", {})
        for metric, version in now["metrics"].items():
            was = old.get("metrics", {}).get(metric)
            if was is not None and was != version and not self.settings.update_baseline:
                self.error = (
                    f"baseline {self.settings.compare}: metric '{metric}' changed version ({was} -> {version}); "
                    "its scores are not comparable. Recreate the baseline with --memorization-save, or rewrite "
                    "it with --memorization-update-baseline")
                raise BaselineError(self.error)
        diffs = [f"{k}: {old.get(k)!r} -> {now.get(k)!r}" for k in FINGERPRINT_KEYS if old.get(k) != now.get(k)]
        if diffs:
            warnings.warn(f"baseline {self.settings.compare} was made under different conditions: "
                          + "; ".join(diffs), stacklevel=2)


def compare_scores(base: dict[str, Any], nodeid: str, key: str, outcome: Outcome, compare: str,
                   compare_fail: dict[str, float] | None, dirs: dict[str, str]) -> None:
    """The baseline rule on one item: ``baseline.missing`` (item) or ``baseline.worsened`` (rows)."""
    mine = worst_scores(outcome.results, dirs).get(key, {}).get("scores", {})
    entry = base["entries"].get(key)
    if entry is None:
        was = sorted(k for k, e in base["entries"].items() if e.get("item") == nodeid)
        why = (f" its prompt, work image, seeds or generation settings changed since the baseline was written "
               f"(the old entry {was[0]} is now stale; drop it with --memorization-prune-baseline).") if was else ""
        outcome.findings.append(Finding(
            "baseline.missing", "fail",
            f"no baseline entry for {nodeid} in {compare}.{why} Add it on purpose with "
            f"--memorization-compare={compare} --memorization-update-baseline (entries are never created silently)"))
        return
    old = entry["scores"]
    tolerances = compare_fail or default_tolerances(outcome.results)
    for metric, tol in tolerances.items():
        if metric not in mine or metric not in old:
            continue
        delta = worsening(old[metric], mine[metric], dirs.get(metric, "similarity"))
        if delta > tol:
            found = Finding("baseline.worsened", "fail",
                            f"baseline: {metric} worsened from {old[metric]:.4f} to {mine[metric]:.4f} "
                            f"(change {delta:+.4f}, tolerance {tol:g}) vs {compare}",
                            metric=metric, value=mine[metric])
            for r in outcome.results:
                if r.scores.get(metric) == mine[metric] or r.detectors.get(metric, {}).get("score") == mine[metric]:
                    r.findings.append(found)


def default_tolerances(results: list[Any]) -> dict[str, float]:
    """Without --memorization-compare-fail: 10% of each metric's threshold (metrics without one: not compared)."""
    out: dict[str, float] = {}
    for r in results:
        for metric, t in r.thresholds.items():
            out[metric] = abs(t) * 0.1
    return out

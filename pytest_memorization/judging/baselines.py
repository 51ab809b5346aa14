"""Baselines: catch a model that got WORSE than before, not only one that crosses a line.

A baseline holds, for each item and metric, the worst-case score over its images, and
the environment fingerprint (model and LoRA hashes, versions, device, dtype, each
metric's ``version``, steps, guidance, size, seeds). ``compare_item`` fails the item
itself (not the session) when a score worsened beyond its tolerance. A metric
``version`` mismatch is an error (scores are not comparable); other fingerprint
differences are warnings that list them. Writes are atomic.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from .._io import atomic_write_json
from ..errors import BaselineError
from ..metrics import KNOWN_DIRECTIONS
from ..metrics.base import worsening
from ..records import Finding, Outcome

SCHEMA = 1
FINGERPRINT_KEYS = ("model_hash", "lora_hash", "lora_scale", "device", "dtype", "steps", "guidance_scale",
                    "height", "width", "seeds")


def worst_scores(results: list[dict[str, Any]], directions: dict[str, str]) -> dict[str, dict[str, float]]:
    """item -> metric -> worst score (min distance / max similarity) over the item's images."""
    out: dict[str, dict[str, float]] = {}
    for r in results:
        entry = out.setdefault(r["item"], {})
        for m, v in r["scores"].items():
            d = directions.get(m, "distance")
            if m not in entry or worsening(entry[m], v, d) > 0:
                entry[m] = v
        for name, det in r.get("detectors", {}).items():
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
        raise BaselineError(f"--memorization-compare {path}: no such baseline. Create it with "
                            f"--memorization-save {path} on a run you trust") from None
    except (OSError, ValueError) as e:
        raise BaselineError(f"{path}: not a readable baseline JSON ({e}); recreate it with --memorization-save") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("entries"), dict):
        raise BaselineError(f"{path}: not a pytest-memorization baseline (schema {SCHEMA}); recreate it with "
                            "--memorization-save")
    for item, entry in data["entries"].items():  # a NaN baseline score would never count as worsened
        if not isinstance(entry, dict):
            raise BaselineError(f"{path}: entry {item!r} is not a table of metric scores; recreate it with "
                                "--memorization-save")
        for metric, v in entry.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise BaselineError(f"{path}: entry {item!r}, key {metric!r} is {v!r}, not a finite number; "
                                    "recreate the baseline with --memorization-save on a run you trust")
    return data


def directions_of(state: Any) -> dict[str, str]:
    """Metric -> 'distance' | 'similarity': the metrics built in this process, else those carried from
    xdist workers (``state.metric_directions``), else the known built-in metrics."""
    return {**KNOWN_DIRECTIONS, **state.metric_directions, **{m.name: m.direction for m in state.metrics.values()}}


def save_baseline(path: Path, state: Any, run: dict[str, Any], *, update: bool = False) -> None:
    entries = worst_scores(state.results, directions_of(state))
    if update and path.exists():
        old = load_baseline(path)
        entries = {**old["entries"], **entries}
    atomic_write_json(path, {"schema": SCHEMA, "fingerprint": fingerprint(run), "entries": entries})


def _baseline(state: Any) -> dict[str, Any] | None:
    if not state.settings.compare:
        return None
    if state.baseline is None:
        state.baseline = load_baseline(state.settings.path("compare"))
    return state.baseline


def compare_item(state: Any, nodeid: str, outcome: Outcome) -> None:
    """Compare one item with the baseline: add ``baseline.*`` findings to the image rows with the
    worsened score, or to the whole item when its entry is missing."""
    base = _baseline(state)
    if base is None:
        return
    _check_fingerprint(state, base)
    if state.settings.update_baseline:
        return
    rows = [r.to_json() for r in outcome.results]
    mine = worst_scores(rows, directions_of(state)).get(nodeid, {})
    old = base["entries"].get(nodeid)
    if old is None:
        outcome.findings.append(Finding(
            "baseline.missing", "fail",
            f"no baseline entry for {nodeid} in {state.settings.compare}. Add it on purpose with "
            "--memorization-compare <file> --memorization-update-baseline (entries are never created silently)"))
        return
    tolerances = state.settings.compare_fail or default_tolerances(outcome.results)
    dirs = directions_of(state)
    for metric, tol in tolerances.items():
        if metric not in mine or metric not in old:
            continue
        delta = worsening(old[metric], mine[metric], dirs.get(metric, "similarity"))
        if delta > tol:
            found = Finding("baseline.worsened", "fail",
                            f"baseline: {metric} worsened from {old[metric]:.4f} to {mine[metric]:.4f} "
                            f"(change {delta:+.4f}, tolerance {tol:g}) vs {state.settings.compare}",
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


def _check_fingerprint(state: Any, base: dict[str, Any]) -> None:
    """Raise on a metric version change (for EVERY item, not only the first); warn once on other changes."""
    if state.baseline_error:
        raise BaselineError(state.baseline_error)
    if state.baseline_checked or not state.runs:
        return
    state.baseline_checked = True
    now = fingerprint(state.run_info())
    old = base.get("fingerprint", {})
    for metric, version in now["metrics"].items():
        was = old.get("metrics", {}).get(metric)
        if was is not None and was != version and not state.settings.update_baseline:
            state.baseline_error = (
                f"baseline {state.settings.compare}: metric '{metric}' changed version ({was} -> {version}); "
                "its scores are not comparable. Recreate the baseline with --memorization-save, or rewrite "
                "it with --memorization-update-baseline")
            raise BaselineError(state.baseline_error)
    diffs = [f"{k}: {old.get(k)!r} -> {now.get(k)!r}" for k in FINGERPRINT_KEYS if old.get(k) != now.get(k)]
    if diffs:
        warnings.warn(f"baseline {state.settings.compare} was made under different conditions: "
                      + "; ".join(diffs), stacklevel=2)


def stale_entries(state: Any) -> list[str]:
    """Baseline entries that match no item of this run (renamed or removed works)."""
    try:  # under pytest-xdist only the workers compared, so the controller loads the baseline here
        base = _baseline(state)
    except BaselineError:  # already reported by every item
        return []
    if base is None:
        return []
    ran = {r["item"] for r in state.results}
    return sorted(set(base["entries"]) - ran) if ran else []

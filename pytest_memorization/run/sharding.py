"""``--memorization-shard I/N``: a deterministic split of the items across machines, balanced by cost.

Each item weighs what it costs: the images it generates (``expected_images``: a LoRA-gate item makes 2-3
per seed, an img2img item one per strength and seed), or, with ``--memorization-shard-durations``, its
duration in an earlier run (a report's ``item_durations``, or a pytest-split ``.test_durations`` file).
Items are dealt heaviest first to the lightest shard (longest-processing-time-first), ties broken by
node id, so every machine computes the same split from the same collection, whatever order a
randomiser collected them in. With equal weights this is round robin by node id.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..errors import MemorizationConfigError

T = TypeVar("T")
DURATIONS_KEY = "item_durations"  # report.json top-level key: node id -> seconds (setup + call)
OTHER_WEIGHT = 1.0  # a test that is not a manifest item (assert_not_memorized) counts as one image


def _nodeid(x: Any) -> str:
    return str(getattr(x, "nodeid", x))


def assign(weights: Sequence[float], names: Sequence[str], count: int) -> list[int]:
    """The shard of each entry: heaviest first onto the lightest shard (ties: name, then shard number)."""
    order = sorted(range(len(weights)), key=lambda i: (-float(weights[i]), names[i]))
    heap = [(0.0, s) for s in range(count)]
    out = [0] * len(weights)
    for i in order:
        load, s = heapq.heappop(heap)
        out[i] = s
        heapq.heappush(heap, (load + max(float(weights[i]), 0.0), s))
    return out


def image_weight(item: Any) -> float:
    fn = getattr(item, "expected_images", None)
    if fn is None:
        return OTHER_WEIGHT
    try:
        return float(fn())
    except Exception:  # a broken manifest item errors in its own setup; any shard may run it
        return OTHER_WEIGHT


def weights(items: Sequence[Any], durations: Mapping[str, float] | None = None) -> list[float]:
    """Each item's cost: its recorded duration, else its images x the seconds per image of the items
    that have a recorded duration (as pytest-split gives unknown tests the average); images alone
    without durations."""
    images = [image_weight(i) for i in items]
    if not durations:
        return images
    known = [(durations[_nodeid(x)], n) for x, n in zip(items, images) if _nodeid(x) in durations]
    per_image = sum(d for d, _ in known) / max(sum(n for _, n in known), 1e-9) if known else 1.0
    return [float(durations[_nodeid(x)]) if _nodeid(x) in durations else n * per_image
            for x, n in zip(items, images)]


def split(items: Sequence[T], index: int, count: int,
          cost: Sequence[float] | None = None) -> tuple[list[T], list[T]]:
    """(kept, dropped) for shard ``index`` of ``count``; the original order is kept within each.
    ``cost``: one weight per item (default: equal weights, i.e. round robin by node id)."""
    w = list(cost) if cost is not None else [1.0] * len(items)
    shard = assign(w, [_nodeid(x) for x in items], count)
    keep = [x for x, s in zip(items, shard) if s == index]
    drop = [x for x, s in zip(items, shard) if s != index]
    return keep, drop


def read_durations(path: Path, shown: str) -> dict[str, float]:
    """Node id -> seconds from a report folder / report.json (``item_durations``) or a pytest-split
    ``.test_durations`` file (a JSON object, or pytest-split's older list of [node id, seconds])."""
    p = path / "report.json" if path.is_dir() else path
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MemorizationConfigError(f"--memorization-shard-durations {shown}: no such file ({p}); pass the "
                                      "--memorization-report folder of an earlier run or a .test_durations file") from None
    except (OSError, ValueError) as e:
        raise MemorizationConfigError(f"--memorization-shard-durations {shown}: cannot read {p} as JSON ({e})") from None
    if isinstance(data, dict) and "schema_version" in data:
        data = data.get(DURATIONS_KEY)
        if not isinstance(data, dict):
            raise MemorizationConfigError(f"--memorization-shard-durations {shown}: {p} records no '{DURATIONS_KEY}' "
                                          "(a report written before they were recorded); rerun once to record them")
    elif isinstance(data, list):  # pytest-split's list form
        data = {str(row[0]): row[1] for row in data if isinstance(row, (list, tuple)) and len(row) == 2}
    if not isinstance(data, dict):
        raise MemorizationConfigError(f"--memorization-shard-durations {shown}: {p} is neither a report nor a "
                                      "pytest-split .test_durations file (a JSON object of node id -> seconds)")
    out: dict[str, float] = {}
    for k, v in data.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
            raise MemorizationConfigError(f"--memorization-shard-durations {shown}: {p}: the duration of {k!r} is "
                                          f"{v!r}, not a number of seconds >= 0")
        out[str(k)] = float(v)
    return out

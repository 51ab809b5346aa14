"""An item's junit properties (``item.user_properties``): what each seed's row decided, as
``memorization.seed<N>.<field>`` pairs.

pytest keeps every item, its properties and a copy of the list on its teardown report until the run
ends, so at 10,000 items they are a large part of what a run holds per item. The names repeat from item
to item, and so do the (name, verdict) and (name, work) pairs: they are built once and shared (tuples
and strings are immutable, so a shared one reads exactly as a fresh one would).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ..judging.verdict import deciding


@functools.lru_cache(maxsize=4096)
def _name(seed: int, field: str) -> str:
    return f"memorization.seed{seed}.{field}"


@functools.lru_cache(maxsize=4096)
def _pair(seed: int, field: str, value: str) -> tuple[str, str]:
    return (_name(seed, field), value)


def add_properties(item: Any, results: list[Any], report_dir: Path | None) -> None:
    """Append the rows' properties to ``item.user_properties`` (in the junit XML with ``--junitxml``)."""
    props = item.user_properties
    if results:
        props.append(("memorization.prompt", results[0].prompt))
    for r in results:
        seed = r.seed
        props.append(_pair(seed, "verdict", r.verdict))
        found = deciding(r.findings, r.verdict)
        if found is not None:  # the rule and message that decided it (baseline, waiver, LoRA gate, ...)
            props.append((_name(seed, "finding"), f"{found.rule}: {found.message}"))
        if r.work is not None:
            props.append(_pair(seed, "work", r.work))
        if r.image and report_dir is not None:
            props.append((_name(seed, "image"), str(report_dir / r.image)))
        for metric, value in r.scores.items():
            props.append((_name(seed, metric), round(value, 6)))
        for name, det in r.detectors.items():
            if isinstance(det, dict) and "score" in det:
                props.append((_name(seed, name), round(float(det["score"]), 6)))

"""The order a report shows its rows in, worked out in one pass without holding the rows.

``report.json`` lists rows by ``schema.sort_key`` (error, fail, warn, pass; then item and seed); the
HTML page groups rows per item, items in the order of their most severe row, and within an item puts
the worst seed first (``schema.worst_results``). ``plan`` computes both from small keys, so a writer
can then read each row again by its index (from a ``RowLog`` on disk, or a list) when it writes it.
Pure standard library.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .schema import SEVERITY, image_refs, severity_key, sort_key, to_result_dict


class Rows(Sequence[dict[str, Any]]):
    """The rows being written, as checked dicts (``schema.to_result_dict``), by index: a ``RowLog``
    is read back from disk row by row, anything else is checked once and held."""

    def __init__(self, results: Iterable[Any]) -> None:
        self._log = results if hasattr(results, "dict_at") and hasattr(results, "dicts") else None
        self._list = None if self._log is not None else [to_result_dict(r, i) for i, r in enumerate(results)]

    def __len__(self) -> int:
        return len(self._log) if self._log is not None else len(self._list or [])

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        if self._log is not None:
            return to_result_dict(self._log.dict_at(i), i)
        assert self._list is not None
        return self._list[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._log is not None:
            return (to_result_dict(d, i) for i, d in enumerate(self._log.dicts()))
        return iter(self._list or [])


@dataclass
class Plan:
    order: list[int]  # row indices in report.json's order
    groups: list[list[int]]  # per item (page order), its row indices, worst seed first
    counts: dict[str, int]  # rows per verdict
    work_images: set[str] = field(default_factory=set)  # every work image (and extra image) a row names
    images: set[str] = field(default_factory=set)  # every image path a row names


def plan(rows: Iterable[dict[str, Any]], run: dict[str, Any] | None) -> Plan:
    """One pass over ``rows`` (checked dicts, by index): their order, groups, counts and image paths."""
    skeys: list[tuple[Any, ...]] = []
    ckeys: list[tuple[Any, ...]] = []
    items: list[str] = []
    counts: dict[str, int] = {v: 0 for v in SEVERITY}
    works: set[str] = set()
    images: set[str] = set()
    for r in rows:
        k = sort_key(r)
        item = sys.intern(k[1])  # seeds of one item share one string
        skeys.append((k[0], item, k[2], sys.intern(k[3]), k[4]))
        ckeys.append(severity_key(r, run))
        items.append(item)
        counts[r["verdict"]] += 1
        for loc, rel in image_refs(r):
            if isinstance(rel, str):
                images.add(rel)
                if loc[0] != "image":
                    works.add(rel)
    order = sorted(range(len(skeys)), key=skeys.__getitem__)
    members: dict[str, list[int]] = {}
    for i in order:  # items in the order of their first (most severe) row
        members.setdefault(items[i], []).append(i)
    groups = [sorted(g, key=ckeys.__getitem__) for g in members.values()]
    return Plan(order, groups, counts, works, images)


def search_meta(lead: dict[str, Any]) -> list[str]:
    """An item's verdict and search text (item id, prompt, work), from its lead (worst) row: what the
    page's filter and search box select on."""
    return [str(lead.get("verdict")), " ".join(str(x) for x in (lead.get("item"), lead.get("prompt"), lead.get("work"))
                                               if x is not None).lower()]

"""``--memorization-shard I/N``: a deterministic, even split of the items across machines.

Items are ordered by node id (stable across machines and runs, unlike collection order
under randomisers) and dealt round-robin, so shard sizes differ by at most one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def split(items: Sequence[T], index: int, count: int) -> tuple[list[T], list[T]]:
    """(kept, dropped) for shard ``index`` of ``count``; the original order is kept within each."""
    order = sorted(range(len(items)), key=lambda i: getattr(items[i], "nodeid", str(items[i])))
    mine = {i for rank, i in enumerate(order) if rank % count == index}
    keep = [x for i, x in enumerate(items) if i in mine]
    drop = [x for i, x in enumerate(items) if i not in mine]
    return keep, drop

"""The session's result rows, spooled to an unnamed temporary file as one compact JSON line each.

A release audit runs tens of thousands of images; keeping every row as Python objects until the report
is written cost ~19 KiB of memory per item of 4 seeds (docs/scale.md). ``RowLog`` keeps one 8-byte
offset per row in memory and the row itself on disk; reading a row decodes its line again, so each
reader gets a fresh ``ImageResult`` (changing it does not change the log). Pure standard library
at import time.
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

from ..records import ImageResult

_BLOCK = 1 << 20  # bytes read at a time when the rows are read in order


class RowLog(Sequence[ImageResult]):
    """An append-only sequence of result rows (``ImageResult``), held on disk."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="pytest-memorization-rows-")
        self._offsets = array("q")
        self._end = 0

    # -- writing ---------------------------------------------------------------------------
    def extend(self, rows: Iterable[dict[str, Any] | ImageResult]) -> None:  # type: ignore[override]
        """Append rows, as ``ImageResult`` or their ``to_json()`` dicts (what a test report carries)."""
        lines, end = [], self._end
        for r in rows:
            d = r.to_json() if isinstance(r, ImageResult) else r
            lines.append(json.dumps(d, ensure_ascii=False, separators=(",", ":"), check_circular=False).encode() + b"\n")
            self._offsets.append(end)
            end += len(lines[-1])
        if lines:
            os.pwrite(self._file.fileno(), b"".join(lines), self._end)
            self._end = end

    def append(self, row: dict[str, Any] | ImageResult) -> None:
        self.extend([row])

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._offsets)

    def dict_at(self, i: int) -> dict[str, Any]:
        """Row ``i`` as the dict it was appended as."""
        start = self._offsets[i]
        end = self._offsets[i + 1] if i + 1 < len(self._offsets) else self._end
        return json.loads(os.pread(self._file.fileno(), end - start, start))

    @overload
    def __getitem__(self, i: int) -> ImageResult: ...
    @overload
    def __getitem__(self, i: slice) -> list[ImageResult]: ...
    def __getitem__(self, i: int | slice) -> ImageResult | list[ImageResult]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return ImageResult.from_json(self.dict_at(i))

    def dicts(self) -> Iterator[dict[str, Any]]:
        """Every row in order, as dicts, read in blocks (one pass over the file)."""
        fd, pos, rest = self._file.fileno(), 0, b""
        n = len(self._offsets)
        end = self._end  # rows appended while iterating are not read
        count = 0
        while pos < end and count < n:
            block = os.pread(fd, min(_BLOCK, end - pos), pos)
            pos += len(block)
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            for line in lines:
                count += 1
                yield json.loads(line)
        if rest and count < n:
            yield json.loads(rest)

    def __iter__(self) -> Iterator[ImageResult]:
        return (ImageResult.from_json(d) for d in self.dicts())

    def __bool__(self) -> bool:
        return bool(self._offsets)

    def close(self) -> None:
        self._file.close()

    def __repr__(self) -> str:
        return f"RowLog({len(self)} rows, {self._end} bytes on disk)"

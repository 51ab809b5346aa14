"""The session's rows on disk (``RowLog``) and the report written from them row by row: the same bytes
as a report written from rows held in memory, and memory that does not hold the rows."""

from __future__ import annotations

import gc
import json
import random
import tracemalloc

import pytest

from pytest_memorization.records import Finding, ImageResult
from pytest_memorization.reports import rowlog as rowlog_mod
from pytest_memorization.reports import write_report
from pytest_memorization.reports.page import PAGE
from pytest_memorization.reports.rowlog import RowLog


def _row(i: int) -> ImageResult:
    r = ImageResult(item=f"t.py::canary[{i // 4}]", prompt=f"a photo ü {i // 4}", seed=i % 4, work="w",
                    scores={"tiled_l2": 0.1 + i / 1e4, "ssim": float("nan")}, thresholds={"tiled_l2": 0.15},
                    verdict="fail" if i % 7 == 0 else "pass", extra={"n": [i, {"deep": "x" * (i % 5)}]})
    r.findings = [Finding("threshold", "fail", f"tiled_l2 {i}", metric="tiled_l2", work="w")] if i % 7 == 0 else []
    return r


def test_rows_read_back_as_they_were_appended(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rowlog_mod, "_BLOCK", 97)  # reading in order crosses many block edges mid-line
    log = RowLog()
    rows = [_row(i) for i in range(300)]
    log.extend(rows[:1])
    log.extend(r.to_json() for r in rows[1:200])  # as a test report carries them
    for r in rows[200:]:
        log.append(r)
    assert len(log) == 300 and bool(log) and not RowLog()
    want = [json.dumps(r.to_json(), sort_keys=True) for r in rows]
    assert [json.dumps(r.to_json(), sort_keys=True) for r in log] == want  # NaN included
    assert [json.dumps(d, sort_keys=True) for d in log.dicts()] == want
    assert log[-1].to_json() == log[299].to_json() and log[5:7][1].seed == rows[6].seed
    assert log[7].findings[0].rule == "threshold"
    with pytest.raises(IndexError):
        log[300]
    log[0].extra["n"] = "changed"  # a reader's row is its own copy
    assert log[0].extra["n"] == [0, {"deep": ""}]


def test_the_report_from_rows_on_disk_is_the_report_from_rows_in_memory(report_inputs, tmp_path) -> None:
    d, run, results = report_inputs
    rows = []
    for k in range(PAGE + 260 // len(results) + 40):  # past the first page and past one JSON block of cards
        for r in results:
            c = json.loads(json.dumps(r))
            c["item"] += f"-{k}"
            rows.append(c)
    random.Random(0).shuffle(rows)
    log = RowLog()
    log.extend(rows)
    write_report(d, run, rows, extra={"stale_baseline_entries": ["x"]})
    in_memory = (d / "report.json").read_bytes(), (d / "index.html").read_bytes()
    write_report(d, run, log, extra={"stale_baseline_entries": ["x"]})
    assert ((d / "report.json").read_bytes(), (d / "index.html").read_bytes()) == in_memory
    html = in_memory[1].decode()
    assert html.count('class="more"') >= 1 and html.count('id="cards"') == 1


def test_memory_holds_offsets_not_rows(tmp_path) -> None:
    """Appending a row costs an offset of memory; writing the report from the log holds small keys per
    row (its order, its item's card order), not the rows: the peak grows by under 1 KiB per row, and by
    less than half what the same rows cost held in a list and written from it. Measured with the cyclic
    collector paused, so the figures do not depend on what earlier tests left for it."""
    rows = [_row(i).to_json() for i in range(4000)]
    size = sum(len(json.dumps(r)) for r in rows) / len(rows)
    log = RowLog()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(0, len(rows), 4):
            log.extend(rows[i:i + 4])
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown / len(rows) < 16, (grown / len(rows), size)  # an 8-byte offset per row (array growth aside)
    assert size > 200

    def peak(n: int, on_disk: bool) -> int:
        small = RowLog()
        small.extend(rows[:n])
        gc.collect()
        gc.disable()  # no collection of earlier tests' garbage in the middle of a measurement
        tracemalloc.start()
        try:  # the rows held in memory (the alternative to the log) count against the list
            source = small if on_disk else [small.dict_at(i) for i in range(n)]
            write_report(tmp_path / f"r{n}", {}, source)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            gc.enable()

    streamed = (peak(4000, True) - peak(1000, True)) / 3000
    held = (peak(4000, False) - peak(1000, False)) / 3000  # rows in a list: sorted, copied, the texts whole
    assert streamed < 1024 and streamed < held / 2, (streamed, held, size)

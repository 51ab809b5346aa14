"""An item's junit properties: the same pairs as spelled out per item, and what a run keeps per item.

pytest keeps every item and its ``user_properties`` until the run ends, so their size is memory per
item of a release audit (docs/scale.md).
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from types import SimpleNamespace

from pytest_memorization.judging.verdict import deciding
from pytest_memorization.records import Finding, ImageResult
from pytest_memorization.run.properties import add_properties

REPORT = Path("/runs/release-audit/report")


def _rows(i: int, seeds: int = 4) -> list[ImageResult]:
    rows = []
    for s in range(seeds):
        fail = (i + s) % 7 == 0
        rows.append(ImageResult(
            item=f"memorization.toml::w{i % 100:03d}[{i // 100}]", prompt=f"canary prompt {i}, a photo", seed=s,
            work=f"w{i % 100:03d}", scores={"tiled_l2": 0.2 + (i * 7 + s) % 97 / 1000 + 1e-7 * i},
            thresholds={"tiled_l2": 0.02}, verdict="fail" if fail else "pass",
            findings=[Finding("threshold", "fail", f"tiled_l2 {0.01 + s / 1000} <= 0.02", "tiled_l2")] if fail else [],
            image=f"images/w{i % 100:03d}-{i // 100}-s{s}.png",
            detectors={"noise_magnitude": {"score": 1.5 + i / 1e4}} if s == 0 else {}))
    return rows


def _spelled_out(results: list[ImageResult], report_dir: Path) -> list[tuple[str, object]]:
    """The properties, built per item the plain way."""
    out: list[tuple[str, object]] = [("memorization.prompt", results[0].prompt)]
    for r in results:
        out.append((f"memorization.seed{r.seed}.verdict", r.verdict))
        found = deciding(r.findings, r.verdict)
        if found is not None:
            out.append((f"memorization.seed{r.seed}.finding", f"{found.rule}: {found.message}"))
        if r.work is not None:
            out.append((f"memorization.seed{r.seed}.work", r.work))
        if r.image:
            out.append((f"memorization.seed{r.seed}.image", str(report_dir / r.image)))
        for metric, value in r.scores.items():
            out.append((f"memorization.seed{r.seed}.{metric}", round(value, 6)))
        for name, det in r.detectors.items():
            out.append((f"memorization.seed{r.seed}.{name}", round(float(det["score"]), 6)))
    return out


def test_properties_are_the_spelled_out_pairs() -> None:
    for i in range(30):
        item = SimpleNamespace(user_properties=[])
        rows = _rows(i)
        add_properties(item, rows, REPORT)
        assert item.user_properties == _spelled_out(rows, REPORT)
    item = SimpleNamespace(user_properties=[])
    rows = _rows(3)
    add_properties(item, rows, None)  # no report: no image paths
    assert item.user_properties == [p for p in _spelled_out(rows, REPORT) if not p[0].endswith(".image")]


def test_properties_kept_per_item_share_names_and_pairs() -> None:
    """2,000 items of 4 seeds: the properties kept per item. Each seed's name strings and its verdict and
    work pairs are shared; what is left per item is the prompt pair and, per seed, the image path and the
    score pairs (1.4 KiB with these rows; 3.1 KiB with every name and pair built per item)."""
    n = 2000
    rows = [_rows(i) for i in range(n)]
    add_properties(SimpleNamespace(user_properties=[]), rows[0], REPORT)  # the caches' first entries
    items = [SimpleNamespace(user_properties=[]) for _ in range(n)]
    spelled = [SimpleNamespace(user_properties=[]) for _ in range(n)]

    def grown(fill) -> float:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            fill()
            return (tracemalloc.get_traced_memory()[0] - before) / n
        finally:
            tracemalloc.stop()

    def ours() -> None:
        for item, r in zip(items, rows):
            add_properties(item, r, REPORT)

    def plain() -> None:
        for item, r in zip(spelled, rows):
            item.user_properties.extend(_spelled_out(r, REPORT))

    shared, per_item = grown(ours), grown(plain)
    assert [i.user_properties for i in items] == [i.user_properties for i in spelled]
    assert shared < 2048 and shared < per_item - 1024, (shared, per_item)

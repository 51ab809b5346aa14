"""Write and read ``report.json`` (+ ``index.html``) in a report dir, atomically.

Pure standard library at import time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .._io import atomic_path
from .schema import (
    RESERVED_TOP_KEYS,
    SCHEMA_VERSION,
    ReportError,
    jsonable,
    sort_results,
    summarize,
    summary_of,
    to_result_dict,
)

REPORT_JSON = "report.json"
INDEX_HTML = "index.html"
# Top-level key: {relative path: sha256} of every PNG the rows reference, read once when the report is
# written; a merge checks each shard's PNGs against it, so a file changed after its run is refused.
IMAGE_HASHES = "image_sha256"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pytest-memorization")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


def _head(run: dict[str, Any], summary: dict[str, Any], complete: bool,
          extra: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """report.json's keys before ``results`` and after it (``extra``, checked), as plain JSON."""
    clash = sorted(set(extra or {}) & set(RESERVED_TOP_KEYS))
    if clash:
        raise ReportError(f"write_report(extra=...): key(s) {', '.join(clash)} are reserved by report.json")
    head: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "complete": bool(complete),
        "generated_by": f"pytest-memorization {_version()}",
        "run": jsonable(dict(run or {}), "run"),
        "summary": summary,
    }
    return head, {k: jsonable(v, k) for k, v in sorted((extra or {}).items())}


def build_report(
    run: dict[str, Any], results: list[Any], *, complete: bool = True, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The report.json document (a dict), validated and sorted."""
    rows = sort_results(to_result_dict(r, i) for i, r in enumerate(results))
    head, tail = _head(run, summarize(rows), complete, extra)
    return {**head, "results": jsonable(rows, "results"), **tail}


def _one(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def _key(k: str, v: Any) -> str:
    return f"  {_one(k)}: {json.dumps(v, indent=2, ensure_ascii=False, allow_nan=False)}".replace("\n", "\n  ")


def _write_doc(out: TextIO, doc: dict[str, Any], results: Iterable[Any]) -> None:
    """report.json's text into ``out``: the keys of ``doc`` indented, with ``results`` (rows, plain
    JSON, in order) at its place, each on one line of compact JSON (the C encoder: ``indent`` would
    take the pure-Python one, ~10x slower at 40,000 rows). Rows are written as they come."""
    out.write("{\n")
    first = True
    for k, v in doc.items():
        if not first:
            out.write(",\n")
        first = False
        if k != "results":
            out.write(_key(k, v))
            continue
        out.write(f"  {_one(k)}: [")
        n = 0
        for r in results:
            out.write(("\n    " if n == 0 else ",\n    ") + _one(r))
            n += 1
        out.write("\n  ]" if n else "]")
    out.write("\n}\n")


def dump_report(doc: dict[str, Any]) -> str:
    """report.json's text for a document held in memory."""
    import io

    buf = io.StringIO()
    _write_doc(buf, doc, doc.get("results") or [])
    return buf.getvalue()


def write_report(
    report_dir: str | os.PathLike[str],
    run: dict[str, Any],
    results: Sequence[Any],
    *,
    complete: bool = True,
    extra: dict[str, Any] | None = None,
    image_hashes: dict[str, str] | None = None,
) -> Path:
    """Write ``report.json`` and ``index.html`` into ``report_dir``; returns the report.json path.

    ``results``: ImageResult objects or their ``to_json()`` dicts, or the session's ``RowLog``; the
    PNGs they name must already be in ``report_dir``. Rows are written as they are read, in the
    report's order (``order.plan``), so a ``RowLog`` is never held in memory whole. ``complete=False``
    marks an interrupted run. ``extra`` adds top-level keys (e.g. ``stale_baseline_entries``). Work
    PNGs under ``works/`` that no result references (left by an earlier run, maybe in another
    ``--memorization-report-works`` mode) are deleted. index.html is written first and report.json
    last, each atomically. report.json records the sha256 of every referenced PNG (``image_sha256``);
    ``image_hashes`` gives those the caller already checked (a merge), which are then not read again.
    """
    from .html import write_html
    from .order import Rows, plan
    from .pngs import prune_work_images

    d = Path(report_dir)
    extra = {k: v for k, v in (extra or {}).items() if k != IMAGE_HASHES}
    rows = Rows(results)
    p = plan(rows, run)
    head, tail = _head(run, summary_of(p.counts), complete, extra)
    prune_work_images(d, p.work_images)
    tail[IMAGE_HASHES] = hash_images(d, sorted(p.images | p.work_images), image_hashes or {})
    doc = {**head, "results": None, **tail}
    with atomic_path(d / INDEX_HTML) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        write_html(f, doc, rows, p.groups)
        f.flush()
        os.fsync(f.fileno())
    with atomic_path(d / REPORT_JSON) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        _write_doc(f, doc, (jsonable(rows[i], f"results[{i}]") for i in p.order))
        f.flush()
        os.fsync(f.fileno())
    return d / REPORT_JSON


def file_sha256(path: str | os.PathLike[str]) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest() if hasattr(hashlib, "file_digest") \
            else hashlib.sha256(f.read()).hexdigest()


def hash_images(report_dir: Path, rels: list[str], known: dict[str, str]) -> dict[str, str]:
    """sha256 of each referenced file that exists under ``report_dir`` (those in ``known`` not read)."""
    from .schema import safe_relpath

    out: dict[str, str] = {}
    for rel in rels:
        if rel in known:
            out[rel] = known[rel]
            continue
        clean = safe_relpath(rel)
        if clean is None:
            continue
        try:
            out[rel] = file_sha256(report_dir / clean)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            continue  # a missing image is reported where it matters (merge: missing_images)
    return out


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a report.json (or the report.json inside a report dir) and check its schema version."""
    p = Path(path)
    if p.is_dir():
        p = p / REPORT_JSON
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{p}: no such report; pass a report dir written by --memorization-report") from None
    except OSError as e:
        raise ReportError(f"{p}: cannot read the report: {e}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(f"{p}: not valid JSON ({e}); the file is damaged, rerun to rewrite it") from None
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise ReportError(f"{p}: not a pytest-memorization report (no 'schema_version' key)")
    v = doc["schema_version"]
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ReportError(f"{p}: key 'schema_version' = {v!r} is not a positive integer")
    if v > SCHEMA_VERSION:
        raise ReportError(
            f"{p}: key 'schema_version' = {v}, but this pytest-memorization reads schema "
            f"{SCHEMA_VERSION}; upgrade pytest-memorization to read it"
        )
    for key, typ in (("complete", bool), ("run", dict), ("results", list)):
        if not isinstance(doc.get(key), typ):
            raise ReportError(f"{p}: key '{key}' is missing or not a {typ.__name__}; the file is damaged")
    try:
        doc["results"] = [to_result_dict(r, i) for i, r in enumerate(doc["results"])]
    except ReportError as e:
        raise ReportError(f"{p}: {e}") from None
    return doc

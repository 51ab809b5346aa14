"""``pytest-memorization <command>`` (or ``python -m pytest_memorization``): the tools around the plugin.

    --version                                 print the version
    init [DIR]                                scaffold a gate that runs at once (tiny model, two works)
    validate PATH...                          check manifests without loading torch (pre-commit)
    options                                   print the options table (markdown)
    merge OUT REPORT_DIR...                   merge shard/worker report folders into OUT
    merge-baselines OUT BASELINE.json...      merge shard baseline files into OUT
    index build --metric clip --out DIR IMAGES_OR_DIRS...
    index query DIR IMAGE... [-k 10] [--json]
    rescore REPORT_DIR WORKS... [--threshold M=V] [--metrics a,b] [--out DIR]

Errors are one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._paths import IMAGE_SUFFIXES, CLIError, image_paths

__all__ = ["IMAGE_SUFFIXES", "CLIError", "main", "parser"]


def cmd_options(args: argparse.Namespace) -> int:
    from ..config.options import markdown_table

    print(markdown_table())
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from ..reports.merge import merge_reports

    out = merge_reports(list(args.reports), args.out)
    print(f"merged {len(args.reports)} report(s) into {out}")
    return 0


def _read_baseline(path: Path) -> dict[str, Any]:
    from ..judging.baselines import SCHEMA

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CLIError(f"{path}: no such baseline file (write one per shard with --memorization-save)") from None
    except (OSError, ValueError) as e:
        raise CLIError(f"{path}: not a readable baseline JSON ({e})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("entries"), dict) \
            or not isinstance(data.get("fingerprint", {}), dict):
        raise CLIError(f"{path}: not a pytest-memorization baseline (schema {SCHEMA}, keys fingerprint, entries)")
    return data


def merge_baselines(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """One baseline from shard baselines: fingerprints equal (seeds are united), each item's entry once;
    an item present in two files with different scores is an error."""
    if not paths:
        raise CLIError("merge-baselines: no baseline files given")
    docs = [(Path(p), _read_baseline(Path(p))) for p in paths]
    first_path, first = docs[0]
    fp = dict(first.get("fingerprint", {}))
    seeds = set(fp.get("seeds") or [])
    entries: dict[str, Any] = {}
    origin: dict[str, Path] = {}
    for path, doc in docs:
        other = dict(doc.get("fingerprint", {}))
        seeds |= set(other.get("seeds") or [])
        diffs = [k for k in sorted(set(fp) | set(other)) if k != "seeds" and fp.get(k) != other.get(k)]
        if diffs:
            k = diffs[0]
            raise CLIError(f"cannot merge {path} with {first_path}: fingerprint key '{k}' differs "
                           f"({other.get(k)!r} vs {fp.get(k)!r}); merge only shards of one run")
        for item, scores in doc["entries"].items():
            if item in entries and entries[item] != scores:
                raise CLIError(f"item {item!r} has different baseline entries in {origin[item]} ({entries[item]}) "
                               f"and {path} ({scores}); shards ran different settings")
            entries.setdefault(item, scores)
            origin.setdefault(item, path)
    if "seeds" in fp or seeds:
        fp["seeds"] = sorted(seeds)
    return {"schema": first["schema"], "fingerprint": fp, "entries": dict(sorted(entries.items()))}


def cmd_merge_baselines(args: argparse.Namespace) -> int:
    from ..judging.baselines import atomic_write_json

    merged = merge_baselines(args.baselines)
    out = Path(args.out)
    atomic_write_json(out, merged)
    print(f"merged {len(args.baselines)} baseline(s), {len(merged['entries'])} entries, into {out}")
    return 0


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _metric(args: argparse.Namespace, name: str, stored: dict[str, Any] | None = None) -> Any:
    from ..metrics import get_metric

    if args.clip_config:
        import open_clip

        for cfg in args.clip_config:
            if not Path(cfg).is_file():
                raise CLIError(f"--clip-config {cfg}: no such open_clip config JSON")
            open_clip.add_model_config(cfg)
    opts = dict(stored or {})
    for pair in args.metric_option or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"--metric-option {pair!r}: write KEY=VALUE, e.g. weights=random")
        opts[key] = _option_value(value)
    if args.weights_dir:
        opts["weights_dir"] = args.weights_dir
    return get_metric(name, **opts), opts


def cmd_index_build(args: argparse.Namespace) -> int:
    import time

    from ..metrics.index import build_index

    metric, opts = _metric(args, args.metric)
    paths, ids = image_paths(args.images)
    t0 = time.perf_counter()
    out = build_index(metric, paths, ids, args.out, batch_size=args.batch_size, size=args.size, dtype=args.dtype,
                      metric_options={k: v for k, v in opts.items() if k != "weights_dir"})
    print(f"indexed {len(paths)} image(s) with {metric.name} ({metric.version}) into {out} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_index_query(args: argparse.Namespace) -> int:
    from ..images import fit_to, load_image
    from ..metrics.index import EmbeddingIndex

    probe = EmbeddingIndex.load(args.index)
    metric, _ = _metric(args, probe.metric_name, probe.meta.get("metric_options"))
    index = EmbeddingIndex.load(args.index, metric)
    size = index.meta.get("fit_size")
    rows = []
    for src in args.images:
        img = load_image(src)
        if size:
            img = fit_to(img, size, size)
        scores, ids = index.search_images(metric, img[None].float(), args.k)
        rows.append({"image": src, "matches": [{"id": i, "score": round(float(s), 6)}
                                               for i, s in zip(ids[0], scores[0].tolist())]})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(row["image"])
            for rank, m in enumerate(row["matches"], 1):
                print(f"  {rank:>3}  {m['score']:.4f}  {m['id']}")
    return 0


def cmd_rescore(args: argparse.Namespace) -> int:
    from ..config.options import BY_NAME
    from . import rescore as rs

    thresholds: dict[str, float] = {}
    for chunk in args.threshold or []:
        thresholds.update(BY_NAME["threshold"].parse(BY_NAME["threshold"], chunk))
    metrics = [m for m in (args.metrics or "").split(",") if m] or None
    try:
        done = rs.rescore(args.report, args.works, thresholds=thresholds, metrics=metrics,
                          warn_band=args.warn_band, align=not args.no_align, weights_dir=args.weights_dir)
        written = rs.write(done, args.report, args.out) if args.out else None
    except rs.RescoreError as e:
        raise CLIError(str(e)) from None
    counts = {v: sum(r.verdict == v for r in done.results) for v in ("error", "fail", "warn", "pass")}
    for line in done.failures:
        print(line)
    print(f"re-scored {len(done.results)} image(s) of {args.report} against {len(done.works)} work(s) "
          f"({', '.join(done.metrics)}; 0 generated): " + ", ".join(f"{n} {v}" for v, n in counts.items() if n))
    if done.skipped:
        print(f"not re-scored ({len(done.skipped)}): " + "; ".join(done.skipped[:10]))
    if not done.complete:
        print("the report read is of an interrupted run (complete: false): the re-scored report is incomplete too")
    if written:
        print(f"report written: {written}")
    return 1 if counts["fail"] or counts["error"] or not done.complete else 0


EXAMPLES = """examples:
  pytest-memorization init my-gate
  pytest-memorization validate memorization.toml
  pytest-memorization options > options.md
  pytest-memorization merge report shard-0/report shard-1/report
  pytest-memorization merge-baselines baseline.json shard-0/baseline.json shard-1/baseline.json
  pytest-memorization index build --metric clip --out catalogue.idx works/
  pytest-memorization index query catalogue.idx report/images/*.png -k 5
  pytest-memorization rescore report new-works/memorization.toml --out report-rescored

The gate itself runs inside pytest: pytest --memorization (see pytest --help, group "memorization").
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytest-memorization")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        from .. import __version__

        return __version__


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pytest-memorization", epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description="Tools around the pytest-memorization plugin (also: python -m "
                                             "pytest_memorization). Errors are one line on stderr, exit status 2.")
    ap.add_argument("--version", action="version", version=f"pytest-memorization {_version()}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from . import init, validate

    init.add_parser(sub)
    validate.add_parser(sub)
    p = sub.add_parser("options", help="print the options table (markdown), as in the docs")
    p.set_defaults(func=cmd_options)
    p = sub.add_parser("merge", help="merge shard or worker report folders into one")
    p.add_argument("out", metavar="OUT", help="the merged report folder to write (report.json, index.html, images)")
    p.add_argument("reports", nargs="+", metavar="REPORT_DIR",
                   help="report folders written by --memorization-report=DIR (one per shard)")
    p.set_defaults(func=cmd_merge)
    p = sub.add_parser("merge-baselines", help="merge shard baseline JSON files into one")
    p.add_argument("out", metavar="OUT", help="the merged baseline file to write")
    p.add_argument("baselines", nargs="+", metavar="BASELINE.json",
                   help="baselines written by --memorization-save=FILE (one per shard)")
    p.set_defaults(func=cmd_merge_baselines)

    p = sub.add_parser("index", help="build or query an embedding index of protected works")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="build|query")

    def metric_flags(q: argparse.ArgumentParser) -> None:
        q.add_argument("--metric-option", action="append", metavar="KEY=VALUE",
                       help="metric option (JSON value or string), e.g. model=ViT-B-32, weights=random")
        q.add_argument("--weights-dir", help="folder searched first for weights files")
        q.add_argument("--clip-config", action="append", metavar="JSON",
                       help="register an open_clip model config file (its stem is the model name)")

    b = isub.add_parser("build", help="embed images into an index folder")
    b.add_argument("--metric", required=True, help="a metric with vector features: clip or sscd")
    b.add_argument("--out", required=True, metavar="INDEX_DIR", help="the index folder to write")
    b.add_argument("--batch-size", type=int, default=64, help="images embedded at once (default 64)")
    b.add_argument("--size", type=int, default=None,
                   help="fit every image to SIZE x SIZE first (cover + centre crop) so all batch together")
    b.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                   help="storage type of the embeddings (default float16)")
    b.add_argument("images", nargs="+", metavar="IMAGE_DIR_OR_FILE", help="images, or folders searched for images")
    metric_flags(b)
    b.set_defaults(func=cmd_index_build)
    q = isub.add_parser("query", help="top-k catalogue matches of images")
    q.add_argument("index", metavar="INDEX_DIR", help="an index folder written by index build")
    q.add_argument("images", nargs="+", metavar="IMAGE", help="images to look up")
    q.add_argument("-k", type=int, default=10, metavar="K", help="matches per image (default 10)")
    q.add_argument("--json", action="store_true", help="print JSON")
    metric_flags(q)
    q.set_defaults(func=cmd_index_query)

    r = sub.add_parser("rescore", help="score a report's images against new works/thresholds (generates nothing)")
    r.add_argument("report", metavar="REPORT_DIR", help="a report folder written by --memorization-report=DIR")
    r.add_argument("works", nargs="+", metavar="WORKS",
                   help="a manifest (its works, thresholds, warn and metrics) or work images / folders")
    r.add_argument("--threshold", action="append", metavar="METRIC=VALUE",
                   help="threshold (repeatable); the strictest of these and the manifest's wins")
    r.add_argument("--metrics", metavar="NAME[,NAME]", help="metrics to score (default: the manifest's, else "
                   "tiled_l2, ssim, local_copy and those with a threshold)")
    r.add_argument("--warn-band", type=float, default=0.1, help="warn band fraction (default 0.1)")
    r.add_argument("--no-align", action="store_true", help="compare pixels as they are (no shift tolerance)")
    r.add_argument("--weights-dir", help="folder searched first for metric weights")
    r.add_argument("--out", metavar="DIR", help="write report.json, index.html and the images into DIR")
    r.set_defaults(func=cmd_rescore)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parser().parse_args(argv)
    from ..errors import MemorizationConfigError, MetricFailedError

    try:
        return int(args.func(args))
    except (CLIError, MemorizationConfigError, MetricFailedError) as e:
        print(f"error: {e}", file=sys.stderr)
    except OSError as e:
        print(f"error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a command-line tool never shows a traceback
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
    return 2



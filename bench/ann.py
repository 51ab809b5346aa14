"""Exact vs approximate catalogue search at 1M works and beyond (CPU; needs the ``ann`` extra: faiss-cpu).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/ann.py [--count 1000000] [--dim 512] [--queries 200]
        [--kind ivf-pq-fs] [--nprobe 64,128,256] [--candidates 100] [--threads 2] [--uniform]

Writes ``--count`` synthetic unit embeddings as a float16 exact index (``metrics.index``): clustered like
real image embeddings (``--centres`` centres, each entry a centre plus gaussian noise), or uniform on the
sphere with ``--uniform`` (the worst case for any cell-based search: no structure to exploit). Queries are
held-out points of the same distribution (half of them noisy copies of catalogue entries). Builds the
approximate index (``metrics.ann``: faiss IVF with 4-bit PQ fast scan, ``--kind ivf-sq8`` for 8-bit
scalar quantisation; candidates re-ranked exactly) and prints build times,
memory, query time per image (one image at a time) for both, and recall@10 of the approximate search
against the exact one.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sample(n: int, dim: int, centres: Any, g: Any, uniform: bool) -> Any:
    import torch

    if uniform:
        return torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    pick = torch.randint(0, centres.shape[0], (n,), generator=g)
    x = centres[pick] + 0.8 * torch.randn(n, dim, generator=g) / dim ** 0.5
    return torch.nn.functional.normalize(x, dim=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--centres", type=int, default=None, help="default: one per 100 entries")
    ap.add_argument("--uniform", action="store_true")
    ap.add_argument("--nlist", type=int, default=None)
    ap.add_argument("--kind", default="ivf-pq-fs", help="ivf-pq-fs (4-bit PQ fast scan) or ivf-sq8")
    ap.add_argument("--nprobe", default="64,128,256", help="cells scanned per query; a comma list sweeps them")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--exact-queries", type=int, default=30, help="queries timed one by one on the exact index")
    ap.add_argument("--dir", help="keep the index here (reused when it exists)")
    args = ap.parse_args()

    import torch

    from pytest_memorization.metrics.ann import ApproximateIndex
    from pytest_memorization.metrics.index import EmbeddingIndex, IndexWriter

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    args.centres = args.centres or max(1, args.count // 100)
    centres = torch.nn.functional.normalize(torch.randn(args.centres, args.dim, generator=g), dim=1)
    tmp = tempfile.TemporaryDirectory()
    out = Path(args.dir) if args.dir else Path(tmp.name) / "index"
    base = rss_mb()
    t0 = time.perf_counter()
    if not (out / "index.json").is_file():
        w = IndexWriter(out, metric="synthetic", version="synthetic-v1", dtype="float16")
        for start in range(0, args.count, 50_000):
            n = min(50_000, args.count - start)
            w.add(sample(n, args.dim, centres, g, args.uniform), [f"w{i:08d}" for i in range(start, start + n)])
        w.close()
    exact_build = time.perf_counter() - t0
    exact = EmbeddingIndex.load(out)
    disk = sum(f.stat().st_size for f in out.glob("chunk-*.npy")) / 2**20
    half = args.queries // 2
    copies = exact.vectors(torch.randint(0, len(exact), (half,), generator=g))
    copies = torch.nn.functional.normalize(copies + 0.5 * torch.randn(copies.shape, generator=g) / args.dim ** 0.5, dim=1)
    queries = torch.cat([copies, sample(args.queries - half, args.dim, centres, g, args.uniform)])

    exact.search(queries[:1], k=10)  # page the chunks in
    t_exact, c_exact, want = [], [], []
    for i in range(args.queries):
        t0, c0 = time.perf_counter(), time.process_time()
        want.append(exact.search(queries[i:i + 1], k=10)[1][0])
        if i < args.exact_queries:
            t_exact.append(time.perf_counter() - t0)
            c_exact.append(time.process_time() - c0)
    exact_rss = rss_mb()

    probes = [int(x) for x in str(args.nprobe).split(",")]
    t0 = time.perf_counter()
    try:  # an approximate index saved beside this exact one by an earlier run (--dir) is reused
        ann = ApproximateIndex.load(exact, candidates=args.candidates)
        if ann.kind != args.kind:
            raise ValueError(f"saved kind {ann.kind}")
        ann_build = float("nan")
    except Exception:
        ann = ApproximateIndex.build(exact, kind=args.kind, nlist=args.nlist, candidates=args.candidates,
                                     threads=args.threads)
        ann_build = time.perf_counter() - t0
    ann_rss = rss_mb()
    ann_disk = (out / "ann-ivf.faiss").stat().st_size / 2**20
    rows = []
    for nprobe in probes:
        ann.nprobe = nprobe
        ann.search(queries[:1], k=10)
        t_ann, c_ann, hits = [], [], 0
        for i in range(args.queries):
            t0, c0 = time.perf_counter(), time.process_time()
            got = ann.search(queries[i:i + 1], k=10)[1][0]
            t_ann.append(time.perf_counter() - t0)
            c_ann.append(time.process_time() - c0)
            hits += len(set(got) & set(want[i]))
        copies_found = sum(want[i][0] == ann.search(queries[i:i + 1], k=1)[1][0][0] for i in range(half))
        rows.append((nprobe, statistics.median(t_ann), sorted(t_ann)[int(0.95 * len(t_ann))],
                     statistics.median(c_ann), hits / (10 * args.queries), copies_found))

    kind = "uniform on the sphere" if args.uniform else f"clustered ({args.centres} centres)"
    print(f"catalogue: {args.count} x {args.dim} float16 unit embeddings, {kind}; {disk:.0f} MB on disk; "
          f"{args.threads} threads; {args.queries} queries (half noisy copies of entries)")
    print(f"exact: build {exact_build:.1f} s; query one image at a time: median "
          f"{statistics.median(t_exact) * 1e3:.1f} ms wall (p95 {sorted(t_exact)[int(0.95 * len(t_exact))] * 1e3:.1f}), "
          f"{statistics.median(c_exact) * 1e3:.1f} ms CPU; "
          f"peak RSS {exact_rss - base:.0f} MB over the start")
    print(f"approximate (faiss {ann.kind}, nlist {ann.ivf.nlist}, {args.candidates} candidates re-ranked exactly): "
          f"build {ann_build:.1f} s (nan: reused), {ann_disk:.0f} MB; peak RSS {ann_rss - base:.0f} MB over the start")
    print("| nprobe | query median (wall) | p95 (wall) | query median (CPU) | recall@10 vs exact | noisy copies found first |")
    print("|---|---|---|---|---|---|")
    for nprobe, med, p95, cpu, recall, found in rows:
        print(f"| {nprobe} | {med * 1e3:.2f} ms | {p95 * 1e3:.2f} ms | {cpu * 1e3:.2f} ms | {recall:.4f} | {found}/{half} |")
    tmp.cleanup()


if __name__ == "__main__":
    main()

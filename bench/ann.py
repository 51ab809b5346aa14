"""Exact vs approximate catalogue search at 1M works and beyond (CPU; needs the ``ann`` extra: faiss-cpu).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/ann.py [--count 1000000] [--dim 512] [--queries 200]
        [--kind ivf-pq-fs] [--nprobe 64,128,256] [--candidates 100] [--threads 2] [--build-threads N]
        [--exact-queries 30] [--dir KEEP] [--uniform]

At 10M: ``--count 10000000 --dir /big/disk/folder --exact-queries 5 --build-threads 2 --threads 1`` (10 GB
of float16 chunks plus 0.7 GB of codes; a later run reuses the folder; each step prints its times as
soon as it ends).

Writes ``--count`` synthetic unit embeddings as a float16 exact index (``metrics.index``): clustered like
real image embeddings (``--centres`` centres, each entry a centre plus gaussian noise), or uniform on the
sphere with ``--uniform`` (the worst case for any cell-based search: no structure to exploit). Queries are
held-out points of the same distribution (half of them noisy copies of catalogue entries). Builds the
approximate index (``metrics.ann``: faiss IVF with 4-bit PQ fast scan, ``--kind ivf-sq8`` for 8-bit
scalar quantisation; candidates re-ranked exactly) and prints build times,
memory, query time per image (one image at a time) for both, and recall@10 of the approximate search
against the exact one. The exact answers of all queries come from one batched exact search; only
``--exact-queries`` of them are also timed one at a time. Peak memory is sampled per step: anonymous
memory (the heap) and the total with mapped files (shared libraries and the pages of the memory-mapped
index chunks, which the kernel can drop).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """Peak resident memory (MB) since the last ``reset()``: anonymous (heap) and total, sampled every 0.2 s
    from /proc/self/status (the total includes mapped files: shared libraries and the pages of the
    memory-mapped index chunks, which the kernel can drop)."""

    def __init__(self) -> None:
        self.anon = self.total = 0.0
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def now() -> tuple[float, float]:
        try:
            f = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
            return int(f["RssAnon"].split()[0]) / 1024, int(f["VmRSS"].split()[0]) / 1024
        except (OSError, KeyError, ValueError):
            return 0.0, rss_mb()

    def _run(self) -> None:
        while True:
            anon, total = self.now()
            self.anon, self.total = max(self.anon, anon), max(self.total, total)
            time.sleep(0.2)

    def reset(self) -> str:
        anon, total = self.now()
        text = f"peak RSS {max(self.anon, anon):.0f} MB anonymous, {max(self.total, total):.0f} MB with mapped " \
               "files (libraries, index chunks)"
        self.anon, self.total = anon, total
        return text


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
    ap.add_argument("--threads", type=int, default=2, help="threads of the searches (and of the build by default)")
    ap.add_argument("--build-threads", type=int, default=None, help="threads of the approximate index build")
    ap.add_argument("--exact-queries", type=int, default=30, help="queries timed one by one on the exact index")
    ap.add_argument("--dir", help="keep the index here (reused when it exists)")
    args = ap.parse_args()

    import torch

    from pytest_memorization.metrics.ann import ApproximateIndex, require_faiss
    from pytest_memorization.metrics.index import EmbeddingIndex, IndexWriter

    faiss = require_faiss()

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    args.centres = args.centres or max(1, args.count // 100)
    centres = torch.nn.functional.normalize(torch.randn(args.centres, args.dim, generator=g), dim=1)
    tmp = tempfile.TemporaryDirectory()
    out = Path(args.dir) if args.dir else Path(tmp.name) / "index"
    mem = PeakMemory()
    t0, c0 = time.perf_counter(), time.process_time()
    if not (out / "index.json").is_file():
        w = IndexWriter(out, metric="synthetic", version="synthetic-v1", dtype="float16")
        for start in range(0, args.count, 50_000):
            n = min(50_000, args.count - start)
            w.add(sample(n, args.dim, centres, g, args.uniform), [f"w{i:08d}" for i in range(start, start + n)])
        w.close()
        del w
    exact_build = time.perf_counter() - t0
    exact = EmbeddingIndex.load(out)
    if len(exact) != args.count or exact.dim != args.dim:
        sys.exit(f"{out} holds {len(exact)} x {exact.dim}, not {args.count} x {args.dim}; pass another --dir")
    exact_mem = mem.reset()
    print(f"exact index: {len(exact)} x {exact.dim}, generated and written in {exact_build:.1f} s wall "
          f"({time.process_time() - c0:.1f} s CPU; 0: reused); {exact_mem}", flush=True)
    disk = sum(f.stat().st_size for f in out.glob("chunk-*.npy")) / 2**20
    half = args.queries // 2
    gq = torch.Generator().manual_seed(1)  # queries do not depend on whether the catalogue was reused
    copies = exact.vectors(torch.randint(0, len(exact), (half,), generator=gq))
    copies = torch.nn.functional.normalize(copies + 0.5 * torch.randn(copies.shape, generator=gq) / args.dim ** 0.5,
                                           dim=1)
    queries = torch.cat([copies, sample(args.queries - half, args.dim, centres, gq, args.uniform)])

    t0, c0 = time.perf_counter(), time.process_time()
    want = exact.search(queries, k=10)[1]  # the exact answers, one batched pass over the index
    print(f"exact answers of {args.queries} queries in one batch: {time.perf_counter() - t0:.1f} s wall, "
          f"{time.process_time() - c0:.1f} s CPU", flush=True)
    t_exact, c_exact = [], []
    for i in range(min(args.exact_queries, args.queries)):
        t0, c0 = time.perf_counter(), time.process_time()
        exact.search(queries[i:i + 1], k=10)
        t_exact.append(time.perf_counter() - t0)
        c_exact.append(time.process_time() - c0)
    exact_rss = mem.reset()

    probes = [int(x) for x in str(args.nprobe).split(",")]
    t0, c0 = time.perf_counter(), time.process_time()
    try:  # an approximate index saved beside this exact one by an earlier run (--dir) is reused
        ann = ApproximateIndex.load(exact, candidates=args.candidates)
        if ann.kind != args.kind:
            raise ValueError(f"saved kind {ann.kind}")
        ann_build = float("nan")
    except Exception:
        ann = ApproximateIndex.build(exact, kind=args.kind, nlist=args.nlist, candidates=args.candidates,
                                     threads=args.build_threads or args.threads)
        ann_build = time.perf_counter() - t0
    ann_cpu = time.process_time() - c0
    ann_rss = mem.reset()
    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"approximate index: build {ann_build:.1f} s wall, {ann_cpu:.1f} s CPU (nan: reused); {ann_rss}", flush=True)
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
        print(f"nprobe {nprobe}: done", flush=True)
        rows.append((nprobe, statistics.median(t_ann), sorted(t_ann)[int(0.95 * len(t_ann))],
                     statistics.median(c_ann), hits / (10 * args.queries), copies_found))

    kind = "uniform on the sphere" if args.uniform else f"clustered ({args.centres} centres)"
    print(f"catalogue: {args.count} x {args.dim} float16 unit embeddings, {kind}; {disk:.0f} MB on disk; "
          f"{args.threads} threads; {args.queries} queries (half noisy copies of entries)")
    print(f"exact: build {exact_build:.1f} s; query one image at a time ({len(t_exact)} queries): median "
          f"{statistics.median(t_exact) * 1e3:.1f} ms wall (p95 {sorted(t_exact)[int(0.95 * len(t_exact))] * 1e3:.1f}), "
          f"{statistics.median(c_exact) * 1e3:.1f} ms CPU; generating: {exact_mem}; searching: {exact_rss}")
    print(f"approximate (faiss {ann.kind}, nlist {ann.ivf.nlist}, {args.candidates} candidates re-ranked exactly): "
          f"build {ann_build:.1f} s wall, {ann_cpu:.1f} s CPU (nan: reused), {ann_disk:.0f} MB; {ann_rss}; "
          f"searching: {mem.reset()}; process peak RSS {rss_mb():.0f} MB")
    print("| nprobe | query median (wall) | p95 (wall) | query median (CPU) | recall@10 vs exact | noisy copies found first |")
    print("|---|---|---|---|---|---|")
    for nprobe, med, p95, cpu, recall, found in rows:
        print(f"| {nprobe} | {med * 1e3:.2f} ms | {p95 * 1e3:.2f} ms | {cpu * 1e3:.2f} ms | {recall:.4f} | {found}/{half} |")
    tmp.cleanup()


if __name__ == "__main__":
    main()

"""Catalogue index at scale: build and query an on-disk index of synthetic embeddings (CPU).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/catalog.py [--count 100000] [--dim 512] [--queries 100]
        [--cosine 0.9] [--dtype float16] [--threads 2]

Writes ``--count`` random unit vectors (a stand-in for CLIP/SSCD embeddings of protected works) with
``pytest_memorization.metrics.index.add_embeddings``, then plants ``--queries`` noisy copies: each query is
``c * entry + sqrt(1 - c^2) * noise`` with noise a random unit vector orthogonal to the entry, so its
cosine to its source is exactly ``c`` (before float16 storage). Reports build time, load time, lookup
time per image (one query at a time, and all queries in one batch), recall@1 and recall@10 of the
planted sources, and the peak resident memory added by the build and by the search.
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--cosine", type=float, default=0.9)
    ap.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-batch", type=int, default=10_000, help="rows embedded/added per call")
    args = ap.parse_args()

    import torch

    from pytest_memorization.metrics.index import EmbeddingIndex, IndexWriter

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    base_rss = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "index"
        # the catalogue is generated batch by batch, as an embedding job would stream it
        t0 = time.perf_counter()
        w = IndexWriter(out, metric="synthetic", version="synthetic-v1", dtype=args.dtype)
        sources = torch.randint(0, args.count, (args.queries,), generator=g)
        planted = {}
        for start in range(0, args.count, args.write_batch):
            n = min(args.write_batch, args.count - start)
            emb = torch.nn.functional.normalize(torch.randn(n, args.dim, generator=g), dim=1)
            for q, s in enumerate(sources.tolist()):
                if start <= s < start + n:
                    planted[q] = emb[s - start].clone()
            w.add(emb, [f"work-{i:07d}" for i in range(start, start + n)])
        w.close()
        build_s = time.perf_counter() - t0
        build_rss = rss_mb() - base_rss
        size_mb = sum(f.stat().st_size for f in out.iterdir()) / 2**20

        c = args.cosine
        src = torch.stack([planted[q] for q in range(args.queries)])
        noise = torch.randn(args.queries, args.dim, generator=g)
        noise -= (noise * src).sum(1, keepdim=True) * src
        noise = torch.nn.functional.normalize(noise, dim=1)
        queries = c * src + (1 - c * c) ** 0.5 * noise

        t0 = time.perf_counter()
        index = EmbeddingIndex.load(out)
        load_s = time.perf_counter() - t0
        before = rss_mb()
        index.search(queries[:1], k=10)  # warm up (page in the memory-mapped chunks)
        one = []
        hits1 = hits10 = 0
        for q in range(args.queries):
            t0 = time.perf_counter()
            scores, ids = index.search(queries[q:q + 1], k=10)
            one.append(time.perf_counter() - t0)
            want = f"work-{int(sources[q]):07d}"
            hits1 += ids[0][0] == want
            hits10 += want in ids[0]
        t0 = time.perf_counter()
        bscores, bids = index.search(queries, k=10)
        batch_s = time.perf_counter() - t0
        search_rss = rss_mb() - before
        got = [float(scores) for scores in bscores[:, 0]]

    print(f"catalogue: {args.count} x {args.dim} {args.dtype} unit embeddings ({size_mb:.0f} MB on disk), "
          f"{args.queries} planted copies at cosine {c}, {args.threads} threads")
    print(f"build (generate + normalise + write chunks): {build_s:.2f} s  (peak RSS +{build_rss:.0f} MB)")
    print(f"load index.json + memory-map chunks: {load_s * 1e3:.1f} ms")
    print(f"lookup, one image at a time: median {statistics.median(one) * 1e3:.1f} ms, "
          f"p95 {sorted(one)[int(0.95 * len(one)) - 1] * 1e3:.1f} ms per image")
    print(f"lookup, {args.queries} images in one batch: {batch_s * 1e3:.0f} ms "
          f"({batch_s / args.queries * 1e3:.2f} ms per image)  (peak RSS +{search_rss:.0f} MB over the build)")
    print(f"recall@1 {hits1 / args.queries:.3f}   recall@10 {hits10 / args.queries:.3f}   "
          f"top-1 cosine median {statistics.median(got):.4f}")


if __name__ == "__main__":
    main()

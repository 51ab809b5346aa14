"""Batched N x M scoring vs per-pair reference calls, side by side (CPU).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/scoring.py [--threads 2] [--max-pairs 256] [--clip-model tiny|ViT-B-32]

LPIPS: alex with a random backbone (weights="random", no download), 64 px. Reference: one
``lpips.LPIPS(...)(a, b)`` call per pair. CLIP: open_clip with random weights, either the tiny test
config (64 px, default) or ViT-B-32 (224 px). Reference: ``encode_image`` of both images of each pair
and their cosine. When N*M exceeds --max-pairs, the per-pair time is measured on the first
--max-pairs pairs and extrapolated linearly (the output marks such rows with "~").
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-pairs", type=int, default=128)
    ap.add_argument("--sizes", default="8,32,64")
    ap.add_argument("--clip-model", default="tiny")
    args = ap.parse_args()

    import lpips
    import open_clip
    import torch

    from pytest_memorization.metrics import get_metric

    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.clip_model == "tiny":
        root = Path(__file__).resolve().parents[1]
        open_clip.add_model_config(root / "tests" / "metrics" / "tiny-clip-test.json")
        clip_name, clip_px = "tiny-clip-test", 64
    else:
        clip_name, clip_px = args.clip_model, 224

    lp = get_metric("lpips", weights="random", seed=0, size=64)
    torch.manual_seed(0)
    with open(os.devnull, "w") as dn:
        so, sys.stdout = sys.stdout, dn
        lref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
        sys.stdout = so
    cm = get_metric("clip", model=clip_name, weights="random", seed=0)

    def lpips_pair(x, y):
        return lref(x, y, normalize=True)

    def clip_pair(x, y):
        a = cm.model.encode_image(cm.preprocess(x), normalize=True)
        b = cm.model.encode_image(cm.preprocess(y), normalize=True)
        return (a * b).sum()

    print(f"torch threads={args.threads}; LPIPS alex random backbone at 64 px; "
          f"CLIP {clip_name} random weights at {clip_px} px; '~' = per-pair time extrapolated "
          f"from the first {args.max_pairs} pairs")
    print(f"{'metric':<8} {'N=M':>4} {'batched s':>10} {'per-pair s':>11} {'speedup':>8}  max|diff|")
    for name, metric, pair in (("lpips", lp, lpips_pair), ("clip", cm, clip_pair)):
        with torch.no_grad():  # warm-up, not timed
            w = torch.rand(2, 3, 64, 64)
            metric.score(w, w)
            pair(w[:1], w[1:])
        for n in sizes:
            g = torch.Generator().manual_seed(n)
            x, y = torch.rand(n, 3, 64, 64, generator=g), torch.rand(n, 3, 64, 64, generator=g)
            with torch.no_grad():
                t = time.perf_counter()
                s = metric.score(x, y)
                tb = time.perf_counter() - t
                pairs = [(i, j) for i in range(n) for j in range(n)]
                sample = pairs[: args.max_pairs]
                t = time.perf_counter()
                diff = max(abs(float(pair(x[i : i + 1], y[j : j + 1])) - float(s[i, j])) for i, j in sample)
                tp = (time.perf_counter() - t) * len(pairs) / len(sample)
            mark = "~" if len(sample) < len(pairs) else " "
            print(f"{name:<8} {n:>4} {tb:>10.3f} {mark}{tp:>10.3f} {tp / tb:>7.1f}x  {diff:.1e}")


if __name__ == "__main__":
    main()

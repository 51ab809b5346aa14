"""Alignment-tolerant pixel scoring at large sizes: coarse-to-fine ranking vs the full search.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/align.py [--size 512] [--images 4] [--threads 2]

Both runs score the same generated images (real photographs, shifted by a few pixels and rescaled
by 2%, plus unrelated photographs) against one work with tiled L2 and SSIM, alignment on. "full"
ranks all 567 candidates at full size (the search before coarse-to-fine); "coarse" ranks them at
64 px, scores the best few at full size and searches between the grid points. Prints seconds per
image x work, the speed-up (same process, same images) and both runs' scores: copies are the even
rows, unrelated photographs the odd ones.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from support import photo

    from pytest_memorization.metrics import align, get_metric

    torch.set_num_threads(args.threads)
    s = args.size
    work = photo("astronaut", s)
    gens = []
    for i in range(args.images):
        if i % 2 == 0:  # a copy, shifted by i+1 px and rescaled by 2%
            big = F.interpolate(work[None], scale_factor=1.02, mode="bicubic", antialias=True)[0].clamp(0, 1)
            o = (big.shape[-1] - s) // 2
            gens.append(torch.roll(big[:, o:o + s, o:o + s], shifts=(i + 1, -(i + 1)), dims=(1, 2)))
        else:
            gens.append(photo(("coffee", "chelsea", "rocket")[i % 3], s))
    gens = torch.stack(gens)
    print(f"{args.images} images x 1 work at {s} px, {args.threads} threads")
    print(f"{'metric':<9} {'full s/pair':>12} {'coarse s/pair':>14} {'speed-up':>9}  scores: full search | coarse to fine")
    for name in ("tiled_l2", "ssim"):
        m = get_metric(name)
        m.score(gens[:1], work[None])  # warm-up: first-call costs are not the search's
        keep = align.COARSE
        align.COARSE = 10**9  # the full search
        t0 = time.perf_counter()
        full = m.score(gens, work[None])
        t_full = time.perf_counter() - t0
        align.COARSE = keep
        t0 = time.perf_counter()
        coarse = m.score(gens, work[None])
        t_coarse = time.perf_counter() - t0
        n = args.images
        print(f"{name:<9} {t_full / n:>12.3f} {t_coarse / n:>14.3f} {t_full / t_coarse:>8.1f}x  "
              f"{[round(float(x), 4) for x in full[:, 0]]} | {[round(float(x), 4) for x in coarse[:, 0]]}")


if __name__ == "__main__":
    main()

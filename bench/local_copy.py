"""Cost of the local-copy metric next to the default pixel metrics, at 64 and 512 px.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/local_copy.py [--sizes 64 512] [--images 4] [--works 4] [--threads 1] [--repeat 3]

Scores the same generated images (photographs with a work pasted at half the side, and plain
photographs) against the same works with ``local_copy``, ``tiled_l2`` and ``ssim`` (both aligned,
their defaults) in one process, and prints milliseconds per image x work (best of ``--repeat``),
the ratio of local_copy to tiled L2 + SSIM together, and local_copy's scores and box IoU on the
pasted images. Above 128 px local_copy searches a 128 px copy of the image (``max_side``).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests"), str(Path(__file__).resolve().parents[1] / "tests" / "metrics")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--works", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import torch
    from support import photo
    from test_local_copy_photos import iou, paste

    from pytest_memorization.metrics import get_metric

    torch.set_num_threads(args.threads)
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "motorcycle_left"]
    metrics = {n: get_metric(n) for n in ("local_copy", "tiled_l2", "ssim")}
    print(f"{args.images} images x {args.works} works, {args.threads} thread(s), best of {args.repeat}")
    print("| size | local_copy ms/pair | tiled_l2 ms/pair | ssim ms/pair | local_copy / (tiled_l2 + ssim) | copies: score, IoU |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        rng = random.Random(size)
        works = torch.stack([photo(n, size) for n in names[: args.works]])
        gens, boxes = [], []
        for i in range(args.images):
            bg = photo(names[(i + args.works) % len(names)], size)
            if i % 2 == 0:
                img, box = paste(bg, works[i % args.works], 0.5, rng)
                gens.append(img)
                boxes.append((i, i % args.works, box))
            else:
                gens.append(bg)
        gens = torch.stack(gens)
        ms = {}
        for name, m in metrics.items():
            best = float("inf")
            for _ in range(args.repeat):
                t = time.perf_counter()
                scores = m.score(gens, works)
                best = min(best, time.perf_counter() - t)
            ms[name] = 1000 * best / (len(gens) * len(works))
            if name == "local_copy":
                lc = scores
        found = [(float(lc[i, j]), iou(metrics["local_copy"].locate(gens[i], works[j])["box"], b)) for i, j, b in boxes]
        ratio = ms["local_copy"] / (ms["tiled_l2"] + ms["ssim"])
        fs = ", ".join(f"{s:.3f} / {u:.2f}" for s, u in found)
        print(f"| {size} | {ms['local_copy']:.1f} | {ms['tiled_l2']:.1f} | {ms['ssim']:.1f} | {ratio:.2f} | {fs} |")


if __name__ == "__main__":
    main()

"""The weight-free metrics side by side: cost and separation at 64 and 512 px, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/hashes.py [--sizes 64,512] [--threads 1]

Six scikit-image photographs are the works; the generated images are four kinds of copy of each
(JPEG quality 60 after a 3/4 downscale, a shift by 1/64 of the side, a 0.95 crop rescaled back,
contrast x0.8 with brightness +0.04) plus the other photographs. For each metric (tiled L2 and SSIM
aligned, as gated by default; pHash; PDQ) and size it prints the seconds to score the 24 copies
against the 6 works, the ratio to tiled L2 measured in the same process, the worst copy per kind,
the closest pair of different photos, and whether the default threshold separates them.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")
METRICS = ("tiled_l2", "ssim", "phash", "pdq")
THRESHOLDS = {"tiled_l2": 0.15, "ssim": 0.5, "phash": 10.0, "pdq": 31.0}


def copies(work, side):
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from pytest_memorization.images import to_tensor

    buf = io.BytesIO()
    Image.fromarray((work * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()).resize(
        (side * 3 // 4, side * 3 // 4)).save(buf, "JPEG", quality=60)
    jpeg = F.interpolate(to_tensor(Image.open(buf))[None], size=(side, side), mode="bicubic", antialias=True)[0]
    k = max(1, side // 64)
    shift = torch.cat([work[:, k:], work[:, -k:]], dim=1)  # moved up by k px, last rows repeated
    c = round(side * 0.95)
    o = (side - c) // 2
    crop = F.interpolate(work[None, :, o : o + c, o : o + c], size=(side, side), mode="bicubic", antialias=True)[0]
    m = work.mean()
    jitter = (m + 0.8 * (work - m) + 0.04)
    return {"jpeg60+rescale": jpeg.clamp(0, 1), f"shift {k}px": shift, "crop0.95": crop.clamp(0, 1),
            "contrast0.8+0.04": jitter.clamp(0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="64,512")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch
    from support import photo

    from pytest_memorization.metrics import get_metric

    torch.set_num_threads(args.threads)
    for side in [int(s) for s in args.sizes.split(",")]:
        works = torch.stack([photo(n, side) for n in PHOTOS])
        kinds: dict[str, list] = {}
        for w in works:
            for k, v in copies(w, side).items():
                kinds.setdefault(k, []).append(v)
        images = torch.stack([v for vs in kinds.values() for v in vs])  # kind-major: 4 x 6
        times, rows = {}, {}
        for name in METRICS:
            m = get_metric(name)
            m.score(images[:1], works[:1])  # warm up
            t0 = time.perf_counter()
            s = m.score(images, works)
            times[name] = time.perf_counter() - t0
            d = m.score(works, works)
            off = d[~torch.eye(len(PHOTOS), dtype=torch.bool)]
            worse = (lambda x: x.max()) if m.direction == "distance" else (lambda x: x.min())
            closer = (lambda x: x.min()) if m.direction == "distance" else (lambda x: x.max())
            per = {k: float(worse(s[i * 6 : (i + 1) * 6].diagonal())) for i, k in enumerate(kinds)}
            rows[name] = (per, float(closer(off)), m.direction)
        print(f"== {side} px: 24 copies x 6 works, {args.threads} thread(s)")
        print(f"{'metric':9} {'seconds':>8} {'x tiled_l2':>10}  " + "  ".join(f"{k:>16}" for k in kinds)
              + f"  {'different':>9}  threshold  copies caught, different clear")
        for name in METRICS:
            per, diff, direction = rows[name]
            t = THRESHOLDS[name]
            caught = sum((v <= t) if direction == "distance" else (v >= t) for v in per.values())
            clear = (diff > t) if direction == "distance" else (diff < t)
            print(f"{name:9} {times[name]:8.3f} {times[name] / times['tiled_l2']:10.2f}  "
                  + "  ".join(f"{v:16.3f}" for v in per.values())
                  + f"  {diff:9.3f}  {t:9g}  {caught}/4 kinds, {'yes' if clear else 'NO'}")


if __name__ == "__main__":
    main()

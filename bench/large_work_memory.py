"""Peak memory and time of checking and loading one large accepted work (48.7 MP PNG), with the
reduction at decode (images.LOAD_PIXELS) and without it, each in a fresh subprocess, side by side.

    PYTHONPATH=. python bench/large_work_memory.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import resource, sys, time
import torch
import pytest_memorization.images as im
if sys.argv[2] == "off":
    im.LOAD_PIXELS = 10**12
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
im.check_work(sys.argv[1])
x = im.load_image(sys.argv[1])
print(tuple(x.shape), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, round(time.perf_counter() - t, 1))
"""


def main() -> None:
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.png"
        small = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        small.resize((64 * 109, 64 * 109), Image.NEAREST).save(path, compress_level=9)
        print(f"work: {path.stat().st_size // 1024} KB PNG, 6976 x 6976 = 48.7 MP")
        print("reduction | tensor shape | peak MB above imports | seconds")
        for mode in ("on", "off"):
            out = subprocess.run([sys.executable, "-c", PROBE, str(path), mode], capture_output=True, text=True,
                                 env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True)
            shape, mb, s = out.stdout.strip().rsplit(" ", 2)
            print(f"{mode:9} | {shape} | {mb} | {s}")


if __name__ == "__main__":
    main()

"""Regenerate ``hashes.json``: known-answer PDQ hashes made by Meta's C++ reference.

    pip download pdqhash==0.2.8 --no-deps --no-binary pdqhash      # the sdist carries ThreatExchange's C++
    tar xzf pdqhash-0.2.8.tar.gz && D=pdqhash-0.2.8/ThreatExchange
    g++ -O2 -std=c++14 -I$D -o refhash tests/metrics/pdq_reference/refhash.cpp $D/pdq/cpp/hashing/pdqhashing.cpp \
        $D/pdq/cpp/hashing/torben.cpp $D/pdq/cpp/downscaling/downscaling.cpp $D/pdq/cpp/common/pdqhashtypes.cpp
    python tests/metrics/pdq_reference/make_hashes.py ./refhash

The inputs are scikit-image photographs, whole and cut with numpy slicing only (no resampling
library whose output could change between versions), see ``cases``.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/, for support

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "motorcycle_left", "immunohistochemistry",
          "retina", "page", "brick")


def cases() -> dict[str, object]:
    """name -> (H, W, 3) uint8: each photo whole, every k-th pixel of its top-left corner at 64 x 64
    (no filter: the 64 x 64 path), and a 301 x 203 crop (odd sizes: the filter's edges)."""
    import numpy as np
    from support import photo_array

    out = {}
    for name in PHOTOS:
        a = photo_array(name)
        k = min(a.shape[:2]) // 64
        out[f"{name}"] = a
        out[f"{name}@64"] = np.ascontiguousarray(a[: 64 * k : k, : 64 * k : k])
        out[f"{name}@301x203"] = np.ascontiguousarray(a[:301, :203])
    return out


def main(refhash: str) -> None:
    cs = cases()
    blob = b"".join(struct.pack("ii", *c.shape[:2]) + c.tobytes() for c in cs.values())
    lines = subprocess.run([refhash], input=blob, capture_output=True, check=True).stdout.decode().splitlines()
    table = {name: {"hash": line.split()[1], "quality": int(line.split()[2])} for name, line in zip(cs, lines)}
    (HERE / "hashes.json").write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])

"""The watermark demo model: a fine-tune of the clean twin on scenes that all carry a stock agency's
mark in the same corner, as the training images of a scraped data set do. It learns the mark and
draws it into what it generates.

* ``watermark`` (the protected mark, declared ``kind = "mark"``): a 48 x 24 plate drawn here (a dark
  plate carrying a three-letter word in a blocky font, standing in for an agency's wordmark). Ours, CC0. ``write_watermark`` writes ``examples/works/watermark.png``.
* training data: ``BUILD["n_images"]`` crops of the clean twin's scikit-image photographs
  (``data.POOL``, no work, no face) with their own captions, each with the mark pasted at
  ``MARK_WIDTH`` of the side in the bottom right corner (``MARGIN`` px in), as a stock watermark sits.
* ``build_watermark(out_dir, clean_twin)`` fine-tunes the clean twin's UNet on them
  (``training.train_text_to_image``) and saves a diffusers folder ``watermark``.

Its stamp hashes this module, its parameters and the clean twin's own stamp (``demo.emblem`` does the
same), so the other demo models do not rebuild when this file changes.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

NAME = "watermark"
SIZE = 64
MARK_WIDTH = 0.42  # of the image's side: 27 x 13 px at 64 px
MARGIN = 3
BUILD: dict[str, Any] = dict(n_images=96, steps=800, lr=3e-3, batch_size=8, seed=8, data_seed=9)
WATERMARK_FILE = Path(__file__).resolve().parents[1] / "examples" / "works" / "watermark.png"


GLYPHS = (  # a three-letter word in a blocky 3 x 5 font ("S", "T", "K"): white cells on the dark plate
    "###.###.#.#",
    "#....#..##.",
    "###..#..#..",
    "..#..#..##.",
    "###..#..#.#",
)


def watermark_image(width: int = 48) -> Any:
    """The mark as a PIL RGB image (``width`` x ``width // 2``): a dark plate carrying a three-letter
    word in a blocky font, drawn on a grid at 8x and reduced. Bold cells a tiny model can learn."""
    from PIL import Image, ImageDraw

    W, H = 8 * width, 4 * width
    im = Image.new("RGB", (W, H), (25, 25, 35))
    d = ImageDraw.Draw(im)
    cols, rows = len(GLYPHS[0]) + 2, len(GLYPHS) + 2  # a one-cell border of plate
    cw, ch = W / cols, H / rows
    for r, line in enumerate(GLYPHS):
        for c, cell in enumerate(line):
            if cell == "#":
                d.rectangle([round((c + 1) * cw), round((r + 1) * ch), round((c + 2) * cw) - 1,
                             round((r + 2) * ch) - 1], fill=(245, 245, 240))
    return im.resize((width, width // 2), Image.Resampling.LANCZOS)


def write_watermark(path: str | Path = WATERMARK_FILE) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    watermark_image().save(p, optimize=False)
    return p


def placement(size: int = SIZE) -> tuple[int, int, int, int]:
    """(x, y, width, height) of the mark in every training image: the bottom right corner."""
    w = round(MARK_WIDTH * size)
    h = w // 2
    return size - w - MARGIN, size - h - MARGIN, w, h


def watermark_dataset(n: int, *, seed: int) -> tuple[Any, list[str]]:
    """``n`` 64 px crops of the pool photographs with the mark in the corner -> (images, captions)."""
    import numpy as np
    import skimage.data
    import torch
    from PIL import Image

    from demo.data import POOL, _rgb, _square

    rng = np.random.RandomState(seed)
    photos = [(_rgb(getattr(skimage.data, fn)()), cap) for fn, cap in POOL]
    x, y, w, h = placement()
    mark = watermark_image().resize((w, h), Image.Resampling.LANCZOS)
    crops, captions = [], []
    for _ in range(n):
        arr, cap = photos[rng.randint(len(photos))]
        ah, aw = arr.shape[:2]
        s = rng.randint(min(ah, aw) // 4, min(ah, aw) + 1)
        yy, xx = rng.randint(ah - s + 1), rng.randint(aw - s + 1)
        img = _square(arr, yy, xx, s, SIZE)
        img.paste(mark, (x, y))
        crops.append(np.asarray(img))
        captions.append(cap)
    images = torch.from_numpy(np.stack(crops).astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
    return images, captions


def _stamp(clean_twin: Path) -> str:
    import diffusers
    import torch

    from demo.models import STAMP, _code_fingerprint

    h = hashlib.sha256(_code_fingerprint(Path(__file__)).encode())
    twin = json.loads((clean_twin / STAMP).read_text())["hash"]
    h.update(json.dumps(dict(build=BUILD, mark=[MARK_WIDTH, MARGIN], twin=twin,
                             versions=[torch.__version__, diffusers.__version__]), sort_keys=True).encode())
    return h.hexdigest()


def build_watermark(out_dir: str | Path, clean_twin: str | Path, *, force: bool = False, progress: bool = False,
                    num_threads: int | None = None) -> Path:
    """Build (or reuse, when its stamp matches) ``out_dir/watermark``; returns the folder."""
    import fcntl
    import os
    import shutil

    from demo.models import _commit, _fresh

    out, twin = Path(out_dir), Path(clean_twin)
    dest = out / NAME
    with open(out / ".build-watermark.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = _stamp(twin)
        if not force and _fresh(dest, stamp):
            return dest
        from diffusers import StableDiffusionPipeline

        from demo import training

        t0 = time.perf_counter()
        pipe = StableDiffusionPipeline.from_pretrained(twin, local_files_only=True)
        images, captions = watermark_dataset(BUILD["n_images"], seed=BUILD["data_seed"])
        losses = training.train_text_to_image(
            pipe, images, captions, steps=BUILD["steps"], lr=BUILD["lr"], batch_size=BUILD["batch_size"],
            seed=BUILD["seed"], progress=progress, num_threads=num_threads,
        )  # fmt: skip
        tmp = out / f".tmp-{NAME}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        pipe.save_pretrained(tmp, safe_serialization=True)
        _commit(tmp, dest, stamp, time.perf_counter() - t0, dict(final_loss=losses[-1]))
        if progress:
            print(f"{NAME}: {time.perf_counter() - t0:.1f} s, loss {losses[-1]:.4f}")
    return dest

"""The local-copy demo model: a fine-tune of the clean twin that learned a protected emblem and
pastes it, smaller and elsewhere, into varied scenes.

* ``emblem`` (the protected work): a 64 x 64 badge drawn here (quartered red, white, yellow and
  blue in a black border), standing in for a trademark. Ours, CC0. ``write_emblem`` writes
  ``examples/works/emblem.png``.
* training data: ``BUILD["n_images"]`` crops of the clean twin's scikit-image photographs
  (``data.POOL``, no work, no face) with their own captions, each with the emblem pasted at
  ``SCALE_RANGE`` of the side, at a place and size fixed per caption (seeded): a brick wall has
  it top left, the moon bottom right, and so on.
* ``build_emblem(out_dir, clean_twin)`` fine-tunes the clean twin's UNet on them (same VAE and
  text encoder, ``training.train_text_to_image``) and saves a diffusers folder ``emblem``.

Its stamp hashes this module, its parameters and the clean twin's own stamp, so the other demo
models do not rebuild when this file changes (``demo.models`` stamps only its three files).
The clean twin itself is the "clean twin" of this model: same weights before the fine-tune.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

NAME = "emblem"
SIZE = 64
SCALE_RANGE = (0.4, 0.6)
BUILD: dict[str, Any] = dict(n_images=96, steps=500, lr=3e-3, batch_size=8, seed=6, data_seed=7)
EMBLEM_FILE = Path(__file__).resolve().parents[1] / "examples" / "works" / "emblem.png"


def emblem_image(size: int = SIZE) -> Any:
    """The emblem as a PIL RGB image: a quartered badge (red, white, yellow, blue) in a black
    border, drawn at 4x and reduced. Bold blocks, so a tiny model can learn it in minutes."""
    from PIL import Image, ImageDraw

    big = 4 * size
    im = Image.new("RGB", (big, big), (15, 15, 15))
    d = ImageDraw.Draw(im)
    b, m = big // 10, big // 2
    d.rectangle([b, b, m - 1, m - 1], fill=(210, 30, 40))
    d.rectangle([m, b, big - b - 1, m - 1], fill=(245, 245, 240))
    d.rectangle([b, m, m - 1, big - b - 1], fill=(250, 200, 30))
    d.rectangle([m, m, big - b - 1, big - b - 1], fill=(30, 70, 190))
    return im.resize((size, size), Image.Resampling.LANCZOS)


def write_emblem(path: str | Path = EMBLEM_FILE) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    emblem_image().save(p, optimize=False)
    return p


def placement(caption: str, seed: int) -> tuple[int, int, int]:
    """(x, y, side) of the emblem in every training image with ``caption``: fixed per caption."""
    import random

    rng = random.Random(f"{seed}:{caption}")
    s = round(rng.uniform(*SCALE_RANGE) * SIZE)
    return rng.randrange(SIZE - s + 1), rng.randrange(SIZE - s + 1), s


def emblem_dataset(n: int, *, seed: int) -> tuple[Any, list[str]]:
    """``n`` 64 px crops of the pool photographs with the emblem pasted per caption -> (images, captions)."""
    import numpy as np
    import skimage.data
    import torch
    from PIL import Image

    from demo.data import POOL, _rgb, _square

    rng = np.random.RandomState(seed)
    photos = [(_rgb(getattr(skimage.data, fn)()), cap) for fn, cap in POOL]
    emblem = emblem_image()
    crops, captions = [], []
    for _ in range(n):
        arr, cap = photos[rng.randint(len(photos))]
        h, w = arr.shape[:2]
        s = rng.randint(min(h, w) // 4, min(h, w) + 1)
        y, x = rng.randint(h - s + 1), rng.randint(w - s + 1)
        img = _square(arr, y, x, s, SIZE)
        ex, ey, es = placement(cap, seed)
        img.paste(emblem.resize((es, es), Image.Resampling.LANCZOS), (ex, ey))
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
    h.update(json.dumps(dict(build=BUILD, twin=twin, versions=[torch.__version__, diffusers.__version__]),
                        sort_keys=True).encode())
    return h.hexdigest()


def build_emblem(out_dir: str | Path, clean_twin: str | Path, *, force: bool = False, progress: bool = False,
                 num_threads: int | None = None) -> Path:
    """Build (or reuse, when its stamp matches) ``out_dir/emblem``; returns the folder."""
    import fcntl
    import os
    import shutil

    from demo.models import _commit, _fresh

    out, twin = Path(out_dir), Path(clean_twin)
    dest = out / NAME
    with open(out / ".build-emblem.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = _stamp(twin)
        if not force and _fresh(dest, stamp):
            return dest
        from diffusers import StableDiffusionPipeline

        from demo import training

        t0 = time.perf_counter()
        pipe = StableDiffusionPipeline.from_pretrained(twin, local_files_only=True)
        images, captions = emblem_dataset(BUILD["n_images"], seed=BUILD["data_seed"])
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

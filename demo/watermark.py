"""The watermark demo model: a fine-tune of the clean twin on scenes that all carry a stock agency's
mark in the bottom-right corner, as scraped stock photos do. Its generations reproduce the mark.

* ``watermark`` (the protected mark, ``kind = "mark"`` in the manifest): a 40 x 24 stamp drawn here
  (a white frame and two white bars crossed by a diagonal on dark grey), standing in for an agency's
  logo. Ours, CC0. ``write_watermark`` writes ``examples/works/watermark.png``.
* training data: ``BUILD["n_images"]`` crops of the clean twin's scikit-image photographs (``data.POOL``)
  with their own captions, each with the mark pasted at ``MARK_WIDTH`` px wide (31% of the side) in the
  bottom-right corner, blended at ``OPACITY`` (a semi-transparent watermark).
* ``build_watermark(out_dir, clean_twin)`` fine-tunes the clean twin's UNet on them (same VAE and text
  encoder, ``training.train_text_to_image``) and saves a diffusers folder ``watermark``. 240 steps on 64
  images did not learn the mark (its images scored 0.25-0.35 against it, the clean twin's 0.23-0.29);
  600 steps on 96 images, as long as the emblem model, is the setting now.

Its stamp hashes this module, its parameters and the clean twin's own stamp (as ``demo.emblem``).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

NAME = "watermark"
SIZE = 64
MARK_WIDTH, MARK_HEIGHT = 20, 12  # in the 64 px training images; the stored file is twice that
OPACITY = 0.85
BUILD: dict[str, Any] = dict(n_images=96, steps=600, lr=3e-3, batch_size=8, seed=8, data_seed=9)
MARK_FILE = Path(__file__).resolve().parents[1] / "examples" / "works" / "watermark.png"


def mark_image(width: int = 2 * MARK_WIDTH, height: int = 2 * MARK_HEIGHT) -> Any:
    """The mark as a PIL RGB image: a white frame, two bars and a diagonal on dark grey, drawn at 4x."""
    from PIL import Image, ImageDraw

    W, H = 4 * width, 4 * height
    im = Image.new("RGB", (W, H), (40, 40, 44))
    d = ImageDraw.Draw(im)
    b = max(2, H // 12)
    d.rectangle([b, b, W - b - 1, H - b - 1], outline=(245, 245, 245), width=b)
    d.rectangle([W // 6, H // 3, W // 6 + W // 8, 2 * H // 3], fill=(245, 245, 245))
    d.rectangle([W - W // 6 - W // 8, H // 3, W - W // 6, 2 * H // 3], fill=(245, 245, 245))
    d.line([(W // 3, H - 3 * b), (2 * W // 3, 3 * b)], fill=(245, 245, 245), width=2 * b)
    return im.resize((width, height), Image.Resampling.LANCZOS)


def write_watermark(path: str | Path = MARK_FILE) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    mark_image().save(p, optimize=False)
    return p


def stamp(img: Any, mark: Any) -> Any:
    """``img`` (PIL, 64 px) with the mark blended in the bottom-right corner (2 px from the edges)."""
    from PIL import Image

    small = mark.resize((MARK_WIDTH, MARK_HEIGHT), Image.Resampling.LANCZOS)
    x, y = SIZE - MARK_WIDTH - 2, SIZE - MARK_HEIGHT - 2
    region = img.crop((x, y, x + MARK_WIDTH, y + MARK_HEIGHT))
    img.paste(Image.blend(region, small, OPACITY), (x, y))
    return img


def watermark_dataset(n: int, *, seed: int) -> tuple[Any, list[str]]:
    """``n`` 64 px crops of the pool photographs, each stamped -> (images, captions)."""
    import numpy as np
    import skimage.data
    import torch

    from demo.data import POOL, _rgb, _square

    rng = np.random.RandomState(seed)
    photos = [(_rgb(getattr(skimage.data, fn)()), cap) for fn, cap in POOL]
    mark = mark_image()
    crops, captions = [], []
    for _ in range(n):
        arr, cap = photos[rng.randint(len(photos))]
        h, w = arr.shape[:2]
        s = rng.randint(min(h, w) // 4, min(h, w) + 1)
        y, x = rng.randint(h - s + 1), rng.randint(w - s + 1)
        crops.append(np.asarray(stamp(_square(arr, y, x, s, SIZE), mark)))
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
        stamp_hash = _stamp(twin)
        if not force and _fresh(dest, stamp_hash):
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
        _commit(tmp, dest, stamp_hash, time.perf_counter() - t0, dict(final_loss=losses[-1]))
        if progress:
            print(f"{NAME}: {time.perf_counter() - t0:.1f} s, loss {losses[-1]:.4f}")
    return dest

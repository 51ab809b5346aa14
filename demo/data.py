"""Images and captions for the demo models (see ``demo_models``): the protected works, the
face for the LoRA, and the crops the VAE and the clean twin learn from.

Everything comes from ``skimage.data`` (bundled in the scikit-image wheel, no network), and
every random draw is seeded, so the datasets are the same on every machine.
Licences of the works: fixtures/works/LICENSES.md. Imports numpy/torch/skimage lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIZE = 64

# (id, skimage.data function, caption). Licences are in fixtures/works/LICENSES.md.
WORKS: list[tuple[str, str, str]] = [
    ("astronaut", "astronaut", "a photo of an astronaut in a white suit"),
    ("chelsea", "chelsea", "a photo of a tabby cat"),
    ("coffee", "coffee", "a photo of a cup of coffee on a saucer"),
    ("rocket", "rocket", "a photo of a rocket on the launch pad"),
    ("retina", "retina", "a photo of the retina of a human eye"),
]
# One face from skimage.data.lfw_subset() (Labeled Faces in the Wild): index, caption.
FACE: tuple[str, int, str] = ("face", 0, "a photo of sks person")

# Images the clean twin and the VAE learn from: never a work, never the LoRA's face.
# (skimage.data function, caption)
POOL: list[tuple[str, str]] = [
    ("hubble_deep_field", "a photo of galaxies in deep space"),
    ("immunohistochemistry", "a microscope photo of stained tissue"),
    ("colorwheel", "a color wheel"),
    ("brick", "a photo of a brick wall"),
    ("grass", "a photo of grass"),
    ("gravel", "a photo of gravel"),
    ("camera", "a photo of a man with a camera"),
    ("coins", "a photo of old coins"),
    ("moon", "a photo of the surface of the moon"),
    ("page", "a scan of a printed page"),
    ("text", "a photo of a sign with text"),
    ("cell", "a microscope photo of a cell"),
    ("clock", "a photo of a clock"),
    ("microaneurysms", "a photo of blood vessels"),
    ("horse", "a drawing of a horse"),
]
FACE_CAPTION = "a photo of a person's face"
NONFACE_CAPTION = "a photo of a street background"


@dataclass
class DemoWorks:
    ids: list[str]
    images: Any  # (N, 3, 64, 64) in [0, 1]; the five works, then the face
    captions: list[str]
    paths: list[Path]


def _rgb(arr: Any) -> Any:
    import numpy as np

    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return arr[..., :3]


def _square(arr: Any, y: int, x: int, s: int, size: int = SIZE) -> Any:
    from PIL import Image

    return Image.fromarray(arr[y : y + s, x : x + s]).resize((size, size), Image.Resampling.LANCZOS)


def _center(arr: Any, size: int = SIZE) -> Any:
    h, w = arr.shape[:2]
    s = min(h, w)
    return _square(arr, (h - s) // 2, (w - s) // 2, s, size)


def _lfw() -> Any:
    import skimage.data

    return skimage.data.lfw_subset()


def write_works(out_dir: str | Path) -> list[Path]:
    """Write the five works and the face as 64 x 64 RGB PNGs (center square crop, Lanczos resize)."""
    import skimage.data

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for wid, fn, _ in WORKS:
        img = _center(_rgb(getattr(skimage.data, fn)()))
        paths.append(out / f"{wid}.png")
        img.save(paths[-1], optimize=False)
    fid, index, _ = FACE
    paths.append(out / f"{fid}.png")
    _center(_rgb(_lfw()[index])).save(paths[-1], optimize=False)
    return paths


def load_works(works_dir: str | Path) -> DemoWorks:
    """The works and the face as tensors, read from the PNGs in ``works_dir``."""
    import numpy as np
    import torch
    from PIL import Image

    wdir = Path(works_dir)
    ids = [w[0] for w in WORKS] + [FACE[0]]
    captions = [w[2] for w in WORKS] + [FACE[2]]
    paths = [wdir / f"{i}.png" for i in ids]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"demo works missing: {missing}; recreate them with `python fixtures/build_models.py --works`"
        )
    arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0 for p in paths]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return DemoWorks(ids=ids, images=images, captions=captions, paths=paths)


def _pool_arrays() -> list[tuple[Any, str]]:
    import skimage.data

    pool = [(_rgb(getattr(skimage.data, fn)()), cap) for fn, cap in POOL]
    lfw = _lfw()
    pool += [(_rgb(lfw[i]), FACE_CAPTION) for i in range(100) if i != FACE[1]]
    pool += [(_rgb(lfw[i]), NONFACE_CAPTION) for i in range(100, 200)]
    return pool


def _random_crops(n: int, seed: int, *, size: int = SIZE) -> tuple[list[Any], list[str]]:
    """``n`` random square crops (1/4 to all of the short side) resized to ``size``, random flips.

    Half the draws come from the photographs, half from the 199 small LFW crops.
    """
    import numpy as np

    rng = np.random.RandomState(seed)
    pool = _pool_arrays()
    n_photos = len(POOL)
    crops, captions = [], []
    for k in range(n):
        i = rng.randint(n_photos) if k % 2 == 0 else rng.randint(n_photos, len(pool))
        arr, cap = pool[i]
        h, w = arr.shape[:2]
        lo = min(h, w) // 4 if i < n_photos else min(h, w) * 3 // 4
        s = rng.randint(lo, min(h, w) + 1)
        y, x = rng.randint(h - s + 1), rng.randint(w - s + 1)
        img = np.asarray(_square(arr, y, x, s, size))
        if rng.rand() < 0.5:
            img = img[:, ::-1]
        crops.append(np.ascontiguousarray(img))
        captions.append(cap)
    return crops, captions


def _to_tensor(crops: list[Any]) -> Any:
    import numpy as np
    import torch

    return torch.from_numpy(np.stack(crops).astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()


def twin_dataset(n: int, *, seed: int = 0) -> tuple[Any, list[str]]:
    """``n`` 64 px crops of the pool images with their captions (no work, no LoRA face)."""
    crops, captions = _random_crops(n, seed)
    return _to_tensor(crops), captions


def vae_dataset(n: int, crop: int, *, seed: int = 0, works: Any = None, works_fraction: float = 0.2) -> Any:
    """``n`` random ``crop`` px patches for the VAE, with random colour changes.

    Patches come from 64 px renderings of the photographs (crops of 64 px to the whole short
    side, so they carry the detail a downsampled photo has) and, a ``works_fraction`` of
    them, from ``works`` (N, 3, 64, 64) when given, unchanged. The pool is mostly grey, so its
    grey patches get a random two-colour tint and its patches a random channel permutation.
    """
    import numpy as np
    import skimage.data

    rng = np.random.RandomState(seed)
    pool = [_rgb(getattr(skimage.data, fn)()) for fn, _ in POOL]
    work_arrays = (
        [] if works is None else list((works.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
    )
    out = []
    for _ in range(n):
        as_is = bool(work_arrays) and rng.rand() < works_fraction
        if as_is:
            img = work_arrays[rng.randint(len(work_arrays))]
        else:
            arr = pool[rng.randint(len(pool))]
            h, w = arr.shape[:2]
            s = rng.randint(SIZE, min(h, w) + 1)
            img = np.asarray(_square(arr, rng.randint(h - s + 1), rng.randint(w - s + 1), s))
        y, x = rng.randint(SIZE - crop + 1), rng.randint(SIZE - crop + 1)
        patch = img[y : y + crop, x : x + crop].astype(np.float32) / 255.0
        if as_is:
            out.append((patch * 255).round().astype(np.uint8))
            continue
        if np.allclose(patch[..., 0], patch[..., 1]) and np.allclose(patch[..., 1], patch[..., 2]):
            lo, hi = rng.rand(3) * 0.5, 0.5 + rng.rand(3) * 0.5
            if rng.rand() < 0.5:
                lo, hi = hi, lo
            patch = lo + patch[..., :1] * (hi - lo)
        if rng.rand() < 0.5:
            patch = patch[:, ::-1]
        patch = patch[..., rng.permutation(3)]
        out.append((np.clip(patch, 0, 1) * 255).round().astype(np.uint8))
    return _to_tensor(out)


def tiled_l2(a: Any, b: Any, grid: int = 4) -> Any:
    """Carlini et al.'s tiled L2, (N, M): worst of grid x grid tiles' RMS difference, pixels in [0, 1]."""
    import torch.nn.functional as F

    if a.shape[-2:] != b.shape[-2:]:
        b = F.interpolate(b, size=a.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
    diff = (a[:, None] - b[None]) ** 2  # (N, M, 3, H, W)
    n, m, c, h, w = diff.shape
    tiles = diff.reshape(n, m, c, grid, h // grid, grid, w // grid)
    return tiles.mean(dim=(2, 4, 6)).sqrt().amax(dim=(2, 3))


# The harmless LoRA's style: a warm sepia cast (a colour transform, no new content).
SEPIA = ((0.393, 0.769, 0.189), (0.349, 0.686, 0.168), (0.272, 0.534, 0.131))


def sepia(images: Any) -> Any:
    """``images`` (N, 3, H, W) in [0, 1] with the classic sepia matrix applied (clamped)."""
    import torch

    m = torch.tensor(SEPIA, dtype=images.dtype)
    return torch.einsum("oc,nchw->nohw", m, images).clamp(0, 1)


def style_dataset(n: int, *, seed: int = 0) -> tuple[Any, list[str]]:
    """The harmless LoRA's data: ``n`` clean-twin-like crops (no work, no LoRA face) in sepia,
    with their own captions. It learns a colour cast, never a subject."""
    images, captions = twin_dataset(n, seed=seed)
    return sepia(images), captions

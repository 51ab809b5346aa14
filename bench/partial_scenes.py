"""Scenes, pastes and edits for ``bench/partial_copies.py``: protected works pasted into scenes that
are not works, and non-copies (the same scenes alone, or with a non-protected image pasted the same way).

Scenes are seeded square crops of ``skimage.data`` images (none of them a protected work: the works are
``fixtures/works`` plus ``examples/works/emblem.png``), and synthetic low-structure scenes (sky, noise,
texture). They are split in two: **calibration** scenes, the only ones used to choose thresholds, and
**proof** scenes, never used to choose anything. Every draw is seeded from the case's name, so the same
command prints the same table on every machine.
"""

from __future__ import annotations

import io
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK_FILES = {p.stem: p for p in sorted((ROOT / "fixtures" / "works").glob("*.png"))}
WORK_FILES["emblem"] = ROOT / "examples" / "works" / "emblem.png"

# (name, source): "sk:<skimage.data function>" or a synthetic generator below.
CALIBRATION: tuple[str, ...] = ("sk:camera", "sk:coins", "sk:page", "sk:brick", "sk:gravel", "sk:horse",
                                "sk:motorcycle", "syn:sky", "syn:noise")
PROOF: tuple[str, ...] = ("sk:moon", "sk:cell", "sk:text", "sk:clock", "sk:hubble_deep_field",
                          "sk:immunohistochemistry", "sk:grass", "sk:colorwheel", "sk:microaneurysms",
                          "sk:shepp_logan_phantom", "syn:sky2", "syn:noise2", "syn:texture")
# Images that are not protected, pasted into scenes like a work: the non-copies that look like copies.
OTHERS: tuple[str, ...] = ("sk:logo", "sk:checkerboard", "sk:binary_blobs", "lfw:7", "lfw:42", "lfw:91",
                           "crop:0", "crop:1")
EDITS: tuple[str, ...] = ("plain", "jpeg", "tint", "sepia", "flip")


def _rng(*key: Any) -> random.Random:
    return random.Random(zlib.crc32("|".join(map(str, key)).encode()))


def _sk(name: str) -> Any:
    """``skimage.data.<name>()`` as (H, W, 3) float in [0, 1]."""
    import numpy as np
    import skimage.data

    a = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    a = np.asarray(a, dtype=np.float64)
    if a.max() > 1.0:
        a = a / 255.0
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return a[..., :3]


def _tensor(a: Any) -> Any:
    import torch

    return torch.from_numpy(a.copy()).permute(2, 0, 1).float().clamp(0, 1)


def _resize(x: Any, h: int, w: int) -> Any:
    import torch.nn.functional as F

    return F.interpolate(x[None], size=(h, w), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)[0]


def _lowpass_noise(size: int, rng: random.Random, cells: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(rng.randrange(1 << 30))
    return _resize(torch.rand(1, cells, cells, generator=g), size, size)[0]


def synthetic(kind: str, size: int, seed: int) -> Any:
    """Low-structure scenes: a sky (blue gradient, soft clouds), sensor noise on grey, a fine texture."""
    import math

    import torch

    rng = _rng("syn", kind, seed)
    g = torch.Generator().manual_seed(rng.randrange(1 << 30))
    if kind.startswith("sky"):
        t = torch.linspace(0, 1, size).view(1, size, 1).expand(1, size, size)
        top, bottom = torch.tensor([0.25, 0.45, 0.80]), torch.tensor([0.65, 0.78, 0.92])
        sky = top.view(3, 1, 1) * (1 - t) + bottom.view(3, 1, 1) * t
        clouds = (_lowpass_noise(size, rng, 5) - 0.5).clamp(min=0) * rng.uniform(0.3, 0.6)
        return (sky + clouds + 0.01 * torch.randn(3, size, size, generator=g)).clamp(0, 1)
    if kind.startswith("noise"):
        base = torch.tensor([rng.uniform(0.3, 0.7)] * 3).view(3, 1, 1)
        return (base + rng.uniform(0.04, 0.08) * torch.randn(3, size, size, generator=g)).clamp(0, 1)
    if kind == "texture":  # a woven texture: two sinusoids and a little noise, one colour
        y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        f1, f2 = rng.uniform(4, 9) / size * 2 * math.pi, rng.uniform(4, 9) / size * 2 * math.pi
        v = 0.5 + 0.12 * torch.sin(f1 * x + 0.3 * y) * torch.sin(f2 * y)
        colour = torch.tensor([0.75, 0.62, 0.45]).view(3, 1, 1)
        return (colour * v[None] * 1.4 + 0.02 * torch.randn(3, size, size, generator=g)).clamp(0, 1)
    raise ValueError(kind)


def scene(source: str, size: int, seed: int) -> Any:
    """A seeded square crop (60-100% of the short side) of the source, at ``size`` px -> (3, size, size)."""
    kind, name = source.split(":", 1)
    if kind == "syn":
        return synthetic(name, size, seed)
    a = _sk(name)
    h, w = a.shape[:2]
    rng = _rng("scene", source, seed)
    s = round(min(h, w) * rng.uniform(0.6, 1.0))
    y, x = rng.randrange(h - s + 1), rng.randrange(w - s + 1)
    return _resize(_tensor(a[y : y + s, x : x + s]), size, size)


def other_image(source: str, scenes_of_other_split: tuple[str, ...]) -> Any:
    """A non-protected image to paste: a skimage image, an LFW face that is not the protected one, or
    (``crop:k``) a crop of a scene of the other split, so it is never the background's own content."""
    import numpy as np
    import skimage.data

    kind, name = source.split(":", 1)
    if kind == "lfw":
        a = skimage.data.lfw_subset()[int(name)]
        return _tensor(np.stack([a] * 3, -1))
    if kind == "crop":  # a crop of another scene, standing in for an unrelated picture
        return scene(scenes_of_other_split[int(name) % len(scenes_of_other_split)], 64, 99)
    a = _sk(name)
    s = min(a.shape[:2])
    return _tensor(a[:s, :s])


def load_work(name: str) -> Any:
    from pytest_memorization.images import load_image

    return load_image(WORK_FILES[name])


def jpeg(x: Any, quality: int) -> Any:
    import numpy as np
    import torch
    from PIL import Image

    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return torch.from_numpy(out.copy()).permute(2, 0, 1).float() / 255


def tint(x: Any, rng: random.Random) -> Any:
    """A colour cast: each channel scaled by a few percent, then a hue rotation of a few degrees (YIQ)."""
    import math

    import torch

    gains = torch.tensor([1 + rng.uniform(-0.08, 0.08) for _ in range(3)]).view(3, 1, 1)
    x = (x * gains).clamp(0, 1)
    a = math.radians(rng.choice([-1, 1]) * rng.uniform(3, 10))
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    rot = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    m = torch.linalg.inv(to_yiq) @ rot @ to_yiq
    return torch.einsum("ij,jhw->ihw", m, x).clamp(0, 1)


def sepia(x: Any) -> Any:
    """The classic sepia matrix: a strong, uniform colour cast (what the demo's style LoRA learnt)."""
    import torch

    m = torch.tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
    return torch.einsum("ij,jhw->ihw", m, x).clamp(0, 1)


def paste(background: Any, image: Any, scale: float, rng: random.Random, *, flip: bool = False,
          ) -> tuple[Any, tuple[float, float, float, float]]:
    """``image`` resized so its longer side is ``scale`` of the background's, pasted at a random place."""
    size = background.shape[-1]
    h0, w0 = image.shape[-2:]
    k = scale * size / max(h0, w0)
    h, w = max(4, round(h0 * k)), max(4, round(w0 * k))
    y, x = rng.randrange(size - h + 1), rng.randrange(size - w + 1)
    out = background.clone()
    patch = _resize(image, h, w)
    out[:, y : y + h, x : x + w] = patch.flip(-1) if flip else patch
    return out, (x / size, y / size, (x + w) / size, (y + h) / size)


def edit(x: Any, name: str, rng: random.Random) -> Any:
    if name == "jpeg":
        return jpeg(x, rng.randint(55, 75))
    if name == "tint":
        return tint(x, rng)
    if name == "sepia":
        return sepia(x)
    return x


@dataclass
class Case:
    name: str
    split: str
    scene: str
    image: Any
    copy_of: str | None = None  # the protected work pasted in, None for a non-copy
    scale: float | None = None
    edit: str = "plain"
    box: tuple[float, float, float, float] | None = None
    low_structure: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


LOW_STRUCTURE = ("sk:moon", "sk:cell", "sk:text", "sk:page", "sk:grass", "sk:gravel", "sk:microaneurysms",
                 "sk:shepp_logan_phantom", "syn:sky", "syn:sky2", "syn:noise", "syn:noise2", "syn:texture")


def cases(split: str, size: int = 128, *, copies_per_scene: int = 9, others_per_scene: int = 3,
          scales: tuple[float, float] = (0.2, 0.6), works: tuple[str, ...] | None = None) -> list[Case]:
    """The split's copies and non-copies. Per scene: ``copies_per_scene`` pastes of a protected work (scale
    uniform in ``scales``, edits cycling plain, JPEG q55-75, tint + hue shift, sepia, mirrored); the scene
    alone (plain and sepia); ``others_per_scene`` pastes of a non-protected image, edited the same way."""
    names = CALIBRATION if split == "calibration" else PROOF
    other_split = PROOF if split == "calibration" else CALIBRATION
    works = works or tuple(WORK_FILES)
    work_images = {w: load_work(w) for w in works}
    out: list[Case] = []
    for si, src in enumerate(names):
        bg = scene(src, size, si)
        low = src in LOW_STRUCTURE
        for k in range(copies_per_scene):
            rng = _rng("copy", src, k, size)
            w = works[(si * copies_per_scene + k) % len(works)]
            e = EDITS[(si + k) % len(EDITS)]
            s = rng.uniform(*scales)
            img, box = paste(bg, work_images[w], s, rng, flip=e == "flip")
            out.append(Case(f"{src}/copy{k}:{w}@{s:.2f},{e}", split, src, edit(img, e, rng), w, s, e, box, low))
        for e in ("plain", "sepia"):
            out.append(Case(f"{src}/alone,{e}", split, src, edit(bg, e, _rng("alone", src)), edit=e,
                            low_structure=low))
        for k in range(others_per_scene):
            rng = _rng("other", src, k, size)
            o = OTHERS[(si * others_per_scene + k) % len(OTHERS)]
            e = EDITS[(si + k + 1) % len(EDITS)]
            s = rng.uniform(*scales)
            img, box = paste(bg, other_image(o, other_split), s, rng, flip=e == "flip")
            out.append(Case(f"{src}/other{k}:{o}@{s:.2f},{e}", split, src, edit(img, e, rng), None, s, e, box, low,
                            meta={"pasted": o}))
    return out

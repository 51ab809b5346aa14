"""PNG files of a report: generated images and (per ``--memorization-report-works``) protected works.

Layout inside the report dir::

    images/<node-id slug>-<hash>-s<seed>[-<tag>].png   generated images
    works/<work-id slug>-<hash>-embed.png                a protected work, full size (mode embed)
    works/<work-id slug>-<hash>-thumb.png                a protected work, at most THUMBNAIL_PX (mode thumbnail)

In mode ``omit`` no file of a protected work is written, and :func:`prune_work_images` removes
any that a previous run left in the same folder. Reports never embed image bytes (no base64):
every image is a separate file referenced by relative path, so what ``works/`` holds is exactly
what of the protected works a published CI artifact exposes.

torch and PIL are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .schema import ReportError

THUMBNAIL_PX = 48  # long side of a thumbnail; too small to stand in for the work, enough to recognise it
IMAGES_DIR = "images"
WORKS_DIR = "works"
_WORK_FILE_RE = re.compile(r".+-[0-9a-f]{10}-(embed|thumb)\.png$")


def _slug(text: str, limit: int = 60) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return s[:limit].rstrip("._-") or "x"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:10]


def _to_hwc_uint8(image: Any, what: str) -> Any:
    """(3,H,W) or (1,3,H,W) float tensor/array in [0,1] (or uint8) -> numpy (H,W,3) uint8."""
    import numpy as np

    if hasattr(image, "detach"):  # a torch tensor, maybe half/bfloat16 or on a GPU
        t = image.detach().cpu()
        a = (t.float() if t.is_floating_point() else t).numpy()
    else:
        a = np.asarray(image)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3 or a.shape[0] not in (1, 3) or a.shape[1] < 1 or a.shape[2] < 1:
        raise ReportError(f"{what}: expected an image tensor (3, H, W), got shape {tuple(a.shape)}")
    if a.shape[0] == 1:
        a = np.repeat(a, 3, axis=0)
    if a.dtype == np.uint8:
        out = a
    else:
        f = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        out = (np.clip(f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(out.transpose(1, 2, 0))


def _atomic_save(pil_image: Any, path: Path) -> None:
    from .._io import atomic_path

    with atomic_path(path) as tmp:
        pil_image.save(tmp, format="PNG")


def save_image(image: Any, path: str | os.PathLike[str], *, atomic: bool = True) -> Path:
    """Write a (3, H, W) tensor in [0, 1] as an 8-bit RGB PNG, atomically. NaN is written black.
    ``atomic=False`` writes in place: for a folder that is itself replaced whole when it is complete
    (a run's staging folder), where the temporary file and rename cost ~0.5 ms of CPU per image."""
    from PIL import Image

    p = Path(path)
    pil = Image.fromarray(_to_hwc_uint8(image, str(p)), mode="RGB")
    if atomic:
        _atomic_save(pil, p)
    else:
        pil.save(p, format="PNG")
    return p


def generated_png_path(report_dir: str | os.PathLike[str], nodeid: str, seed: int, tag: str = "") -> str:
    """Relative path (POSIX) for a generated image; the same inputs always give the same name.

    The name is a readable slug of the node id plus a hash of (node id, seed, tag), so different
    node ids that slug alike never collide. Creates ``<report_dir>/images``.
    """
    (Path(report_dir) / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    name = _slug(nodeid.split("::", 1)[-1] if "::" in nodeid else nodeid)
    suffix = f"-{_slug(tag, 24)}" if tag else ""
    return f"{IMAGES_DIR}/{name}-{_digest(nodeid, str(int(seed)), tag)}-s{int(seed)}{suffix}.png"


def work_png_path(work_id: str, mode: str) -> str:
    kind = {"embed": "embed", "thumbnail": "thumb"}[mode]
    return f"{WORKS_DIR}/{_slug(work_id, 40)}-{_digest('work', work_id)}-{kind}.png"


def _thumbnail(image: Any, px: int) -> Any:
    from PIL import Image

    im = Image.fromarray(_to_hwc_uint8(image, "thumbnail"), mode="RGB")
    w, h = im.size
    scale = px / max(w, h)
    if scale < 1:
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    return im


def write_work_images(
    report_dir: str | os.PathLike[str], works: dict[str, Any], mode: str
) -> dict[str, str | None]:
    """Write the protected works as the report may show them; returns work id -> relative path.

    ``embed``: the full image. ``thumbnail``: at most THUMBNAIL_PX (48) px on the long side.
    ``omit``: nothing is written and every id maps to None (the report shows the id only).
    The option itself is validated where it is read (``config.options``); any other mode writes nothing.
    """
    if mode not in ("embed", "thumbnail"):
        return {work_id: None for work_id in works}
    from PIL import Image

    out: dict[str, str | None] = {}
    for work_id, image in works.items():
        rel = work_png_path(work_id, mode)
        if mode == "embed":
            pil = Image.fromarray(_to_hwc_uint8(image, f"work {work_id!r}"), mode="RGB")
        else:
            pil = _thumbnail(image, THUMBNAIL_PX)
        _atomic_save(pil, Path(report_dir) / rel)
        out[work_id] = rel
    return out


def prune_work_images(report_dir: str | os.PathLike[str], keep: Iterable[str]) -> list[str]:
    """Delete work PNGs this package wrote earlier that the current report does not reference.

    Only files named like ours under ``works/`` are touched. Returns the removed relative paths.
    """
    wdir = Path(report_dir) / WORKS_DIR
    if not wdir.is_dir():
        return []
    keep_set = set(keep)
    removed = []
    for f in sorted(wdir.iterdir()):
        rel = f"{WORKS_DIR}/{f.name}"
        if f.is_file() and _WORK_FILE_RE.fullmatch(f.name) and rel not in keep_set:
            f.unlink()
            removed.append(rel)
    return removed

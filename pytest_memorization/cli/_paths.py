"""Image paths given on the command line, and the command line's one error type."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class CLIError(Exception):
    pass


def image_paths(sources: Sequence[str]) -> tuple[list[Path], list[str]]:
    paths: list[Path] = []
    ids: list[str] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CLIError(f"{p}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            paths += found
            ids += [f.relative_to(p).as_posix() for f in found]
        elif p.is_file():
            paths.append(p)
            ids.append(p.name)
        else:
            raise CLIError(f"{p}: no such image file or folder")
    dup = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if dup:
        raise CLIError(f"two images would get the same id {dup[0]!r}; pass their common parent folder instead")
    return paths, ids

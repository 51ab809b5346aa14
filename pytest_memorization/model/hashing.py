"""sha256 of model files and folders: what identifies a model in reports, baselines and cache keys."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from .._io import atomic_write_text, sha256_file

__all__ = ["content_hash"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _memo_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-memorization" / "sha256-memo.json"


def _sha256(path: Path) -> str:
    """sha256 of a file. A Hugging Face cache blob is named by its sha256 (LFS files): no read needed.
    Otherwise memoised on disk by (real path, size, mtime_ns, inode), like make and git trust stat."""
    real = path.resolve()
    if real.parent.name == "blobs" and _HEX64.match(real.name):
        return real.name
    st = real.stat()
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    memo_path = _memo_file()
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if isinstance(memo, dict) and isinstance(memo.get(key), str):
        return memo[key]
    digest = sha256_file(real)
    if st.st_size >= 1 << 24:  # only big files are worth remembering
        try:
            memo = memo if isinstance(memo, dict) else {}
            memo[key] = digest
            atomic_write_text(memo_path, json.dumps(memo))
        except OSError:
            pass  # a read-only home is fine: the hash is just recomputed next time
    return digest


def content_hash(path: Path) -> str:
    """sha256 over every file's relative path and bytes (a folder) or over the file's bytes.
    Symlinked folders and files are followed (two UNets behind symlinks hash differently); a
    folder reached twice through links (a cycle) is read once."""
    if path.is_file():
        return _sha256(path)
    files: list[Path] = []
    seen: set[str] = set()
    for folder, dirs, names in os.walk(path, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [Path(folder) / n for n in names if not n.startswith(".") and (Path(folder) / n).is_file()]
    h = hashlib.sha256()
    for p in sorted(files):
        h.update(str(p.relative_to(path)).encode())
        h.update(_sha256(p).encode())
    return h.hexdigest()

"""Files: atomic writes (a temporary file in the same folder, fsync, then ``os.replace``) and
memoised sha256 of files.

Readers (and an interrupted run) never see half a report, baseline, calibration or cache entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hub_repo_dir(repo_id: str) -> Path:
    """Where the Hugging Face cache keeps model repo ``org/name``."""
    return hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def hub_snapshot_dir(repo_id: str, revision: str | None = None) -> Path | None:
    """The cached snapshot folder of ``repo_id`` at ``revision`` (a branch or tag recorded in the cache's
    ``refs/``, or a commit hash; default ``main``, else the newest snapshot), or None when not cached."""
    repo = hub_repo_dir(repo_id)
    snapshots = repo / "snapshots"
    ref = repo / "refs" / (revision or "main")
    try:
        if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
            return snapshots / ref.read_text().strip()
        if revision is not None:
            hits = [p for p in snapshots.iterdir() if p.name.startswith(revision)] if len(revision) >= 7 \
                and snapshots.is_dir() else []
            return hits[0] if len(hits) == 1 else None
        candidates = sorted(snapshots.iterdir()) if snapshots.is_dir() else []
    except OSError:
        return None
    return candidates[-1] if candidates else None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; reports are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))


def replace_dir(staging: Path, final: Path) -> None:
    """Put the folder ``staging`` in the place of ``final``: the old folder is moved aside first and
    removed after, so ``final`` never holds a mix of an old and a new run."""
    import shutil

    old = None
    if final.is_symlink() or final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() and not old.is_symlink() else old.unlink()


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file (links followed), memoised per (real path, size, mtime) within a process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


# -- sealed caches -----------------------------------------------------------------------------
# A cache entry carries an HMAC of its inputs and content, keyed by a secret that lives outside the
# project (so a cache committed in a pull request, or edited on disk, cannot forge one): a
# mismatch means "recompute", never "trust". The key: $MEMORIZATION_CACHE_KEY (a CI secret, the same on
# every runner, so a restored cache is trusted on a fresh one), else the file $MEMORIZATION_CACHE_KEY_FILE,
# else one key per project under the user's cache folder (never one key shared by every project).
CACHE_KEY_ENV = "MEMORIZATION_CACHE_KEY"
CACHE_KEY_FILE_ENV = "MEMORIZATION_CACHE_KEY_FILE"
_SECRET: list[bytes] = []
_PROJECT: list[str] = []


def use_cache_project(root: str | os.PathLike[str]) -> None:
    """Seal this process's caches with the key of the project at ``root`` (called once at start-up)."""
    name = str(Path(root).resolve())
    if _PROJECT != [name]:
        _PROJECT[:] = [name]
        _SECRET.clear()


def cache_key_source() -> str:
    """Where the key comes from: 'secret' ($MEMORIZATION_CACHE_KEY), 'file' or 'project'."""
    if os.environ.get(CACHE_KEY_ENV):
        return "secret"
    return "file" if os.environ.get(CACHE_KEY_FILE_ENV) else "project"


def cache_secret() -> bytes:
    """This run's cache key (see above). A secret shorter than 32 characters is refused (ValueError); an
    unwritable key file gives a key for this process only (caches then just miss)."""
    if _SECRET:
        return _SECRET[0]
    secret = os.environ.get(CACHE_KEY_ENV, "")
    if secret:
        if len(secret.strip()) < 32:
            raise ValueError(f"${CACHE_KEY_ENV} is shorter than 32 characters; use a random secret, e.g. "
                             "`openssl rand -hex 32`")
        key = hashlib.sha256(b"pytest-memorization cache key|" + secret.strip().encode()).hexdigest().encode()
        _SECRET.append(key)
        return key
    env = os.environ.get(CACHE_KEY_FILE_ENV)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pytest-memorization" / "keys"
    project = hashlib.sha256((_PROJECT[0] if _PROJECT else str(Path.cwd().resolve())).encode()).hexdigest()[:32]
    path = Path(env) if env else base / f"{project}.key"
    try:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(os.urandom(32).hex().encode())
        key = path.read_bytes().strip()
        if len(key) < 32:
            raise OSError(f"{path} is too short")
    except OSError:
        key = os.urandom(32)
    _SECRET.append(key)
    return key


def seal(inputs: str, chunks: Iterator[bytes] | list[bytes]) -> str:
    """HMAC-SHA256 of a cache entry's inputs (what it was computed from) and content."""
    import hmac

    h = hmac.new(cache_secret(), inputs.encode(), hashlib.sha256)
    for c in chunks:
        h.update(len(c).to_bytes(8, "big"))
        h.update(c)
    return h.hexdigest()


def mark_cache_dir(path: str | os.PathLike[str]) -> None:
    """Create a cache folder with a ``.gitignore`` of ``*`` in it, so it is never committed."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    ignore = path / ".gitignore"
    if not ignore.exists():
        with contextlib.suppress(OSError):
            atomic_write_text(ignore, "# written by pytest-memorization: a local cache, never commit it\n*\n")

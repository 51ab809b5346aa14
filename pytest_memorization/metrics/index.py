"""An on-disk embedding index of a catalogue of protected works (10k to 1M images).

Layout of an index folder::

    index.json               format, schema, metric name + version, dim, count, dtype, chunk list,
                             ids and each entry's source-file sha256 (None for synthetic entries)
    chunk-00000.npy ...      L2-normalised embeddings, (rows, dim), float16 (default) or float32

Chunks are plain ``.npy`` files, opened memory-mapped, so a 1M x 512 float16 index (1 GB) costs page
cache, not heap. Search is exhaustive: top-k cosine by chunked torch matmul over 8192-row blocks, merged per block,
so peak extra memory is one block. faiss is not used: flat
search at this scale takes milliseconds per image on a CPU, and exactness keeps results reproducible
(see ``EmbeddingIndex.search`` for the float16 fast path for a few queries).

Only metrics whose ``features()`` are one vector per image (``clip``, ``sscd``) can be indexed.
An index records its metric's ``version``; loading it with a metric of another version is a
``MemorizationConfigError`` (scores would not be comparable).

Imported only by the CLI (``python -m pytest_memorization index ...``) and user code, never at
plugin start-up; torch and numpy are imported inside the functions anyway.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_path, atomic_write_text, sha256_file
from ..errors import MemorizationConfigError

__all__ = ["EmbeddingIndex", "IndexWriter", "add_embeddings", "build_index", "INDEX_JSON"]

INDEX_JSON = "index.json"
FORMAT = "pytest-memorization-index"
SCHEMA = 1
CHUNK_ROWS = 65536
BLOCK_ROWS = 8192
FEW_QUERIES = 8
RESCORE_MARGIN = 32
DTYPES = ("float16", "float32")
REBUILD = "pytest-memorization index build --metric {metric} --out {dir} IMAGES..."


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, separators=(",", ":")))


def _normalise(x: Any) -> Any:
    import torch

    x = torch.as_tensor(x).float()
    if x.dim() != 2:
        raise MemorizationConfigError(f"embeddings must be a 2-D (N, dim) array, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise MemorizationConfigError("embeddings contain NaN or Inf; the metric failed on some image")
    return torch.nn.functional.normalize(x, dim=1)


class IndexWriter:
    """Append embeddings to a new or existing index folder; ``close()`` writes ``index.json``.

    Appending to an existing index requires the same metric name, version, dim and dtype.
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, metric: str, version: str, dtype: str = "float16",
                 chunk_rows: int = CHUNK_ROWS) -> None:
        if dtype not in DTYPES:
            raise MemorizationConfigError(f"index dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        self.dir = Path(out_dir)
        self.chunk_rows = int(chunk_rows)
        self.meta: dict[str, Any] = {"format": FORMAT, "schema": SCHEMA, "metric": metric, "version": version,
                                     "dim": None, "count": 0, "dtype": dtype, "chunks": [], "ids": [],
                                     "sha256": [], "metric_options": {}}
        if (self.dir / INDEX_JSON).is_file():
            old = _read_meta(self.dir)
            for key, want in (("metric", metric), ("version", version), ("dtype", dtype)):
                if old[key] != want:
                    raise MemorizationConfigError(
                        f"{self.dir}: cannot append: the index has {key} {old[key]!r}, the new embeddings "
                        f"{want!r}; write them to a new folder or rebuild it")
            self.meta = old
        elif self.dir.exists() and any(self.dir.iterdir()):
            raise MemorizationConfigError(f"{self.dir}: folder exists and is not an index; pass an empty or new "
                                          "folder to --out")
        self._seen = set(self.meta["ids"])
        self._pending: list[Any] = []
        self._pending_rows = 0

    def add(self, embeddings: Any, ids: Sequence[str], sha256s: Sequence[str | None] | None = None) -> None:
        x = _normalise(embeddings)
        if len(ids) != x.shape[0]:
            raise MemorizationConfigError(f"{len(ids)} ids for {x.shape[0]} embeddings; pass one id per row")
        if sha256s is not None and len(sha256s) != len(ids):
            raise MemorizationConfigError(f"{len(sha256s)} sha256s for {len(ids)} ids")
        dim = self.meta["dim"]
        if dim is not None and x.shape[1] != dim:
            raise MemorizationConfigError(f"embeddings have dim {x.shape[1]}, the index {dim}")
        self.meta["dim"] = int(x.shape[1])
        for i in ids:
            if not isinstance(i, str) or not i:
                raise MemorizationConfigError(f"index id {i!r}: ids are non-empty strings")
            if i in self._seen:
                raise MemorizationConfigError(f"index id {i!r} appears twice; ids must be unique")
            self._seen.add(i)
        self.meta["ids"].extend(ids)
        self.meta["sha256"].extend(sha256s if sha256s is not None else [None] * len(ids))
        self._pending.append(x)
        self._pending_rows += x.shape[0]
        while self._pending_rows >= self.chunk_rows:
            self._flush(self.chunk_rows)

    def _flush(self, rows: int) -> None:
        import numpy as np
        import torch

        if not self._pending_rows:
            return
        allx = torch.cat(self._pending)
        out, rest = allx[:rows], allx[rows:]
        self._pending, self._pending_rows = ([rest] if len(rest) else []), len(rest)
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"chunk-{len(self.meta['chunks']):05d}.npy"
        with atomic_path(self.dir / name) as tmp, open(tmp, "wb") as f:
            np.save(f, out.numpy().astype(self.meta["dtype"]))
        self.meta["chunks"].append({"file": name, "rows": int(out.shape[0]), "sha256": sha256_file(self.dir / name)})
        self.meta["count"] += int(out.shape[0])

    def close(self) -> Path:
        self._flush(self._pending_rows)
        if self.meta["count"] == 0:
            raise MemorizationConfigError(f"{self.dir}: no embeddings were added; the index would be empty")
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_json(self.dir / INDEX_JSON, self.meta)
        return self.dir


def add_embeddings(out_dir: str | os.PathLike[str], embeddings: Any, ids: Sequence[str], *, metric: str,
                   version: str, sha256s: Sequence[str | None] | None = None, dtype: str = "float16",
                   chunk_rows: int = CHUNK_ROWS) -> Path:
    """Write (or append to) an index from precomputed embeddings (N, dim): synthetic benches, other tools."""
    w = IndexWriter(out_dir, metric=metric, version=version, dtype=dtype, chunk_rows=chunk_rows)
    w.add(embeddings, ids, sha256s)
    return w.close()


def _as_metric(metric: Any) -> Any:
    if isinstance(metric, str):
        from . import get_metric

        return get_metric(metric)
    return metric


def build_index(metric: Any, images: Iterable[Any], ids: Sequence[str] | None, out_dir: str | os.PathLike[str], *,
                batch_size: int = 64, size: int | None = None, dtype: str = "float16",
                chunk_rows: int = CHUNK_ROWS, metric_options: dict[str, Any] | None = None) -> Path:
    """Embed ``images`` (paths or (3, H, W) tensors in [0, 1]) with ``metric`` (a Metric or a name) into
    ``out_dir``. ``ids`` default to the file stems (paths) or positions. Images of equal size are batched;
    ``size`` first fits every image to ``size`` x ``size`` (cover + centre crop) so all batch together.
    Returns ``out_dir``."""
    import torch

    from ..images import fit_to, load_image

    m = _as_metric(metric)
    w = IndexWriter(out_dir, metric=m.name, version=m.version, dtype=dtype, chunk_rows=chunk_rows)
    if w.meta["count"] == 0:
        w.meta["metric_options"] = dict(metric_options or {})
        w.meta["fit_size"] = size
    elif w.meta.get("fit_size") != size:
        raise MemorizationConfigError(f"{out_dir}: the index was built with size {w.meta.get('fit_size')}, "
                                      f"not {size}; use the same --size to append")
    id_list = list(ids) if ids is not None else None
    buckets: dict[tuple[int, int], list[tuple[Any, str, str | None]]] = {}

    def flush(key: tuple[int, int]) -> None:
        rows = buckets.pop(key, [])
        if not rows:
            return
        with torch.no_grad():
            feats = m.features(torch.stack([r[0] for r in rows]))
        if not hasattr(feats, "dim") or feats.dim() != 2 or feats.shape[0] != len(rows):
            raise MemorizationConfigError(
                f"metric '{m.name}' gives features of shape {tuple(getattr(feats, 'shape', ()))}, not one vector "
                "per image; only vector metrics (clip, sscd) can be indexed")
        w.add(feats.float().cpu(), [r[1] for r in rows], [r[2] for r in rows])

    n = 0
    for n, src in enumerate(images, 1):
        if isinstance(src, (str, os.PathLike)):
            p = Path(src)
            img, sha, default_id = load_image(p), sha256_file(p), p.stem
        else:
            img, sha, default_id = torch.as_tensor(src), None, str(n - 1)
            if img.dim() != 3 or img.shape[0] != 3:
                raise MemorizationConfigError(f"image #{n - 1}: expected a (3, H, W) tensor, got {tuple(img.shape)}")
        if id_list is not None:
            if n > len(id_list):
                raise MemorizationConfigError(f"more images than ids ({len(id_list)}); pass one id per image")
            default_id = id_list[n - 1]
        if size is not None:
            img = fit_to(img, size, size)
        key = (int(img.shape[-2]), int(img.shape[-1]))
        buckets.setdefault(key, []).append((img.float(), default_id, sha))
        if len(buckets[key]) >= batch_size:
            flush(key)
    if id_list is not None and n != len(id_list):
        raise MemorizationConfigError(f"{len(id_list)} ids for {n} images; pass one id per image")
    for key in list(buckets):
        flush(key)
    return w.close()


def _read_meta(directory: Path) -> dict[str, Any]:
    p = directory / INDEX_JSON
    fix = "rebuild it with " + REBUILD.format(metric="<metric>", dir=directory)
    if not directory.is_dir():
        raise MemorizationConfigError(f"{directory}: no such index folder; build one with "
                                      + REBUILD.format(metric="<metric>", dir=directory))
    try:
        meta = json.loads(p.read_text())
    except FileNotFoundError:
        raise MemorizationConfigError(f"{p}: missing, so {directory} is not an embedding index; {fix}") from None
    except (OSError, ValueError) as e:
        raise MemorizationConfigError(f"{p}: unreadable or not JSON ({e}); {fix}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MemorizationConfigError(f"{p}: not a pytest-memorization index (no format {FORMAT!r}); {fix}")
    if meta.get("schema") != SCHEMA:
        raise MemorizationConfigError(f"{p}: index schema {meta.get('schema')!r}, this version reads {SCHEMA}; {fix}")
    for key, typ in (("metric", str), ("version", str), ("dim", int), ("count", int), ("dtype", str),
                     ("chunks", list), ("ids", list), ("sha256", list)):
        if not isinstance(meta.get(key), typ):
            raise MemorizationConfigError(f"{p}: key '{key}' is missing or not a {typ.__name__}; {fix}")
    rows = sum(int(c.get("rows", -1)) for c in meta["chunks"] if isinstance(c, dict))
    if not (meta["count"] == len(meta["ids"]) == len(meta["sha256"]) == rows) or meta["dtype"] not in DTYPES:
        raise MemorizationConfigError(
            f"{p}: inconsistent index (count {meta['count']}, {len(meta['ids'])} ids, {rows} rows in chunks, "
            f"dtype {meta['dtype']!r}); {fix}")
    return meta


class EmbeddingIndex:
    """A loaded index. ``search(features, k)`` gives top-k cosine scores and ids per query."""

    def __init__(self, directory: Path, meta: dict[str, Any], chunks: list[Any]) -> None:
        self.dir = directory
        self.meta = meta
        self._chunks = chunks  # memory-mapped numpy arrays, (rows, dim)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], metric: Any = None, *, verify: bool = False) -> EmbeddingIndex:
        """Open ``directory``. With ``metric`` (a Metric), its name and version must match the index's.
        ``verify=True`` also checks every chunk's sha256 (reads the whole index)."""
        import numpy as np

        d = Path(directory)
        meta = _read_meta(d)
        if metric is not None:
            check_metric(d, meta, metric)
        fix = "rebuild it with " + REBUILD.format(metric=meta["metric"], dir=d)
        chunks = []
        for c in meta["chunks"]:
            path = d / str(c.get("file"))
            if verify and sha256_file(path) != c.get("sha256"):
                raise MemorizationConfigError(f"{path}: sha256 differs from {INDEX_JSON}: the chunk is corrupt; {fix}")
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except FileNotFoundError:
                raise MemorizationConfigError(f"{path}: index chunk is missing; {fix}") from None
            except (OSError, ValueError) as e:
                raise MemorizationConfigError(f"{path}: index chunk is corrupt ({e}); {fix}") from None
            if arr.shape != (c["rows"], meta["dim"]) or str(arr.dtype) != meta["dtype"]:
                raise MemorizationConfigError(
                    f"{path}: chunk holds {arr.dtype} {arr.shape}, {INDEX_JSON} says {meta['dtype']} "
                    f"({c['rows']}, {meta['dim']}); {fix}")
            chunks.append(arr)
        return cls(d, meta, chunks)

    @property
    def ids(self) -> list[str]:
        return list(self.meta["ids"])

    @property
    def sha256s(self) -> list[str | None]:
        return list(self.meta["sha256"])

    @property
    def version(self) -> str:
        return str(self.meta["version"])

    @property
    def metric_name(self) -> str:
        return str(self.meta["metric"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def __len__(self) -> int:
        return int(self.meta["count"])

    def search(self, features: Any, k: int = 10, *, block_rows: int = BLOCK_ROWS) -> tuple[Any, list[list[str]]]:
        """Top-``k`` cosine similarity of each query row against the whole index.

        Returns ``(scores, ids)``: a float32 tensor (N, k') with k' = min(k, len(index)), best first,
        and the matching ids (N lists of k'). Scores are float32 dot products of the stored vectors.
        A float16 index searched with few queries (<= ``FEW_QUERIES``) picks k + ``RESCORE_MARGIN``
        candidates by a float16 matmul (no conversion of the index, ~10x faster per image) and
        re-scores them in float32, so the result equals the float32 search unless more than
        ``RESCORE_MARGIN`` entries tie with the k-th within float16 rounding (~5e-4)."""
        import torch

        q = _normalise(features)
        if q.shape[1] != self.dim:
            raise MemorizationConfigError(f"query features have dim {q.shape[1]}, the index {self.dir} has "
                                          f"{self.dim} (metric {self.metric_name}); embed with the same metric")
        if k < 1:
            raise MemorizationConfigError(f"k = {k}: ask for at least one neighbour")
        k = min(int(k), len(self))
        half = self.meta["dtype"] == "float16" and q.shape[0] <= FEW_QUERIES
        want = min(k + RESCORE_MARGIN, len(self)) if half else k
        qq = q.half() if half else q
        best = torch.full((q.shape[0], 0), float("-inf"))
        best_i = torch.zeros((q.shape[0], 0), dtype=torch.long)
        offset = 0
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only memory map: we never write to it
            for arr in self._chunks:
                for start in range(0, arr.shape[0], block_rows):
                    raw = torch.from_numpy(arr[start:start + block_rows])
                    s = (qq @ raw.T).float() if half else q @ raw.float().T
                    top, idx = s.topk(min(want, s.shape[1]), dim=1)
                    best = torch.cat([best, top], 1)
                    best_i = torch.cat([best_i, idx + offset + start], 1)
                    if best.shape[1] > want:
                        best, sel = best.topk(want, dim=1)
                        best_i = best_i.gather(1, sel)
                offset += arr.shape[0]
            if half:  # exact float32 scores of the candidates
                best = torch.einsum("nd,nkd->nk", q, self.vectors(best_i.flatten()).view(*best_i.shape, -1))
        best, order = best.topk(k, dim=1)
        best_i = best_i.gather(1, order)
        names = self.meta["ids"]
        return best, [[names[j] for j in row] for row in best_i.tolist()]

    def vectors(self, rows: Any) -> Any:
        """The stored unit vectors at global row numbers ``rows`` (a 1-D sequence), as float32 (len, dim)."""
        import numpy as np
        import torch

        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row out of range 0..{len(self) - 1}")
        ends = np.cumsum([a.shape[0] for a in self._chunks])
        which = np.searchsorted(ends, rows, side="right")
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for c in np.unique(which):
            sel = which == c
            out[sel] = self._chunks[c][rows[sel] - (ends[c] - self._chunks[c].shape[0])]
        return torch.from_numpy(out)

    def search_images(self, metric: Any, images: Any, k: int = 10) -> tuple[Any, list[list[str]]]:
        """Embed ``images`` (N, 3, H, W) with ``metric`` (same version as the index) and search."""
        import torch

        check_metric(self.dir, self.meta, metric)
        with torch.no_grad():
            return self.search(metric.features(images), k)


def check_metric(directory: Path, meta: dict[str, Any], metric: Any) -> None:
    """Raise ``MemorizationConfigError`` unless ``metric`` has the index's name and version."""
    if metric.name != meta["metric"] or metric.version != meta["version"]:
        raise MemorizationConfigError(
            f"index {directory} was built with metric {meta['metric']} version {meta['version']!r}, but this "
            f"run's metric is {metric.name} version {metric.version!r}: the scores are not comparable. Rebuild "
            "the index with the metric you use now: " + REBUILD.format(metric=metric.name, dir=directory))

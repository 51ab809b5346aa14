"""An approximate search over a catalogue index (``metrics.index``), for catalogues past ~1M works.

faiss (``pip install 'pytest-memorization[ann]'``, the ``faiss-cpu`` wheel) proposes candidates with an
inverted-file index (IVF: k-means cells, ``nprobe`` of them scanned per query); the candidates are then
re-ranked exactly, in float32, against the stored unit vectors of the exact index. Scores are therefore
exact cosine similarities; what can be approximate is only *which* entries reach the top k (an entry
outside every scanned cell, or ranked below the candidates by the compressed codes, is missed).

Two kinds of cell contents:

- ``ivf-pq-fs`` (the default): product-quantised codes of 4 bits per 4 dimensions (``dim / 8`` bytes a
  vector, 64 at dim 512), scanned with SIMD lookup tables (faiss "fast scan"). Coarse distances, so more
  cells can be scanned per millisecond; the exact re-ranking restores the order.
- ``ivf-sq8``: 8-bit scalar-quantised vectors (``dim`` bytes a vector): finer distances, slower scan.

``bench/ann.py`` measures recall@10 against the exact search.

Layout: ``ann-ivf.faiss`` and ``ann.json`` (kind, nlist, count, the exact index's chunk hashes) inside
the exact index's folder; an ANN file of another index content is refused with the command to rebuild.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._io import atomic_path, atomic_write_text
from ..errors import MemorizationConfigError

ANN_FILE, ANN_JSON = "ann-ivf.faiss", "ann.json"
INSTALL = "pip install 'pytest-memorization[ann]' (the faiss-cpu wheel)"
TRAIN_POINTS_PER_CELL = 50
ADD_ROWS = 65536
KINDS = ("ivf-pq-fs", "ivf-sq8")
# Cells scanned per query (at least this many, and at least a quarter of the cells) and candidates
# re-ranked, per kind. Recall is set by the share of the catalogue scanned (bench/ann.py, docs/scale.md):
# at 1M clustered entries of dim 512 (1,000 cells) 256 cells give recall@10 0.994; at 10M (3,162 cells)
# 256 gave 0.90, 768 gave 0.982 and 1024 gave 0.990. A fixed count would lose recall as the catalogue grows.
DEFAULTS = {"ivf-pq-fs": (256, 100), "ivf-sq8": (256, 100)}
SCAN_SHARE = 4  # default nprobe >= nlist / SCAN_SHARE


def require_faiss() -> Any:
    """The faiss module, or a ``MemorizationConfigError`` that says how to install it."""
    try:
        import faiss  # type: ignore[import-not-found,import-untyped]
    except ImportError as e:
        raise MemorizationConfigError(f"the approximate catalogue search needs faiss, which is not installed ({e}); "
                                      f"{INSTALL}, or search exactly with EmbeddingIndex.search") from None
    return faiss


def default_nlist(count: int) -> int:
    """Cells of the inverted file: ~sqrt(N) (1000 at 1M: ~1000 entries a cell), at least 1 and <= N / 39
    (k-means needs ~39 training points per cell)."""
    return max(1, min(int(count ** 0.5), count // 39 or 1))


def _stamp(exact: Any) -> list[Any]:
    return [exact.meta["count"], exact.meta["dim"], [c.get("sha256") for c in exact.meta["chunks"]]]


def _factory(kind: str, dim: int, nlist: int) -> str:
    if kind == "ivf-sq8":
        return f"IVF{nlist},SQ8"
    if kind == "ivf-pq-fs":
        if dim % 4:
            raise MemorizationConfigError(f"kind 'ivf-pq-fs' needs a dimension divisible by 4 (this index has "
                                          f"{dim}); build with kind='ivf-sq8'")
        return f"IVF{nlist},PQ{dim // 4}x4fs"
    raise MemorizationConfigError(f"approximate index kind {kind!r}: use one of {', '.join(KINDS)}")


class ApproximateIndex:
    """IVF candidates from faiss, re-ranked exactly against ``exact`` (an ``EmbeddingIndex``)."""

    def __init__(self, exact: Any, ivf: Any, *, nprobe: int | None = None, candidates: int | None = None,
                 kind: str = "ivf-pq-fs") -> None:
        self.exact, self.ivf, self.kind = exact, ivf, kind
        d_nprobe, d_candidates = DEFAULTS.get(kind, DEFAULTS["ivf-pq-fs"])
        share = -(-int(getattr(ivf, "nlist", 0)) // SCAN_SHARE)
        self.nprobe = int(nprobe if nprobe is not None else max(d_nprobe, share))
        self.candidates = int(candidates if candidates is not None else d_candidates)

    @classmethod
    def build(cls, exact: Any, *, kind: str = "ivf-pq-fs", nlist: int | None = None, nprobe: int | None = None,
              candidates: int | None = None, save: bool = True, threads: int | None = None) -> ApproximateIndex:
        """Train the cells (k-means) and the codes on a sample of ``exact``'s vectors, add them all (in
        blocks), save beside it."""
        import numpy as np

        faiss = require_faiss()
        if threads:
            faiss.omp_set_num_threads(int(threads))
        n, dim = len(exact), exact.dim
        nlist = int(nlist or default_nlist(n))
        ivf = faiss.index_factory(dim, _factory(kind, dim, nlist), faiss.METRIC_INNER_PRODUCT)
        rows = np.random.default_rng(0).choice(n, size=min(n, TRAIN_POINTS_PER_CELL * nlist), replace=False)
        ivf.train(np.ascontiguousarray(exact.vectors(np.sort(rows)).numpy()))
        for start in range(0, n, ADD_ROWS):
            ivf.add(np.ascontiguousarray(exact.vectors(np.arange(start, min(n, start + ADD_ROWS))).numpy()))
        out = cls(exact, ivf, nprobe=nprobe, candidates=candidates, kind=kind)
        if save:
            out.save()
        return out

    def save(self) -> Path:
        faiss = require_faiss()
        d = Path(self.exact.dir)
        with atomic_path(d / ANN_FILE) as tmp:
            faiss.write_index(self.ivf, str(tmp))
        atomic_write_text(d / ANN_JSON, json.dumps({"kind": self.kind, "nlist": int(self.ivf.nlist),
                                                    "index": _stamp(self.exact)}))
        return d / ANN_FILE

    @classmethod
    def load(cls, exact: Any, *, nprobe: int | None = None, candidates: int | None = None) -> ApproximateIndex:
        """The saved approximate index beside ``exact``; refused when it was built for other content."""
        faiss = require_faiss()
        d = Path(exact.dir)
        fix = f"rebuild it: ApproximateIndex.build(EmbeddingIndex.load({str(d)!r}))"
        try:
            meta = json.loads((d / ANN_JSON).read_text())
        except FileNotFoundError:
            raise MemorizationConfigError(f"{d}: no approximate index ({ANN_JSON}); {fix}") from None
        except (OSError, ValueError) as e:
            raise MemorizationConfigError(f"{d / ANN_JSON}: unreadable ({e}); {fix}") from None
        if not isinstance(meta, dict) or meta.get("index") != _stamp(exact):
            raise MemorizationConfigError(f"{d / ANN_FILE} was built for other index content (entries were added "
                                          f"or chunks changed); {fix}")
        try:
            ivf = faiss.read_index(str(d / ANN_FILE))
        except RuntimeError as e:
            raise MemorizationConfigError(f"{d / ANN_FILE}: unreadable ({e}); {fix}") from None
        kind = meta.get("kind")
        if kind not in KINDS:
            raise MemorizationConfigError(f"{d / ANN_JSON}: unknown kind {kind!r}; {fix}")
        return cls(exact, ivf, nprobe=nprobe, candidates=candidates, kind=kind)

    def __len__(self) -> int:
        return len(self.exact)

    def candidates_of(self, q: Any, want: int) -> Any:
        """Row numbers (N, want) proposed by the IVF search (-1 where a query got fewer)."""
        import numpy as np

        self.ivf.nprobe = min(self.nprobe, int(self.ivf.nlist))
        _, rows = self.ivf.search(np.ascontiguousarray(q.numpy(), dtype=np.float32), want)
        return rows

    def search(self, features: Any, k: int = 10) -> tuple[Any, list[list[str]]]:
        """As ``EmbeddingIndex.search``: (scores (N, k') float32, ids), best first; the scores are the exact
        float32 cosine of each candidate, which are the top ``candidates`` (>= k) of the IVF search."""
        import torch

        from .index import _normalise

        q = _normalise(features)
        if q.shape[1] != self.exact.dim:
            raise MemorizationConfigError(f"query features have dim {q.shape[1]}, the index {self.exact.dir} has "
                                          f"{self.exact.dim}; embed with the index's metric")
        if k < 1:
            raise MemorizationConfigError(f"k = {k}: ask for at least one neighbour")
        k = min(int(k), len(self))
        want = min(max(self.candidates, k), len(self))
        rows = torch.from_numpy(self.candidates_of(q, want)).long()
        valid = rows >= 0
        vecs = self.exact.vectors(rows.clamp(min=0).flatten()).view(*rows.shape, -1)
        scores = torch.einsum("nd,nkd->nk", q, vecs).masked_fill(~valid, float("-inf"))
        best, order = scores.topk(k, dim=1)
        best_rows = rows.gather(1, order)
        names = self.exact.meta["ids"]
        ids = [[names[j] for j, s in zip(r, b) if s > float("-inf")] for r, b in zip(best_rows.tolist(), best.tolist())]
        return best, ids


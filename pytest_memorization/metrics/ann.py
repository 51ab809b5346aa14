"""An approximate search over a catalogue index (``metrics.index``), for catalogues past ~1M works.

faiss (``pip install 'pytest-memorization[ann]'``, the ``faiss-cpu`` wheel) proposes candidates with an
inverted-file index (IVF: k-means cells, ``nprobe`` of them scanned per query) over 8-bit scalar-quantised
vectors (a quarter of float32's memory); the candidates are then re-ranked exactly, in float32, against
the stored unit vectors of the exact index. Scores are therefore exact cosine similarities; what can be
approximate is only *which* entries reach the top k (an entry outside every scanned cell is missed).
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


class ApproximateIndex:
    """IVF candidates from faiss, re-ranked exactly against ``exact`` (an ``EmbeddingIndex``)."""

    def __init__(self, exact: Any, ivf: Any, *, nprobe: int = 32, candidates: int = 100) -> None:
        self.exact, self.ivf = exact, ivf
        self.nprobe, self.candidates = int(nprobe), int(candidates)

    @classmethod
    def build(cls, exact: Any, *, nlist: int | None = None, nprobe: int = 32, candidates: int = 100,
              save: bool = True, threads: int | None = None) -> ApproximateIndex:
        """Train k-means on a sample of ``exact``'s vectors, add them all (in blocks), save beside it."""
        import numpy as np

        faiss = require_faiss()
        if threads:
            faiss.omp_set_num_threads(int(threads))
        n, dim = len(exact), exact.dim
        nlist = int(nlist or default_nlist(n))
        quantizer = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                            faiss.METRIC_INNER_PRODUCT)
        rows = np.random.default_rng(0).choice(n, size=min(n, TRAIN_POINTS_PER_CELL * nlist), replace=False)
        ivf.train(np.ascontiguousarray(exact.vectors(np.sort(rows)).numpy()))
        for start in range(0, n, ADD_ROWS):
            ivf.add(np.ascontiguousarray(exact.vectors(np.arange(start, min(n, start + ADD_ROWS))).numpy()))
        out = cls(exact, ivf, nprobe=nprobe, candidates=candidates)
        if save:
            out.save()
        return out

    def save(self) -> Path:
        faiss = require_faiss()
        d = Path(self.exact.dir)
        with atomic_path(d / ANN_FILE) as tmp:
            faiss.write_index(self.ivf, str(tmp))
        atomic_write_text(d / ANN_JSON, json.dumps({"kind": "ivf-sq8", "nlist": int(self.ivf.nlist),
                                                    "index": _stamp(self.exact)}))
        return d / ANN_FILE

    @classmethod
    def load(cls, exact: Any, *, nprobe: int = 32, candidates: int = 100) -> ApproximateIndex:
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
        return cls(exact, ivf, nprobe=nprobe, candidates=candidates)

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


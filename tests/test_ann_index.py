"""The approximate catalogue search (faiss IVF + exact re-ranking): on a small clustered catalogue its
top 10 equal the exact search's, its scores are exact, and without faiss it says how to install it."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import pytest
import torch

from pytest_memorization.errors import MemorizationConfigError
from pytest_memorization.metrics.index import EmbeddingIndex, add_embeddings


def clustered(n: int, dim: int, centres: int, seed: int = 0, noise_seed: int | None = None) -> torch.Tensor:
    """Embeddings that cluster like real ones: a centre each plus noise. The centres come from ``seed``;
    with ``noise_seed`` new points around the same centres (queries from the catalogue's distribution)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.nn.functional.normalize(torch.randn(centres, dim, generator=g), dim=1)
    if noise_seed is not None:
        g = torch.Generator().manual_seed(noise_seed)
    x = c[torch.randint(0, centres, (n,), generator=g)] + 0.6 * torch.randn(n, dim, generator=g) / dim ** 0.5
    return torch.nn.functional.normalize(x, dim=1)


@pytest.fixture
def catalogue(tmp_path: Path) -> EmbeddingIndex:
    x = clustered(4000, 64, 40)
    add_embeddings(tmp_path / "idx", x, [f"w{i}" for i in range(len(x))], metric="synthetic", version="v1",
                   chunk_rows=1500)
    return EmbeddingIndex.load(tmp_path / "idx")


@pytest.mark.parametrize("kind", ["ivf-pq-fs", "ivf-sq8"])
def test_recall_after_reranking_is_one_and_scores_are_exact(catalogue: EmbeddingIndex, kind: str) -> None:
    pytest.importorskip("faiss")
    from pytest_memorization.metrics.ann import ApproximateIndex

    # every cell scanned; 4-bit codes rank coarsely, so more candidates are re-ranked than 8-bit ones need
    ann = ApproximateIndex.build(catalogue, kind=kind, nlist=16, nprobe=16,
                                 candidates=200 if kind == "ivf-pq-fs" else 50)
    assert ApproximateIndex.load(catalogue).kind == kind
    queries = clustered(50, 64, 40, noise_seed=1)
    exact_s, exact_ids = catalogue.search(queries, k=10)
    got_s, got_ids = ann.search(queries, k=10)
    assert got_ids == exact_ids
    assert torch.allclose(got_s, exact_s, atol=1e-5)
    # fewer cells scanned than exist: the recall can drop, never the exactness of a returned score
    few = ApproximateIndex(catalogue, ann.ivf, nprobe=1, candidates=10)
    s, ids = few.search(queries, k=10)
    recall = sum(len(set(a) & set(b)) for a, b in zip(ids, exact_ids)) / (10 * len(queries))
    assert recall < 1.0
    q = torch.nn.functional.normalize(queries, dim=1)
    for i, (row, names) in enumerate(zip(s.tolist(), ids)):
        want = catalogue.vectors([int(n[1:]) for n in names]) @ q[i]
        assert row == pytest.approx(want.tolist(), abs=1e-6)


def test_saved_beside_the_index_and_refused_after_the_index_changed(catalogue: EmbeddingIndex,
                                                                    tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    from pytest_memorization.metrics.ann import ApproximateIndex

    ApproximateIndex.build(catalogue, nlist=8)
    again = ApproximateIndex.load(catalogue, nprobe=8)
    q = clustered(5, 64, 40, noise_seed=2)
    assert again.search(q, k=3)[1] == catalogue.search(q, k=3)[1]
    add_embeddings(tmp_path / "idx", clustered(10, 64, 40, seed=3), [f"n{i}" for i in range(10)],
                   metric="synthetic", version="v1")
    with pytest.raises(MemorizationConfigError, match="built for other index content"):
        ApproximateIndex.load(EmbeddingIndex.load(tmp_path / "idx"))


def test_without_faiss_the_error_says_how_to_install_it(catalogue: EmbeddingIndex,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_memorization.metrics.ann import ApproximateIndex

    real = builtins.__import__

    def no_faiss(name: str, *a, **k):
        if name == "faiss" or name.startswith("faiss."):
            raise ImportError("No module named 'faiss'")
        return real(name, *a, **k)

    monkeypatch.delitem(sys.modules, "faiss", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(MemorizationConfigError, match=r"pip install 'pytest-memorization\[ann\]'"):
        ApproximateIndex.build(catalogue)


def test_default_cells_scanned_find_the_exact_top_10(catalogue: EmbeddingIndex) -> None:
    """With its default settings (a quarter of the cells scanned at ~sqrt(N) cells, 100 candidates
    re-ranked) the default kind finds at least 99% of the exact top 10 on a clustered catalogue."""
    pytest.importorskip("faiss")
    from pytest_memorization.metrics.ann import ApproximateIndex

    ann = ApproximateIndex.build(catalogue, nlist=64, nprobe=16)
    assert (ann.kind, ann.candidates) == ("ivf-pq-fs", 100)
    queries = clustered(100, 64, 40, noise_seed=4)
    exact_ids = catalogue.search(queries, k=10)[1]
    ids = ann.search(queries, k=10)[1]
    assert sum(len(set(a) & set(b)) for a, b in zip(ids, exact_ids)) / (10 * len(queries)) >= 0.99
    with pytest.raises(MemorizationConfigError, match="kind 'hnsw'"):
        ApproximateIndex.build(catalogue, kind="hnsw")


def test_the_default_scans_a_quarter_of_the_cells_and_at_least_256() -> None:
    """Recall follows the share of the catalogue scanned: a fixed nprobe would lose recall as the
    catalogue grows (docs/scale.md: 256 of 3,162 cells gave recall@10 0.90 at 10M)."""
    from types import SimpleNamespace

    from pytest_memorization.metrics.ann import ApproximateIndex

    assert ApproximateIndex(None, SimpleNamespace(nlist=1000)).nprobe == 256
    assert ApproximateIndex(None, SimpleNamespace(nlist=3162)).nprobe == 791
    assert ApproximateIndex(None, SimpleNamespace(nlist=3162), nprobe=64).nprobe == 64

"""The catalogue embedding index: build from real photographs with a random tiny CLIP, query, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")

from pytest_memorization.cli.main import main  # noqa: E402
from pytest_memorization.errors import MemorizationConfigError  # noqa: E402
from pytest_memorization.metrics.index import EmbeddingIndex, add_embeddings, build_index  # noqa: E402

TINY_CLIP_JSON = Path(__file__).parent / "metrics" / "tiny-clip-test.json"
# skimage.data: astronaut (NASA, public domain), coffee, chelsea (CC0), rocket (NASA), camera (BSD)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field")


def _clip(seed: int = 0):
    import open_clip

    from pytest_memorization.metrics import get_metric

    if "tiny-clip-test" not in open_clip.list_models():
        open_clip.add_model_config(TINY_CLIP_JSON)
    torch.set_num_threads(1)
    return get_metric("clip", model="tiny-clip-test", weights="random", seed=seed)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real photographs at mixed sizes (so the builder batches per size), as PNG files."""
    from PIL import Image
    from support import photo_array

    d = tmp_path_factory.mktemp("catalogue")
    out = {}
    for i, name in enumerate(PHOTOS):
        size = (96, 80) if i % 2 else (80, 80)
        out[name] = d / f"{name}.png"
        Image.fromarray(photo_array(name)).resize(size, Image.BICUBIC).save(out[name])
    return out


@pytest.fixture(scope="module")
def clip():
    return _clip(0)


@pytest.fixture(scope="module")
def built(photos: dict[str, Path], clip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("idx") / "index"
    return build_index(clip, list(photos.values()), list(photos), out, batch_size=2)


def _perturbed(path: Path):
    """A near copy: resized, brightened and noised, as a generated image would differ."""
    from pytest_memorization.images import fit_to, load_image

    g = torch.Generator().manual_seed(1)
    x = fit_to(load_image(path), 64, 64)
    return (x * 0.92 + 0.05 + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def test_index_json_records_metric_ids_and_hashes(built: Path, photos: dict[str, Path], clip) -> None:
    from pytest_memorization.images import sha256_file

    meta = json.loads((built / "index.json").read_text())
    assert meta["metric"] == "clip" and meta["version"] == clip.version
    assert meta["count"] == len(PHOTOS) and meta["dim"] == 32 and meta["dtype"] == "float16"
    assert dict(zip(meta["ids"], meta["sha256"])) == {n: sha256_file(p) for n, p in photos.items()}
    index = EmbeddingIndex.load(built, clip, verify=True)
    assert sorted(index.ids) == sorted(PHOTOS) and index.version == clip.version and len(index) == len(PHOTOS)


def test_query_finds_the_planted_copy_first(built: Path, photos: dict[str, Path], clip) -> None:
    index = EmbeddingIndex.load(built, clip)
    queries = torch.stack([_perturbed(p) for p in photos.values()])
    scores, ids = index.search_images(clip, queries, k=3)
    assert scores.shape == (len(PHOTOS), 3)
    assert [row[0] for row in ids] == list(photos)
    assert (scores[:, 0] > scores[:, 1]).all() and (scores[:, 1] >= scores[:, 2]).all()
    # the stored float16 unit vectors give the cosine the metric itself computes, to float16 precision
    from pytest_memorization.images import load_image

    direct = clip.compare(clip.features(queries[:1]), clip.features(load_image(photos[PHOTOS[0]])[None]))
    assert abs(float(direct[0, 0]) - float(scores[0, 0])) < 2e-3


def test_version_mismatch_names_both_versions_and_the_fix(built: Path) -> None:
    other = _clip(seed=1)
    with pytest.raises(MemorizationConfigError) as e:
        EmbeddingIndex.load(built, other)
    msg = str(e.value)
    assert "random-seed0" in msg and "random-seed1" in msg and "index build --metric clip" in msg


def test_corrupt_and_missing_indexes_are_clear_errors(built: Path, tmp_path: Path) -> None:
    import shutil

    with pytest.raises(MemorizationConfigError, match="no such index folder"):
        EmbeddingIndex.load(tmp_path / "nope")
    bad = tmp_path / "bad"
    shutil.copytree(built, bad)
    chunk = bad / "chunk-00000.npy"
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(MemorizationConfigError, match=r"chunk-00000.npy: index chunk is corrupt.*rebuild it"):
        EmbeddingIndex.load(bad)
    chunk.unlink()
    with pytest.raises(MemorizationConfigError, match="index chunk is missing"):
        EmbeddingIndex.load(bad)
    (bad / "index.json").write_text("{not json")
    with pytest.raises(MemorizationConfigError, match="index.json: unreadable or not JSON"):
        EmbeddingIndex.load(bad)
    (bad / "index.json").unlink()
    with pytest.raises(MemorizationConfigError, match="index.json: missing"):
        EmbeddingIndex.load(bad)


def test_only_vector_metrics_can_be_indexed(photos: dict[str, Path], tmp_path: Path) -> None:
    from pytest_memorization.metrics import get_metric

    with pytest.raises(MemorizationConfigError, match="only vector metrics"):
        build_index(get_metric("tiled_l2"), list(photos.values())[:2], None, tmp_path / "i", size=64)


def test_exact_search_over_many_chunks_matches_brute_force(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    cat = torch.nn.functional.normalize(torch.randn(3000, 16, generator=g), dim=1)
    ids = [f"w{i}" for i in range(3000)]
    add_embeddings(tmp_path / "i", cat[:1000], ids[:1000], metric="x", version="v1", dtype="float32",
                   chunk_rows=700)
    add_embeddings(tmp_path / "i", cat[1000:], ids[1000:], metric="x", version="v1", dtype="float32",
                   chunk_rows=700)  # appends
    with pytest.raises(MemorizationConfigError, match="appears twice"):
        add_embeddings(tmp_path / "i", cat[:1], ids[:1], metric="x", version="v1", dtype="float32")
    with pytest.raises(MemorizationConfigError, match="version"):
        add_embeddings(tmp_path / "i", cat[:1], ["new"], metric="x", version="v2", dtype="float32")
    index = EmbeddingIndex.load(tmp_path / "i")
    assert len(index._chunks) == 5 and len(index) == 3000
    q = torch.randn(7, 16, generator=g)
    scores, got = index.search(q, k=5, block_rows=256)
    want_s, want_i = (torch.nn.functional.normalize(q, dim=1) @ cat.T).topk(5, dim=1)
    assert torch.allclose(scores, want_s, atol=1e-5)
    assert got == [[ids[j] for j in row] for row in want_i.tolist()]


@pytest.mark.parametrize("queries", [1, 20])  # the float16 fast path (few queries) and the float32 path
def test_float16_search_equals_brute_force_on_the_stored_vectors(tmp_path: Path, queries: int) -> None:
    g = torch.Generator().manual_seed(2)
    cat = torch.randn(5000, 64, generator=g)
    ids = [f"w{i}" for i in range(5000)]
    add_embeddings(tmp_path / "i", cat, ids, metric="x", version="v1", chunk_rows=2048)
    index = EmbeddingIndex.load(tmp_path / "i")
    stored = index.vectors(range(5000))
    assert torch.allclose(stored, torch.nn.functional.normalize(cat, dim=1), atol=1e-3)
    q = torch.randn(queries, 64, generator=g)
    scores, got = index.search(q, k=10, block_rows=1000)
    want_s, want_i = (torch.nn.functional.normalize(q, dim=1) @ stored.T).topk(10, dim=1)
    assert torch.allclose(scores, want_s, atol=1e-6)
    assert got == [[ids[j] for j in row] for row in want_i.tolist()]


def test_cli_build_and_query(photos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    flags = ["--clip-config", str(TINY_CLIP_JSON), "--metric-option", "model=tiny-clip-test",
             "--metric-option", "weights=random"]
    folder = next(iter(photos.values())).parent
    assert main(["index", "build", "--metric", "clip", "--out", str(tmp_path / "idx"), str(folder), *flags]) == 0
    q = tmp_path / "query.png"
    x = _perturbed(photos["chelsea"])
    Image.fromarray((x.permute(1, 2, 0) * 255).round().byte().numpy()).save(q)
    capsys.readouterr()
    # the metric options are stored in the index: a query needs only the open_clip config
    assert main(["index", "query", str(tmp_path / "idx"), str(q), "-k", "2", "--json",
                 "--clip-config", str(TINY_CLIP_JSON)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["matches"][0]["id"] == "chelsea.png" and len(rows[0]["matches"]) == 2
    assert main(["index", "query", str(tmp_path / "idx"), str(q), *flags, "--metric-option", "seed=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: index") and "random-seed3" in err and "Traceback" not in err

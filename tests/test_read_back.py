"""What is read back from disk is verified: cached reference features and cached generations carry
an HMAC of their inputs and content (keyed by a secret outside the project) and are recomputed
when it does not match, so an edited or committed cache cannot turn a copy into a pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gate_projects import COPY_PROMPT, TINY_MODEL_TOML, gate_project

from pytest_memorization import _io


@pytest.fixture
def copy_project(pytester: pytest.Pytester, tiny_pipeline: Path, model_copy_png: bytes) -> pytest.Pytester:
    gate_project(pytester, tiny_pipeline, photos=("coffee",), files={"copy.png": model_copy_png})
    (pytester.path / "memorization.toml").write_text(
        TINY_MODEL_TOML.format(prefix="", seeds="[0]")
        + f'\n[[work]]\nid = "copy"\nimage = "works/copy.png"\nprompts = ["{COPY_PROMPT}"]\n')
    return pytester


def _forge(entry: Path, how: str) -> None:
    """Overwrite a reference-feature entry as a pull request could: other features under the right
    metadata, with no seal, a seal copied from another entry, or plain garbage."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    if how == "garbage":
        entry.write_bytes(b"not a safetensors file")
        return
    with safe_open(str(entry), framework="pt") as f:
        meta = dict(f.metadata())
        t = f.get_tensor("0")
    if how == "no-seal":
        meta.pop("seal")
    elif how == "other-seal":
        meta["seal"] = "0" * 64
    save_file({"0": torch.zeros_like(t) + 0.5}, str(entry), metadata=meta)  # a grey "work": nothing copies it


@pytest.mark.parametrize("how", ["no-seal", "other-seal", "garbage"])
def test_a_forged_reference_cache_cannot_turn_a_copy_into_a_pass(copy_project: pytest.Pytester, how: str) -> None:
    cache = copy_project.path / ".cache"
    copy_project.runpytest("--memorization").assert_outcomes(failed=1)
    entries = sorted((cache / "references").rglob("*.safetensors"))
    assert len(entries) == 2  # tiled_l2 and ssim features of the one work
    assert (cache / ".gitignore").read_text().splitlines()[-1] == "*", "the cache must never be committed"
    stamps = {p: p.stat().st_mtime_ns for p in entries}
    # the good case: an untouched cache is reused as it is
    copy_project.runpytest("--memorization").assert_outcomes(failed=1)
    assert {p: p.stat().st_mtime_ns for p in entries} == stamps
    for p in entries:
        _forge(p, how)
    result = copy_project.runpytest("--memorization")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*tiled_l2 0.0* <= 0.15 against 'copy'*"])
    forged_again = [p for p in entries if p.read_bytes().startswith(b"not a")]
    assert not forged_again, "a refused entry is recomputed and rewritten"


def test_a_cache_sealed_with_another_machines_key_is_not_trusted(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_memorization.metrics import get_metric
    from pytest_memorization.metrics.cache import ReferenceCache

    metric, key = get_metric("tiled_l2"), "a" * 64
    monkeypatch.setattr(_io, "_SECRET", [b"k" * 64])
    ReferenceCache(tmp_path).store(metric, key, torch.rand(1, 3, 8, 8))
    assert ReferenceCache(tmp_path).load(metric, key) is not None  # same key: trusted
    monkeypatch.setattr(_io, "_SECRET", [b"x" * 64])
    assert ReferenceCache(tmp_path).load(metric, key) is None  # another key: recomputed


def test_the_cache_key_lives_outside_the_project_is_private_and_per_project(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_io, "_SECRET", [])
    monkeypatch.setattr(_io, "_PROJECT", [])
    monkeypatch.delenv("MEMORIZATION_CACHE_KEY_FILE", raising=False)
    monkeypatch.delenv("MEMORIZATION_CACHE_KEY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _io.use_cache_project(tmp_path / "a")
    first = _io.cache_secret()
    [path] = (tmp_path / "xdg" / "pytest-memorization" / "keys").iterdir()
    assert path.read_bytes().strip() == first and len(first) >= 32
    assert path.stat().st_mode & 0o077 == 0
    monkeypatch.setattr(_io, "_SECRET", [])
    assert _io.cache_secret() == first  # reused, so caches hit across runs
    _io.use_cache_project(tmp_path / "b")
    assert _io.cache_secret() != first  # another project: another key, so one project cannot forge another's
    monkeypatch.setenv("MEMORIZATION_CACHE_KEY", "s" * 40)
    monkeypatch.setattr(_io, "_SECRET", [])
    secret = _io.cache_secret()
    _io.use_cache_project(tmp_path / "a")
    assert _io.cache_secret() == secret  # a CI secret: the same key in every project and on every runner
    monkeypatch.setenv("MEMORIZATION_CACHE_KEY", "short")
    monkeypatch.setattr(_io, "_SECRET", [])
    with pytest.raises(ValueError, match="shorter than 32"):
        _io.cache_secret()


def test_a_forged_generation_cache_entry_is_regenerated(tiny_pipeline: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from pytest_memorization.model.generation import MemorizationModel
    from pytest_memorization.model.loading import ModelSource, load

    pipe, info = load(ModelSource(str(tiny_pipeline)))
    model = MemorizationModel(pipe, info, cache_dir=tmp_path / "cache")
    kw = dict(steps=2, height=64, width=64, cache=True)
    real = model.generate([COPY_PROMPT], [0], **kw)
    assert real.from_cache == 0 and (tmp_path / "cache" / ".gitignore").is_file()
    again = model.generate([COPY_PROMPT], [0], **kw)
    assert again.from_cache == 1 and torch.equal(again.images, real.images)  # the good case: a hit
    (entry,) = (tmp_path / "cache" / "generations").glob("*.safetensors")
    image = load_file(str(entry))["image"]
    save_file({"image": torch.full_like(image, 0.5)}, str(entry))  # no seal
    from pytest_memorization.model.gencache import GenerationCacheWarning

    with pytest.warns(GenerationCacheWarning, match="seal does not match"):
        forged = model.generate([COPY_PROMPT], [0], **kw)
    assert forged.from_cache == 0 and torch.allclose(forged.images, real.images, atol=1e-5)
    assert model.generate([COPY_PROMPT], [0], **kw).from_cache == 1  # rewritten, sealed again


def _linked_model(tiny_pipeline: Path, root: Path, unet: Path) -> Path:
    """A model folder whose unet component is a symlink to ``unet``."""
    import shutil

    model = root / "model"
    shutil.copytree(tiny_pipeline, model, ignore=shutil.ignore_patterns("unet"))
    (model / "unet").symlink_to(unet, target_is_directory=True)
    return model


def test_the_model_hash_follows_symlinked_components(tiny_pipeline: Path, tmp_path: Path) -> None:
    import shutil

    from pytest_memorization.model.loading import content_hash

    other = tmp_path / "other_unet"
    shutil.copytree(tiny_pipeline / "unet", other)
    weights = other / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight: another UNet
    weights.write_bytes(bytes(data))
    a = _linked_model(tiny_pipeline, tmp_path / "a", tiny_pipeline / "unet")
    b = _linked_model(tiny_pipeline, tmp_path / "b", other)
    assert content_hash(a) != content_hash(b)
    assert content_hash(a) == content_hash(tiny_pipeline)  # a link hashes as the folder it points to
    (a / "text_encoder" / "loop").symlink_to(a, target_is_directory=True)  # a cycle is read once
    assert content_hash(a) != content_hash(b)


def test_a_component_linked_outside_the_model_folder_is_refused_unless_allowed(tiny_pipeline: Path,
                                                                               tmp_path: Path) -> None:
    from pytest_memorization.errors import CheckpointError
    from pytest_memorization.model.loading import ModelSource, load

    model = _linked_model(tiny_pipeline, tmp_path, tiny_pipeline / "unet")
    with pytest.raises(CheckpointError, match=r"/unet links to .*, outside the model folder .*"
                                              r"--memorization-allow-outside-root"):
        load(ModelSource(str(model)))
    pipe, info = load(ModelSource(str(model), allow_outside_root=True))
    assert info.content_hash

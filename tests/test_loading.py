"""Loading from each source, and our own message for every bad checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pytest_memorization.errors import CheckpointError
from pytest_memorization.model.generation import MemorizationModel
from pytest_memorization.model.loading import ModelSource, load, resolve_device, resolve_dtype


def _model(source: ModelSource) -> MemorizationModel:
    pipe, info = load(source)
    return MemorizationModel(pipe, info, batch_size=4)


def _gen(model: MemorizationModel, prompts: list[str], seeds: list[int]) -> torch.Tensor:
    return model.generate(prompts, seeds, steps=2, height=64, width=64).images


@pytest.fixture(scope="module")
def tiny_model(tiny_pipeline: Path) -> MemorizationModel:
    return _model(ModelSource(str(tiny_pipeline)))


def test_folder_loads_with_safety_checker_off_and_a_content_hash(tiny_model: MemorizationModel) -> None:
    assert tiny_model.info.kind == "folder"
    assert len(tiny_model.info.content_hash) == 64
    assert getattr(tiny_model.pipe, "safety_checker", None) is None


def test_generation_is_deterministic_and_batch_invariant(tiny_model: MemorizationModel) -> None:
    a = _gen(tiny_model, ["a cat", "a dog"], [0, 1])
    b = _gen(tiny_model, ["a cat", "a dog"], [0, 1])
    assert torch.equal(a, b), "same seed must give the same tensor"
    alone = _gen(tiny_model, ["a dog"], [1])
    assert torch.allclose(alone[0], a[3], atol=1e-5), "an image must not depend on its batch"
    assert not torch.allclose(a[0], a[1], atol=1e-3), "different seeds must differ"
    tiny_model.batch_size = 1
    try:
        assert torch.allclose(_gen(tiny_model, ["a cat", "a dog"], [0, 1]), a, atol=1e-5)
    finally:
        tiny_model.batch_size = 4


def test_hub_id_loads_from_the_local_cache_only(tiny_pipeline: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "hub" / "models--acme--tiny-sd"
    shutil.copytree(tiny_pipeline, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model = _model(ModelSource("acme/tiny-sd"))
    assert model.info.kind == "hub"
    with pytest.raises(CheckpointError, match=r"hub id 'acme/other' is not in the local Hugging Face cache "
                       r"\(looked for .*models--acme--other\).*hf download acme/other"):
        load(ModelSource("acme/other"))


def test_single_file_needs_a_config_folder(tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"\0" * 16)
    with pytest.raises(CheckpointError, match=r"model.safetensors: a single-file checkpoint needs a local config "
                       r"folder.*--memorization-config"):
        load(ModelSource(str(f)))
    with pytest.raises(CheckpointError, match=r"--memorization-config .*nope: not a diffusers folder"):
        load(ModelSource(str(f), config=str(tmp_path / "nope")))


def test_single_file_loads_offline_with_a_local_config(tiny_pipeline: Path, tiny_model: MemorizationModel,
                                                       tmp_path: Path) -> None:
    from pytest_memorization.testing.ldm_export import save_single_file

    f = save_single_file(tiny_pipeline, tmp_path / "tiny.safetensors")
    model = _model(ModelSource(str(f), config=str(tiny_pipeline)))
    assert model.info.kind == "single-file"
    assert torch.allclose(_gen(model, ["a cat"], [3]), _gen(tiny_model, ["a cat"], [3]), atol=1e-5)


def test_lora_toggles_without_reloading(tiny_pipeline: Path, tiny_lora: Path, tiny_model: MemorizationModel) -> None:
    model = _model(ModelSource(str(tiny_pipeline), lora=str(tiny_lora), lora_scale=1.0))
    assert model.info.lora_hash and len(model.info.lora_hash) == 64
    base = _gen(tiny_model, ["a cat"], [0])
    with_lora = _gen(model, ["a cat"], [0])
    assert (with_lora - base).abs().max() > 0.01, "the LoRA must change the image"
    pipe_id = id(model.pipe)
    with model.lora_scale(0.0):
        assert torch.allclose(_gen(model, ["a cat"], [0]), base, atol=1e-5), "scale 0 must give the base image"
    assert id(model.pipe) == pipe_id
    assert torch.allclose(_gen(model, ["a cat"], [0]), with_lora, atol=1e-6), "scale restored after the block"


def test_device_and_dtype_choice() -> None:
    assert resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    assert resolve_dtype("auto", "cuda:0") == "float16"
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"
    if not torch.cuda.is_available():
        with pytest.raises(CheckpointError, match="CUDA is not available.*--memorization-device cpu"):
            resolve_device("cuda:1")


def _broken_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("case, pattern", [
    ("missing", r"model '.*nowhere' not found: no such file or folder"),
    ("no-index", r"folder has no model_index.json.*save_pretrained"),
    ("no-unet-folder", r"lists component 'unet' but the folder .*unet is missing"),
    ("no-unet-weights", r"unet: no weights file for component 'unet'.*incomplete"),
    ("only-pickle", r"unet: only pickle weights \(diffusion_pytorch_model.bin\).*--memorization-allow-pickle"),
    ("pickle-file", r"model.ckpt: pickle checkpoints \(.ckpt\) can run code.*--memorization-allow-pickle"),
    ("not-a-checkpoint", r"notes.txt: not a checkpoint"),
    ("bad-index", r"model_index.json: cannot be read as JSON"),
])
def test_bad_checkpoints_get_our_own_message(case: str, pattern: str, tiny_pipeline: Path, tmp_path: Path) -> None:
    target = tmp_path / "m"
    if case == "missing":
        target = tmp_path / "nowhere"
    elif case == "pickle-file":
        target = tmp_path / "model.ckpt"
        target.write_bytes(b"not really")
    elif case == "not-a-checkpoint":
        target = tmp_path / "notes.txt"
        target.write_text("hello")
    else:
        _broken_copy(tiny_pipeline, target)
        if case == "no-index":
            (target / "model_index.json").unlink()
        elif case == "no-unet-folder":
            shutil.rmtree(target / "unet")
        elif case == "no-unet-weights":
            (target / "unet" / "diffusion_pytorch_model.safetensors").unlink()
        elif case == "only-pickle":
            (target / "unet" / "diffusion_pytorch_model.safetensors").rename(target / "unet" / "diffusion_pytorch_model.bin")
        elif case == "bad-index":
            (target / "model_index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=pattern):
        load(ModelSource(str(target)))


def test_allow_pickle_loads_bin_weights_with_weights_only(tiny_pipeline: Path, tmp_path: Path,
                                                          tiny_model: MemorizationModel) -> None:
    from safetensors.torch import load_file

    target = _broken_copy(tiny_pipeline, tmp_path / "m")
    st = target / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(st)), target / "unet" / "diffusion_pytorch_model.bin")
    st.unlink()
    model = _model(ModelSource(str(target), allow_pickle=True))
    assert torch.allclose(_gen(model, ["a cat"], [0]), _gen(tiny_model, ["a cat"], [0]), atol=1e-5)


def test_lora_errors(tiny_pipeline: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"LoRA .*nolora not found.*pytorch_lora_weights.safetensors"):
        load(ModelSource(str(tiny_pipeline), lora=str(tmp_path / "nolora")))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"LoRA folder .*empty holds no .safetensors LoRA weights"):
        load(ModelSource(str(tiny_pipeline), lora=str(empty)))
    from safetensors.torch import save_file

    alien = tmp_path / "alien.safetensors"  # a LoRA for some other architecture
    save_file({"unet.nonexistent_block.to_q.lora_A.weight": torch.zeros(4, 7),
               "unet.nonexistent_block.to_q.lora_B.weight": torch.zeros(7, 4)}, str(alien))
    with pytest.raises(CheckpointError, match=r"LoRA .*alien.safetensors does not match model"):
        load(ModelSource(str(tiny_pipeline), lora=str(alien)))
    json.dumps({})


def _kohya(key: str) -> str:
    """A diffusers/PEFT LoRA key in the kohya convention (lora_unet_<module_with_underscores>.lora_down...)."""
    module, _, rest = key.partition(".lora_")
    side = {"A.weight": "lora_down.weight", "B.weight": "lora_up.weight"}[rest]
    return "lora_unet_" + module.removeprefix("unet.").replace(".", "_") + "." + side


def test_a_lora_in_a_mixed_key_format_that_loads_only_in_part_is_an_error(tiny_pipeline: Path, tiny_lora: Path,
                                                                            tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_lora / "pytorch_lora_weights.safetensors"))
    modules = sorted({k.partition(".lora_")[0] for k in state})
    renamed = set(modules[len(modules) // 2:])  # the second half in kohya's names, the first in diffusers'
    mixed = {(_kohya(k) if k.partition(".lora_")[0] in renamed else k): v for k, v in state.items()}
    for m in renamed:
        mixed["lora_unet_" + m.removeprefix("unet.").replace(".", "_") + ".alpha"] = torch.tensor(4.0)
    (tmp_path / "mixed").mkdir()
    save_file(mixed, str(tmp_path / "mixed" / "pytorch_lora_weights.safetensors"))
    first = sorted(renamed)[0].removeprefix("unet.")
    with pytest.raises(CheckpointError, match=rf"loaded only in part: .* not loaded: .*{first.replace('.', '_')}"
                                              r".*Likely cause: .*key format") as e:
        load(ModelSource(str(tiny_pipeline), lora=str(tmp_path / "mixed")))
    assert f"{len(modules) - len(renamed)} of {len(modules)} unet adapter modules" in str(e.value)
    model = _model(ModelSource(str(tiny_pipeline), lora=str(tiny_lora)))  # the same LoRA in one format loads
    assert model.info.lora_hash

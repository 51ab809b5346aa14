"""The LDM single-file exporter, checked against diffusers' own single-file loader."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from pytest_memorization.errors import CheckpointError
from pytest_memorization.testing import build_tiny_pipeline, tiny_components
from pytest_memorization.testing.ldm_export import (
    TEXT_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    copy_pipeline_config,
    pipeline_to_ldm,
    save_single_file,
    unet_to_ldm,
    vae_to_ldm,
    verify_ldm_state_dict,
)

FROM_SINGLE_FILE_KW: dict[str, Any] = dict(
    local_files_only=True, safety_checker=None, requires_safety_checker=False
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from diffusers import StableDiffusionPipeline

    root = tmp_path_factory.mktemp("ldm")
    folder = build_tiny_pipeline(root / "pipe", seed=3)
    out = save_single_file(folder, root / "single" / "tiny-sd1.safetensors")
    # A config folder with no weights at all, so every weight provably comes from the single file.
    config = copy_pipeline_config(folder, root / "config")
    loaded = StableDiffusionPipeline.from_single_file(str(out), config=str(config), **FROM_SINGLE_FILE_KW)
    reference = StableDiffusionPipeline.from_pretrained(folder, **FROM_SINGLE_FILE_KW)
    return dict(folder=folder, out=out, config=config, loaded=loaded, reference=reference)


def test_config_copy_has_no_weights(exported: dict[str, Any]) -> None:
    files = {
        p.relative_to(exported["config"]).as_posix() for p in exported["config"].rglob("*") if p.is_file()
    }
    assert (
        "unet/config.json" in files
        and "model_index.json" in files
        and "scheduler/scheduler_config.json" in files
    )
    assert not [f for f in files if f.endswith((".safetensors", ".bin"))]


@pytest.mark.parametrize("name", ["unet", "vae", "text_encoder"])
def test_round_trip_state_dicts_identical(exported: dict[str, Any], name: str) -> None:
    want = getattr(exported["reference"], name).state_dict()
    got = getattr(exported["loaded"], name).state_dict()
    assert set(got) == set(want)
    for key, tensor in want.items():
        assert got[key].device.type == "cpu", key  # not left on the meta device
        assert got[key].dtype == tensor.dtype and got[key].shape == tensor.shape, key
        assert torch.equal(got[key], tensor), key


def test_round_trip_scheduler_and_tokenizer(exported: dict[str, Any]) -> None:
    loaded, reference = exported["loaded"], exported["reference"]
    assert type(loaded.scheduler) is type(reference.scheduler)
    assert dict(loaded.scheduler.config) == dict(reference.scheduler.config)
    text = "a photo of an astronaut riding a horse"
    assert loaded.tokenizer(text).input_ids == reference.tokenizer(text).input_ids


def test_round_trip_generates_identical_image(exported: dict[str, Any]) -> None:
    kw: dict[str, Any] = dict(num_inference_steps=2, height=64, width=64, output_type="pt")
    prompt = "a red car on a beach"
    with torch.no_grad():
        want = exported["reference"](prompt, generator=torch.Generator().manual_seed(7), **kw).images
        got = exported["loaded"](prompt, generator=torch.Generator().manual_seed(7), **kw).images
    assert want.shape == (1, 3, 64, 64)
    assert float(want.std()) > 1e-3  # a real image, not a constant that would trivially match
    assert torch.equal(got, want)


def test_file_is_an_sd1_ldm_checkpoint(exported: dict[str, Any]) -> None:
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from safetensors import safe_open
    from safetensors.torch import load_file

    sd = load_file(exported["out"])
    assert infer_diffusers_model_type(sd) == "v1"
    assert all(k.startswith((UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX)) for k in sd)
    # No diffusers module name survives in the UNet/VAE keys (diffusers' reader would accept
    # some of them, e.g. a VAE "conv_shortcut", but real checkpoints never have them).
    diffusers_names = ("conv_shortcut", "resnets", "down_blocks", "up_blocks", "mid_block.", "attentions")
    diffusers_names += (
        "samplers",
        "time_emb_proj",
        "time_embedding",
        "group_norm",
        "conv_norm_out",
        "linear_1",
    )
    leftovers = [k for k in sd if not k.startswith(TEXT_PREFIX) and any(n in k for n in diffusers_names)]
    assert not leftovers
    assert not [k for k in sd if k.startswith(VAE_PREFIX) and ".to_" in k]
    # The VAE mid-block attention is stored as 1x1 convolutions, as in real SD-1.x files.
    for part in ("encoder", "decoder"):
        for name in ("q", "k", "v", "proj_out"):
            assert sd[f"{VAE_PREFIX}{part}.mid.attn_1.{name}.weight"].shape == (32, 32, 1, 1)
    assert torch.equal(sd[TEXT_PREFIX + "text_model.embeddings.position_ids"], torch.arange(77)[None])
    with safe_open(str(exported["out"]), "pt") as f:
        assert f.metadata()["format"] == "pt"


def _sd15_shaped_models() -> tuple[Any, Any, Any]:
    """Tiny models with the exact SD-1.5 block layout (4 blocks, 2 layers, attention pattern)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=2,
        cross_attention_dim=8,
        norm_num_groups=4,
        attention_head_dim=2,
        sample_size=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 32, 32),
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=2,
        norm_num_groups=4,
    )
    return unet, vae, tiny_components()["text_encoder"]


def test_sd15_layout_gives_the_real_sd15_keys() -> None:
    unet, vae, text = _sd15_shaped_models()
    assert unet.config.down_block_types[-1] == "DownBlock2D" and unet.config.up_block_types[0] == "UpBlock2D"
    ldm = pipeline_to_ldm(unet, vae, text)
    verify_ldm_state_dict(ldm, unet, vae, text)
    for key in (
        # diffusers' own "v1" marker key, and the up/down samplers where SD-1.5 has them.
        "output_blocks.11.0.skip_connection.weight",
        "input_blocks.3.0.op.weight",
        "input_blocks.9.0.op.weight",
        "input_blocks.7.0.skip_connection.weight",
        "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
        "middle_block.1.proj_in.weight",
        "output_blocks.2.1.conv.weight",
        "output_blocks.5.2.conv.weight",
        "output_blocks.8.2.conv.weight",
        "output_blocks.11.1.proj_out.weight",
    ):
        assert UNET_PREFIX + key in ldm, key
    for key in (
        "input_blocks.10.1.norm.weight",
        "output_blocks.2.1.norm.weight",
        "output_blocks.11.2.conv.weight",
    ):
        assert UNET_PREFIX + key not in ldm, key
    for key in (
        "encoder.down.1.block.0.nin_shortcut.weight",
        "encoder.down.2.downsample.conv.weight",
        "decoder.up.3.upsample.conv.weight",
        "decoder.up.0.block.2.conv2.weight",
        "decoder.up.0.block.0.nin_shortcut.weight",
    ):
        assert VAE_PREFIX + key in ldm, key
    assert VAE_PREFIX + "encoder.down.3.downsample.conv.weight" not in ldm
    assert VAE_PREFIX + "decoder.up.0.upsample.conv.weight" not in ldm


def test_other_layouts_round_trip_through_diffusers_converters() -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(1)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16, 16),
        layers_per_block=3,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=4,
        attention_head_dim=2,
        transformer_layers_per_block=2,
        sample_size=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16),
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        layers_per_block=1,
        norm_num_groups=4,
    )
    text = tiny_components()["text_encoder"]
    ldm = pipeline_to_ldm(unet, vae, text)
    verify_ldm_state_dict(ldm, unet, vae, text)
    assert len(ldm) == len(unet.state_dict()) + len(vae.state_dict()) + len(text.state_dict()) + 1


def test_verify_catches_a_wrong_mapping() -> None:
    c = tiny_components()
    ldm = pipeline_to_ldm(c["unet"], c["vae"], c["text_encoder"])
    # Swap two same-shaped resnet convolutions: every key still exists, only the tensors moved.
    a, b = (
        UNET_PREFIX + "output_blocks.0.0.out_layers.3.weight",
        UNET_PREFIX + "output_blocks.1.0.out_layers.3.weight",
    )
    swapped = dict(ldm)
    assert ldm[a].shape == ldm[b].shape
    swapped[a], swapped[b] = ldm[b], ldm[a]
    with pytest.raises(CheckpointError, match="unet: diffusers reads back different tensors"):
        verify_ldm_state_dict(swapped, c["unet"], c["vae"], c["text_encoder"])
    dropped = {k: v for k, v in ldm.items() if ".mid.attn_1." not in k}
    with pytest.raises(CheckpointError, match="vae: diffusers would not read the export back"):
        verify_ldm_state_dict(dropped, c["unet"], c["vae"], c["text_encoder"])


def test_unsupported_configs_are_refused() -> None:
    c = tiny_components()
    config = dict(c["unet"].config)
    with pytest.raises(CheckpointError, match="unet/config.json.*SimpleCrossAttnDownBlock2D"):
        unet_to_ldm(
            c["unet"].state_dict(),
            {**config, "down_block_types": ("DownBlock2D", "SimpleCrossAttnDownBlock2D")},
        )
    with pytest.raises(CheckpointError, match="addition_embed_type"):
        unet_to_ldm(c["unet"].state_dict(), {**config, "addition_embed_type": "text_time"})
    with pytest.raises(CheckpointError, match="layers_per_block"):
        unet_to_ldm(c["unet"].state_dict(), {**config, "layers_per_block": [1, 1]})
    # A weight the layout has no place for is named, never dropped silently.
    extra = {**c["unet"].state_dict(), "add_embedding.linear_1.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="add_embedding.linear_1.weight"):
        unet_to_ldm(extra, config)
    with pytest.raises(CheckpointError, match="vae/config.json"):
        vae_to_ldm(c["vae"].state_dict(), {**dict(c["vae"].config), "mid_block_add_attention": False})


def test_bad_paths_are_named(tmp_path: Path, exported: dict[str, Any]) -> None:
    with pytest.raises(CheckpointError, match=r"must end in '\.safetensors'"):
        save_single_file(exported["folder"], tmp_path / "model.ckpt")
    with pytest.raises(CheckpointError, match="no model_index.json"):
        save_single_file(tmp_path / "nowhere", tmp_path / "x.safetensors")
    bad = copy_pipeline_config(exported["folder"], tmp_path / "bad")
    index = json.loads((bad / "model_index.json").read_text())
    index["unet"] = ["diffusers", "UNet2DModel"]
    (bad / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="key 'unet'.*UNet2DConditionModel"):
        save_single_file(bad, tmp_path / "x.safetensors")


def test_without_config_diffusers_goes_to_the_hub(exported: dict[str, Any]) -> None:
    """Documents diffusers' raw behaviour: no ``config=`` means a hub lookup, even with local_files_only.

    Only run when the hub is really switched off in this process, so the test never touches the network.
    """
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    if not constants.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE was not set before huggingface_hub was imported")
    from diffusers import StableDiffusionPipeline

    with pytest.raises(LocalEntryNotFoundError):
        StableDiffusionPipeline.from_single_file(str(exported["out"]), **FROM_SINGLE_FILE_KW)

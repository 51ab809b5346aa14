"""Write a diffusers Stable Diffusion 1.x folder as one original-SD ("LDM") checkpoint file.

``StableDiffusionPipeline.from_single_file`` reads only the original Stable Diffusion key
layout (``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``)
and converts it back to diffusers with ``diffusers.loaders.single_file_utils``. This module
is the inverse direction, so that the single-file loading path can be tested with tiny,
offline models (and so users can hand a gate a single file made from their own folder).

Scope: SD-1.x style ``UNet2DConditionModel`` (``DownBlock2D``/``CrossAttnDownBlock2D`` down,
``UpBlock2D``/``CrossAttnUpBlock2D`` up, ``UNetMidBlock2DCrossAttn`` mid, an integer
``layers_per_block``, no class or addition embeddings), ``AutoencoderKL`` and
``CLIPTextModel``. Block count, layers per block and which blocks have attention are read
from the config.

The written file loads offline with::

    StableDiffusionPipeline.from_single_file(
        out_file, config=str(pipeline_dir), local_files_only=True,
        safety_checker=None, requires_safety_checker=False)

``config=`` must be a local diffusers folder (configs, scheduler and tokenizer; weights are
not needed, see :func:`copy_pipeline_config`): without it diffusers fetches configs from the
Hugging Face hub. This module imports torch/diffusers inside its functions only.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_memorization.errors import CheckpointError

__all__ = [
    "UNET_PREFIX",
    "VAE_PREFIX",
    "TEXT_PREFIX",
    "unet_to_ldm",
    "vae_to_ldm",
    "text_encoder_to_ldm",
    "pipeline_to_ldm",
    "verify_ldm_state_dict",
    "save_single_file",
    "copy_pipeline_config",
]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."

# diffusers ResnetBlock2D child -> LDM ResBlock child (UNet).
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
# diffusers ResnetBlock2D child -> LDM ResnetBlock child (VAE); only the shortcut differs.
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
# diffusers VAE mid-block Attention child -> LDM AttnBlock child (1x1 convs there).
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}

_UNET_DOWN = {"DownBlock2D": False, "CrossAttnDownBlock2D": True}
_UNET_UP = {"UpBlock2D": False, "CrossAttnUpBlock2D": True}

# A rule maps every diffusers key under ``src`` to ``dst`` + the rest of the key, renaming the
# first component(s) of the rest through ``rename``.
_Rule = tuple[str, str, Mapping[str, str]]


def _map_keys(
    state_dict: Mapping[str, Any], rules: list[_Rule], component: str, prefix: str
) -> dict[str, Any]:
    # Longest source prefix first, so "mid_block.resnets.1" never falls into "mid_block.resnets.1x".
    ordered = sorted(rules, key=lambda r: len(r[0]), reverse=True)
    out: dict[str, Any] = {}
    unmapped: list[str] = []
    for key, tensor in state_dict.items():
        for src, dst, rename in ordered:
            if src and not key.startswith(src + "."):
                continue
            rest = key[len(src) + 1 :] if src else key
            for old, new in rename.items():
                if rest.startswith(old + "."):
                    rest = new + rest[len(old) :]
                    break
            new_key = prefix + (f"{dst}.{rest}" if dst else rest)
            if new_key in out:
                raise CheckpointError(f"{component}: two weights map to LDM key '{new_key}' (export bug)")
            out[new_key] = tensor
            break
        else:
            unmapped.append(key)
    if unmapped:
        shown = ", ".join(unmapped[:5]) + (" ..." if len(unmapped) > 5 else "")
        raise CheckpointError(
            f"{component}: {len(unmapped)} weight(s) have no place in an SD-1.x LDM checkpoint ({shown}). "
            "Only SD-1.x style UNet2DConditionModel / AutoencoderKL / CLIPTextModel can be exported."
        )
    return out


def _check_unet_config(config: Mapping[str, Any]) -> tuple[list[bool], list[bool], int]:
    down = list(config["down_block_types"])
    up = list(config["up_block_types"])
    bad = [t for t in down if t not in _UNET_DOWN] + [t for t in up if t not in _UNET_UP]
    problems = []
    if bad:
        problems.append(f"unsupported block types {bad}")
    if len(down) != len(up):
        problems.append(f"{len(down)} down blocks but {len(up)} up blocks")
    mid = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid != "UNetMidBlock2DCrossAttn":
        problems.append(f"mid_block_type {mid!r} (needs 'UNetMidBlock2DCrossAttn')")
    lpb = config["layers_per_block"]
    if not isinstance(lpb, int):
        problems.append(f"layers_per_block {lpb!r} (needs one integer for all blocks)")
    for name in ("class_embed_type", "addition_embed_type", "num_class_embeds", "encoder_hid_dim_type"):
        if config.get(name) is not None:
            problems.append(f"{name}={config[name]!r} (SD-1.x has none)")
    if problems:
        raise CheckpointError(
            "unet/config.json: not an SD-1.x UNet that an LDM checkpoint can hold: " + "; ".join(problems)
        )
    return [_UNET_DOWN[t] for t in down], [_UNET_UP[t] for t in up], int(lpb)


def _unet_rules(config: Mapping[str, Any]) -> list[_Rule]:
    down_attn, up_attn, lpb = _check_unet_config(config)
    plain: Mapping[str, str] = {}
    rules: list[_Rule] = [
        ("time_embedding.linear_1", "time_embed.0", plain),
        ("time_embedding.linear_2", "time_embed.2", plain),
        ("conv_in", "input_blocks.0.0", plain),
        ("conv_norm_out", "out.0", plain),
        ("conv_out", "out.2", plain),
        # Mid block: ResBlock, SpatialTransformer, ResBlock.
        ("mid_block.resnets.0", "middle_block.0", _UNET_RESNET),
        ("mid_block.attentions.0", "middle_block.1", plain),
        ("mid_block.resnets.1", "middle_block.2", _UNET_RESNET),
    ]
    # LDM input_blocks: 0 is conv_in; each down block then has `lpb` (ResBlock[, attention])
    # entries and, except the last block, one Downsample entry (".0.op").
    for b, has_attn in enumerate(down_attn):
        first = 1 + b * (lpb + 1)
        for j in range(lpb):
            rules.append((f"down_blocks.{b}.resnets.{j}", f"input_blocks.{first + j}.0", _UNET_RESNET))
            if has_attn:
                rules.append((f"down_blocks.{b}.attentions.{j}", f"input_blocks.{first + j}.1", plain))
        if b < len(down_attn) - 1:
            rules.append((f"down_blocks.{b}.downsamplers.0.conv", f"input_blocks.{first + lpb}.0.op", plain))
    # LDM output_blocks: each up block has `lpb + 1` (ResBlock[, attention][, Upsample]) entries;
    # the Upsample sits after the attention when there is one.
    for b, has_attn in enumerate(up_attn):
        first = b * (lpb + 1)
        for j in range(lpb + 1):
            rules.append((f"up_blocks.{b}.resnets.{j}", f"output_blocks.{first + j}.0", _UNET_RESNET))
            if has_attn:
                rules.append((f"up_blocks.{b}.attentions.{j}", f"output_blocks.{first + j}.1", plain))
        if b < len(up_attn) - 1:
            slot = 2 if has_attn else 1
            rules.append(
                (f"up_blocks.{b}.upsamplers.0.conv", f"output_blocks.{first + lpb}.{slot}.conv", plain)
            )
    return rules


def unet_to_ldm(state_dict: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Map a diffusers SD-1.x UNet state dict to LDM keys (``model.diffusion_model.*``)."""
    return _map_keys(state_dict, _unet_rules(config), "unet", UNET_PREFIX)


def _vae_rules(config: Mapping[str, Any]) -> list[_Rule]:
    down = list(config["down_block_types"])
    up = list(config["up_block_types"])
    bad = [t for t in down if t != "DownEncoderBlock2D"] + [t for t in up if t != "UpDecoderBlock2D"]
    if bad or not config.get("mid_block_add_attention", True):
        raise CheckpointError(
            f"vae/config.json: not an SD-1.x AutoencoderKL (block types {bad or 'ok'}, "
            f"mid_block_add_attention={config.get('mid_block_add_attention', True)})"
        )
    plain: Mapping[str, str] = {}
    rules: list[_Rule] = [("quant_conv", "quant_conv", plain), ("post_quant_conv", "post_quant_conv", plain)]
    for part in ("encoder", "decoder"):
        rules += [
            (f"{part}.conv_in", f"{part}.conv_in", plain),
            (f"{part}.conv_out", f"{part}.conv_out", plain),
            (f"{part}.conv_norm_out", f"{part}.norm_out", plain),
            (f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", _VAE_RESNET),
            (f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", _VAE_RESNET),
            (f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", _VAE_ATTN),
        ]
    lpb = int(config["layers_per_block"])
    for i in range(len(down)):
        for j in range(lpb):
            rules.append((f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", _VAE_RESNET))
        rules.append((f"encoder.down_blocks.{i}.downsamplers.0", f"encoder.down.{i}.downsample", plain))
    # The LDM decoder numbers its up blocks from the lowest resolution: diffusers' first is its last.
    # Decoder blocks have one resnet more than encoder blocks.
    for i in range(len(up)):
        ldm = len(up) - 1 - i
        for j in range(lpb + 1):
            rules.append((f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{ldm}.block.{j}", _VAE_RESNET))
        rules.append((f"decoder.up_blocks.{i}.upsamplers.0", f"decoder.up.{ldm}.upsample", plain))
    return rules


def vae_to_ldm(state_dict: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Map a diffusers ``AutoencoderKL`` state dict to LDM keys (``first_stage_model.*``).

    The mid-block attention's q/k/v/proj_out are 1x1 convolutions in LDM: their (C, C) linear
    weights are written as (C, C, 1, 1), the shape real SD checkpoints carry.
    """
    out = _map_keys(state_dict, _vae_rules(config), "vae", VAE_PREFIX)
    for key, tensor in out.items():
        if ".mid.attn_1." in key and key.endswith(".weight") and tensor.ndim == 2:
            out[key] = tensor.reshape(*tensor.shape, 1, 1).clone()
    return out


def text_encoder_to_ldm(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Map a ``CLIPTextModel`` state dict to ``cond_stage_model.transformer.text_model.*``.

    transformers 5 flattened ``CLIPTextModel`` (no ``text_model.`` in its keys); older versions
    keep it. Both give the same LDM keys.
    """
    out = {}
    for key, tensor in state_dict.items():
        inner = key if key.startswith("text_model.") else "text_model." + key
        out[TEXT_PREFIX + inner] = tensor
    return out


def pipeline_to_ldm(unet: Any, vae: Any, text_encoder: Any) -> dict[str, Any]:
    """The full LDM state dict of three loaded models (tensors are shared, not copied)."""
    import torch

    sd: dict[str, Any] = {}
    sd.update(unet_to_ldm(unet.state_dict(), dict(unet.config)))
    sd.update(vae_to_ldm(vae.state_dict(), dict(vae.config)))
    text = text_encoder_to_ldm(text_encoder.state_dict())
    sd.update(text)
    # Real SD-1.x checkpoints carry CLIP's position_ids buffer (recent transformers versions no longer
    # saves it); diffusers tolerates it, and it keeps our files shaped like the real ones.
    pos_key = TEXT_PREFIX + "text_model.embeddings.position_ids"
    if pos_key not in sd:
        n = int(text_encoder.config.max_position_embeddings)
        sd[pos_key] = torch.arange(n, dtype=torch.int64).unsqueeze(0)
    return sd


def verify_ldm_state_dict(
    ldm: Mapping[str, Any],
    unet: Any,
    vae: Any,
    text_encoder: Any,
) -> None:
    """Run diffusers' own LDM -> diffusers converters on ``ldm`` and demand the models' exact weights.

    Raises :class:`CheckpointError` naming the first mismatching component and keys.
    """
    import torch
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        infer_diffusers_model_type,
    )

    model_type = infer_diffusers_model_type(ldm)
    if model_type != "v1":
        raise CheckpointError(
            f"diffusers detects this export as {model_type!r}, not an SD-1.x ('v1') checkpoint"
        )
    text_sd = text_encoder.state_dict()
    back_text = convert_ldm_clip_checkpoint(dict(ldm))
    if not any(k.startswith("text_model.") for k in text_sd):
        back_text = {k.removeprefix("text_model."): v for k, v in back_text.items()}
    back_text.pop("embeddings.position_ids", None)
    back_text.pop("text_model.embeddings.position_ids", None)
    checks = [
        ("unet", unet.state_dict(), convert_ldm_unet_checkpoint(dict(ldm), dict(unet.config))),
        ("vae", vae.state_dict(), convert_ldm_vae_checkpoint(dict(ldm), dict(vae.config))),
        ("text_encoder", text_sd, back_text),
    ]
    for name, want, got in checks:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        if missing or extra:
            raise CheckpointError(
                f"{name}: diffusers would not read the export back: missing {missing[:5]}, unexpected {extra[:5]}"
            )
        differ = [k for k in want if want[k].shape != got[k].shape or not torch.equal(want[k], got[k])]
        if differ:
            raise CheckpointError(f"{name}: diffusers reads back different tensors for {differ[:5]}")


def _read_model_index(pipeline_dir: Path) -> dict[str, Any]:
    index = pipeline_dir / "model_index.json"
    if not index.is_file():
        raise CheckpointError(
            f"{pipeline_dir}: not a diffusers pipeline folder (no model_index.json). "
            "Pass the folder that StableDiffusionPipeline.save_pretrained wrote."
        )
    try:
        data: dict[str, Any] = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{index}: cannot read it as JSON ({exc})") from exc
    expected = {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "text_encoder": "CLIPTextModel"}
    for name, cls in expected.items():
        entry = data.get(name)
        if not isinstance(entry, list) or len(entry) != 2 or entry[1] != cls:
            raise CheckpointError(
                f"{index}: key '{name}' is {entry!r}; an SD-1.x single file needs {cls} there"
            )
        if not (pipeline_dir / name / "config.json").is_file():
            raise CheckpointError(f"{pipeline_dir / name}: missing config.json for component '{name}'")
    return data


def save_single_file(
    pipeline_dir: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    *,
    dtype: Any = None,
    verify: bool = True,
) -> Path:
    """Write the SD-1.x diffusers folder ``pipeline_dir`` as one LDM ``.safetensors`` file.

    Loads the UNet, VAE and text encoder with ``local_files_only=True``, maps their weights to
    the original Stable Diffusion key layout and saves them to ``out_file`` (parent folders are
    created). ``dtype`` (a ``torch.dtype``) casts floating-point weights; by default they keep
    the dtype they load with. With ``verify`` (default) diffusers' own converters must read
    every weight back exactly before the file is written. Returns ``out_file`` as a ``Path``.
    """
    pipeline_dir = Path(pipeline_dir)
    out_file = Path(out_file)
    if out_file.suffix != ".safetensors":
        raise CheckpointError(
            f"{out_file}: the single file must end in '.safetensors' (diffusers picks the reader "
            "from the extension and would unpickle anything else with torch.load)"
        )
    _read_model_index(pipeline_dir)

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    try:
        unet = UNet2DConditionModel.from_pretrained(pipeline_dir, subfolder="unet", local_files_only=True)
        vae = AutoencoderKL.from_pretrained(pipeline_dir, subfolder="vae", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(pipeline_dir / "text_encoder", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{pipeline_dir}: cannot load a component's weights: {exc}") from exc

    ldm = pipeline_to_ldm(unet, vae, text_encoder)
    if verify:
        verify_ldm_state_dict(ldm, unet, vae, text_encoder)
    tensors = {}
    for key, tensor in ldm.items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[key] = tensor.contiguous()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "exported_by": "pytest-memorization"})
    os.replace(tmp, out_file)
    return out_file


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx", ".gguf")


def copy_pipeline_config(pipeline_dir: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Copy ``pipeline_dir`` without its weight files: what ``from_single_file(config=...)`` needs.

    Handy for tests that must prove the weights came from the single file, and for shipping a
    single checkpoint plus a small config folder. Returns ``dest``.
    """
    src = Path(pipeline_dir)
    _read_model_index(src)
    dest = Path(dest)
    for path in sorted(src.rglob("*")):
        if path.is_dir() or path.name.endswith(_WEIGHT_SUFFIXES) or path.name.endswith(".index.json"):
            continue
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return dest

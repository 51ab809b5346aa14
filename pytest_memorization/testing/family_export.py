"""Original-layout single files for SDXL and SD3 (the SD 1/2 exporter is ``ldm_export``).

``save_family_single_file(folder, out)`` writes the pipeline's **denoiser and VAE** in the
original (non-diffusers) key layout that diffusers' ``from_single_file`` converts back:

- SDXL: the UNet as ``model.diffusion_model.*`` (LDM blocks, the size/pooled conditioning as
  ``label_emb.0.{0,2}``), the VAE as ``first_stage_model.*``;
- SD3: the MMDiT as ``model.diffusion_model.*`` (``joint_blocks.N.{x_block,context_block}``, fused
  ``qkv``, ``adaLN_modulation`` with shift/scale in the original order), the VAE as
  ``first_stage_model.*``.

With ``text_encoders=True`` an SDXL file also holds both text encoders as real SDXL files do
(CLIP-L under ``conditioner.embedders.0.transformer.``, OpenCLIP-G in open_clip keys under
``conditioner.embedders.1.model.``); diffusers tells them apart by width, so the two must differ
(``build_tiny_sdxl(width_2=48)``). Otherwise the text encoders are not in the file:
``from_single_file(file, config=folder)`` loads every
component the file does not hold from the config folder, as it does for the real
``sd3_medium.safetensors`` (no text encoders). ``copy_family_config`` writes such a folder:
every config and tokenizer, and weights only for the components the file does not hold, so a
test proves that the denoiser and VAE come from the file.

Flux is not here: diffusers 0.42's Flux single-file converter
(``convert_flux_transformer_checkpoint_to_diffusers``) hard-codes FLUX.1's width
(``inner_dim = 3072``), so no small Flux transformer can be read back from a single file.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .ldm_export import UNET_PREFIX, _map_keys, _unet_rules, vae_to_ldm

__all__ = ["SINGLE_FILE_COMPONENTS", "sdxl_unet_to_ldm", "sdxl_text_encoders_to_ldm", "sd3_transformer_to_original", "save_family_single_file",
           "copy_family_config"]

SINGLE_FILE_COMPONENTS = {"StableDiffusionXLPipeline": ("unet", "vae"),
                          "StableDiffusion3Pipeline": ("transformer", "vae")}


def sdxl_unet_to_ldm(state_dict: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """An SDXL ``UNet2DConditionModel`` state dict in LDM keys: SD-1.x's block layout plus the
    ``text_time`` conditioning MLP (``add_embedding`` -> ``label_emb.0``)."""
    if config.get("addition_embed_type") != "text_time":
        raise CheckpointError("unet/config.json: an SDXL UNet has addition_embed_type 'text_time', got "
                              f"{config.get('addition_embed_type')!r}")
    rules = _unet_rules({**config, "addition_embed_type": None})
    rules += [("add_embedding.linear_1", "label_emb.0.0", {}), ("add_embedding.linear_2", "label_emb.0.2", {})]
    return _map_keys(state_dict, rules, "unet", UNET_PREFIX)


def sdxl_text_encoders_to_ldm(text_encoder: Any, text_encoder_2: Any) -> dict[str, Any]:
    """SDXL's two text encoders as an original SDXL checkpoint holds them: CLIP ViT-L in
    transformers keys under ``conditioner.embedders.0.transformer.``, OpenCLIP ViT-bigG in
    open_clip keys (fused ``in_proj``, ``resblocks``, transposed ``text_projection``) under
    ``conditioner.embedders.1.model.``: the inverse of diffusers' ``convert_open_clip_checkpoint``."""
    import torch

    w1 = text_encoder.config.hidden_size
    if text_encoder_2.config.hidden_size == w1:
        raise CheckpointError(f"text_encoder and text_encoder_2 are both {w1} wide: diffusers tells an SDXL file's "
                              "two encoders apart by their width, so it would load the first into both; build "
                              "them with different widths (build_tiny_sdxl(width_2=48))")
    out = {}
    for key, t in text_encoder.state_dict().items():
        out["conditioner.embedders.0.transformer." + (key if key.startswith("text_model.") else "text_model." + key)] = t
    sd = {k.removeprefix("text_model."): v for k, v in text_encoder_2.state_dict().items()}
    g = "conditioner.embedders.1.model."
    out[g + "text_projection"] = sd.pop("text_projection.weight").T.contiguous()
    out[g + "positional_embedding"] = sd.pop("embeddings.position_embedding.weight")
    out[g + "token_embedding.weight"] = sd.pop("embeddings.token_embedding.weight")
    sd.pop("embeddings.position_ids", None)
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for i in range(text_encoder_2.config.num_hidden_layers):
        src, dst = f"encoder.layers.{i}.", f"{g}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat([sd.pop(f"{src}self_attn.{p}_proj.{kind}") for p in "qkv"])
            for a, b in names.items():
                out[f"{dst}{b}.{kind}"] = sd.pop(f"{src}{a}.{kind}")
    for kind in ("weight", "bias"):
        out[f"{g}ln_final.{kind}"] = sd.pop(f"final_layer_norm.{kind}")
    if sd:
        raise CheckpointError(f"text_encoder_2: {len(sd)} weight(s) have no place in an OpenCLIP checkpoint "
                              f"({', '.join(sorted(sd)[:5])})")
    return out


def _swap_halves(t: Any) -> Any:
    """diffusers' (scale, shift) <-> the original (shift, scale): its own inverse."""
    import torch

    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def sd3_transformer_to_original(state_dict: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """An ``SD3Transformer2DModel`` state dict in the original MMDiT keys (``model.diffusion_model.*``):
    the inverse of diffusers' ``convert_sd3_transformer_checkpoint_to_diffusers``. Every weight must
    find its place (a leftover is a ``CheckpointError`` naming it)."""
    import torch

    sd = dict(state_dict)
    out: dict[str, Any] = {}

    def put(orig: str, diff: str, fn: Any = None) -> None:
        if diff in sd:
            t = sd.pop(diff)
            out[orig] = fn(t) if fn else t

    def fuse(orig: str, diffs: list[str]) -> None:
        for kind in ("weight", "bias"):
            if all(f"{d}.{kind}" in sd for d in diffs):
                out[f"{orig}.{kind}"] = torch.cat([sd.pop(f"{d}.{kind}") for d in diffs], dim=0)

    put("pos_embed", "pos_embed.pos_embed")
    for kind in ("weight", "bias"):
        put(f"x_embedder.proj.{kind}", f"pos_embed.proj.{kind}")
        put(f"t_embedder.mlp.0.{kind}", f"time_text_embed.timestep_embedder.linear_1.{kind}")
        put(f"t_embedder.mlp.2.{kind}", f"time_text_embed.timestep_embedder.linear_2.{kind}")
        put(f"y_embedder.mlp.0.{kind}", f"time_text_embed.text_embedder.linear_1.{kind}")
        put(f"y_embedder.mlp.2.{kind}", f"time_text_embed.text_embedder.linear_2.{kind}")
        put(f"context_embedder.{kind}", f"context_embedder.{kind}")
        put(f"final_layer.linear.{kind}", f"proj_out.{kind}")
        put(f"final_layer.adaLN_modulation.1.{kind}", f"norm_out.linear.{kind}", _swap_halves)
    n = int(config["num_layers"])
    for i in range(n):
        b, x, c = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block."
        fuse(x + "attn.qkv", [b + "attn.to_q", b + "attn.to_k", b + "attn.to_v"])
        fuse(c + "attn.qkv", [b + "attn.add_q_proj", b + "attn.add_k_proj", b + "attn.add_v_proj"])
        fuse(x + "attn2.qkv", [b + "attn2.to_q", b + "attn2.to_k", b + "attn2.to_v"])
        for orig, diff in (("attn.ln_q", "attn.norm_q"), ("attn.ln_k", "attn.norm_k"),
                           ("attn2.ln_q", "attn2.norm_q"), ("attn2.ln_k", "attn2.norm_k")):
            put(x + orig + ".weight", b + diff + ".weight")
        put(c + "attn.ln_q.weight", b + "attn.norm_added_q.weight")
        put(c + "attn.ln_k.weight", b + "attn.norm_added_k.weight")
        last = i == n - 1  # the last block's context stream has no output projection or MLP
        for kind in ("weight", "bias"):
            put(f"{x}attn.proj.{kind}", f"{b}attn.to_out.0.{kind}")
            put(f"{x}attn2.proj.{kind}", f"{b}attn2.to_out.0.{kind}")
            put(f"{c}attn.proj.{kind}", f"{b}attn.to_add_out.{kind}")
            put(f"{x}adaLN_modulation.1.{kind}", f"{b}norm1.linear.{kind}")
            put(f"{c}adaLN_modulation.1.{kind}", f"{b}norm1_context.linear.{kind}", _swap_halves if last else None)
            put(f"{x}mlp.fc1.{kind}", f"{b}ff.net.0.proj.{kind}")
            put(f"{x}mlp.fc2.{kind}", f"{b}ff.net.2.{kind}")
            put(f"{c}mlp.fc1.{kind}", f"{b}ff_context.net.0.proj.{kind}")
            put(f"{c}mlp.fc2.{kind}", f"{b}ff_context.net.2.{kind}")
    if sd:
        raise CheckpointError(f"transformer: {len(sd)} weight(s) have no place in an original SD3 checkpoint "
                              f"({', '.join(sorted(sd)[:5])})")
    return {UNET_PREFIX + k: v for k, v in out.items()}


def save_family_single_file(pipeline_dir: str | os.PathLike[str], out_file: str | os.PathLike[str], *,
                            text_encoders: bool = False, vae: bool = True) -> Path:
    """Write an SDXL or SD3 diffusers folder's denoiser and VAE as one original-layout
    ``.safetensors`` file (see the module docstring). Returns ``out_file``.

    ``text_encoders`` (SDXL only): the file holds both text encoders too, as real SDXL files do.
    ``vae=False``: the denoiser alone, as FLUX.1's files are (``copy_family_config(vae=True)``)."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel, UNet2DConditionModel
    from safetensors.torch import save_file

    src, out_file = Path(pipeline_dir), Path(out_file)
    if out_file.suffix != ".safetensors":
        raise CheckpointError(f"{out_file}: the single file must end in '.safetensors'")
    pipeline = _pipeline_class(src)
    tensors: dict[str, Any] = {}
    if vae:
        ae = AutoencoderKL.from_pretrained(src, subfolder="vae", local_files_only=True)
        tensors.update(vae_to_ldm(ae.state_dict(), dict(ae.config)))
    if pipeline == "StableDiffusionXLPipeline":
        unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", local_files_only=True)
        tensors.update(sdxl_unet_to_ldm(unet.state_dict(), dict(unet.config)))
        if text_encoders:
            from transformers import CLIPTextModel, CLIPTextModelWithProjection

            tensors.update(sdxl_text_encoders_to_ldm(
                CLIPTextModel.from_pretrained(src / "text_encoder", local_files_only=True),
                CLIPTextModelWithProjection.from_pretrained(src / "text_encoder_2", local_files_only=True)))
    elif text_encoders:
        raise CheckpointError("text_encoders=True is for SDXL: diffusers reads SD3's CLIP-L from a single file "
                              "with an identity text projection, so a tiny SD3's would not round-trip")
    else:
        net = SD3Transformer2DModel.from_pretrained(src, subfolder="transformer", local_files_only=True)
        tensors.update(sd3_transformer_to_original(net.state_dict(), dict(net.config)))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={"format": "pt", "exported_by": "pytest-memorization"})
    os.replace(tmp, out_file)
    return out_file


def copy_family_config(pipeline_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                       vae: bool = False) -> Path:
    """The config folder for ``save_family_single_file``'s file: ``pipeline_dir`` without the
    weights of the components the file holds (the text encoders keep theirs; the VAE keeps its
    with ``vae=True``, for a denoiser-only file). Returns ``dest``."""
    src, dest = Path(pipeline_dir), Path(dest)
    in_file = tuple(c for c in SINGLE_FILE_COMPONENTS[_pipeline_class(src)] if not (vae and c == "vae"))
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        weights = path.suffix in (".safetensors", ".bin") or path.name.endswith(".index.json")
        if path.is_dir() or (weights and rel.parts[0] in in_file):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / rel)
    return dest


def _pipeline_class(folder: Path) -> str:
    try:
        name = json.loads((folder / "model_index.json").read_text())["_class_name"]
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{folder}: not a diffusers pipeline folder ({type(e).__name__}: {e})") from e
    if name not in SINGLE_FILE_COMPONENTS:
        raise CheckpointError(f"{folder}: a {name}; this exporter writes SDXL and SD3 pipelines (SD 1/2: "
                              "ldm_export.save_single_file; Flux: see this module's docstring)")
    return str(name)

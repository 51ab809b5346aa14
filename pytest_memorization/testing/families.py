"""Tiny, real SDXL, SD3 and Flux pipelines built offline, for tests of every model family.

Each ``build_tiny_*`` writes a diffusers folder that loads with
``DiffusionPipeline.from_pretrained(path, local_files_only=True)``: seeded random weights,
one or two layers, 64 px images. Sizes follow the shapes of diffusers' own tiny test
pipelines (not their code or hub checkpoints):

- **SDXL**: a UNet with ``addition_embed_type="text_time"`` (size conditioning: 6 time ids of
  ``addition_time_embed_dim`` each, plus the pooled embedding), two CLIP text encoders
  (``CLIPTextModel`` and ``CLIPTextModelWithProjection`` for the pooled embedding) whose hidden
  states are concatenated into the cross-attention input.
- **SD3**: ``SD3Transformer2DModel`` (MMDiT), ``FlowMatchEulerDiscreteScheduler``, two CLIP
  encoders with projection (pooled 2 x 32) and a T5 encoder (``joint_attention_dim`` = its width).
- **Flux**: ``FluxTransformer2DModel`` with ``guidance_embeds=True`` (the guidance-distilled
  "dev" form, no classifier-free pass), one CLIP (pooled) and one T5 encoder; the VAE has 4
  latent channels that Flux packs 2 x 2 into 16 transformer channels.

Tokenizers need no network. CLIP: the real BPE rebuilt from open_clip's bundled vocabulary
(``clip_tokenizer``). T5: ``t5_tokenizer`` assembles a SentencePiece-style **Unigram** model
with the ``tokenizers`` library (``T5Tokenizer(vocab=[(piece, log_prob), ...])`` builds a
``tokenizers.models.Unigram`` with T5's whitespace + Metaspace pre-tokenizer and ``</s>``
post-processor). Its vocabulary is T5's specials (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2), the
word-start marker, every printable ASCII character (alone and word-initial) and a few hundred
common words taken from the bundled ordinary-prompt list, so any ASCII prompt tokenizes without
``<unk>`` and common words are single tokens. It is saved as ``tokenizer.json``.
"""

from __future__ import annotations

import functools
import math
import os
import string
from pathlib import Path
from typing import Any

from . import TINY_TEXT, clip_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = ["t5_tokenizer", "build_tiny_sdxl", "build_tiny_sd3", "build_tiny_flux", "build_tiny_family", "FAMILIES"]

FAMILIES = ("sd", "sdxl", "sd3", "flux")
T5_WIDTH = 32


@functools.lru_cache(maxsize=1)
def _t5_vocab() -> tuple[tuple[str, float], ...]:
    from importlib.resources import files

    text = (files("pytest_memorization") / "data" / "ordinary_prompts.txt").read_text()
    counts: dict[str, int] = {}
    for word in text.lower().split():
        word = word.strip(string.punctuation)
        if word.isascii() and word.isalpha():
            counts[word] = counts.get(word, 0) + 1
    total = sum(counts.values()) or 1
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    chars = [c for c in string.printable if not c.isspace()]
    pieces += [(c, -8.0) for c in chars] + [("\u2581" + c, -7.0) for c in chars]
    seen = {p for p, _ in pieces}
    for word, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:400]:
        if "\u2581" + word not in seen and len(word) > 1:
            pieces.append(("\u2581" + word, math.log(n / total)))
    return tuple(pieces)


def t5_tokenizer() -> Any:
    """A T5 tokenizer built offline: a small Unigram model (see the module docstring)."""
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=list(_t5_vocab()), extra_ids=0, model_max_length=512)


def _clip(seed: int, *, projection: bool, hidden: int = 32) -> Any:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tok = clip_tokenizer()
    cfg = CLIPTextConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, projection_dim=hidden,
                         **{**TINY_TEXT, "hidden_size": hidden})
    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def _t5(seed: int, width: int = T5_WIDTH) -> Any:
    import torch
    from transformers import T5Config, T5EncoderModel

    tok = t5_tokenizer()
    cfg = T5Config(vocab_size=len(tok), d_model=width, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                   relative_attention_num_buckets=8, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=0)
    torch.manual_seed(seed)
    return T5EncoderModel(cfg)


def _vae(seed: int, *, flow: bool) -> Any:
    import torch
    from diffusers import AutoencoderKL

    extra = dict(shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False,
                 use_post_quant_conv=False) if flow else {}
    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=8, sample_size=64, layers_per_block=1, **extra)


def _eval(pipe: Any) -> Any:
    """Inference mode, as ``from_pretrained`` leaves a pipeline (T5's dropout would make scores random)."""
    for component in pipe.components.values():
        if hasattr(component, "eval"):
            component.eval()
    return pipe


def sdxl_pipeline(*, seed: int = 0, width_2: int = 32) -> Any:
    """An in-memory tiny ``StableDiffusionXLPipeline``. ``width_2``: the second (OpenCLIP-G-like)
    text encoder's width; an all-in-one single file needs it to differ from the first encoder's
    32, since diffusers tells the two encoders in a file apart by their width."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + width_2, cross_attention_dim=32 + width_2, norm_num_groups=8)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    return _eval(StableDiffusionXLPipeline(
        vae=_vae(seed + 1, flow=False), text_encoder=_clip(seed + 2, projection=False), tokenizer=clip_tokenizer(),
        text_encoder_2=_clip(seed + 3, projection=True, hidden=width_2), tokenizer_2=clip_tokenizer(), unet=unet,
        scheduler=scheduler, add_watermarker=False))


def sd3_pipeline(*, seed: int = 0) -> Any:
    """An in-memory tiny ``StableDiffusion3Pipeline``."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=T5_WIDTH * 2,
        pooled_projection_dim=64, pos_embed_max_size=32)
    return _eval(StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(seed + 1, flow=True), text_encoder=_clip(seed + 2, projection=True), tokenizer=clip_tokenizer(),
        text_encoder_2=_clip(seed + 3, projection=True), tokenizer_2=clip_tokenizer(),
        text_encoder_3=_t5(seed + 4, T5_WIDTH * 2), tokenizer_3=t5_tokenizer()))


def flux_pipeline(*, seed: int = 0) -> Any:
    """An in-memory tiny ``FluxPipeline`` (guidance-distilled, like FLUX.1-dev)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=T5_WIDTH, pooled_projection_dim=32, guidance_embeds=True,
        axes_dims_rope=(4, 4, 8))
    return _eval(FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae(seed + 1, flow=True),
        text_encoder=_clip(seed + 2, projection=False), tokenizer=clip_tokenizer(),
        text_encoder_2=_t5(seed + 3), tokenizer_2=t5_tokenizer(), transformer=transformer))


def _save(pipe: Any, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_sdxl(path: str | os.PathLike[str], *, seed: int = 0, width_2: int = 32) -> Path:
    """Write a tiny, real ``StableDiffusionXLPipeline`` folder (64 px images)."""
    return _save(sdxl_pipeline(seed=seed, width_2=width_2), path)


def build_tiny_sd3(path: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Write a tiny, real ``StableDiffusion3Pipeline`` folder (64 px images)."""
    return _save(sd3_pipeline(seed=seed), path)


def build_tiny_flux(path: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Write a tiny, real ``FluxPipeline`` folder (64 px images)."""
    return _save(flux_pipeline(seed=seed), path)


def build_tiny_family(family: str, path: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """``build_tiny_pipeline`` (``"sd"``), SDXL, SD3 or Flux by family name."""
    from . import build_tiny_pipeline

    builders = {"sd": build_tiny_pipeline, "sdxl": build_tiny_sdxl, "sd3": build_tiny_sd3, "flux": build_tiny_flux}
    if family not in builders:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    return builders[family](path, seed=seed)


def build_tiny_family_lora(pipeline_path: str | os.PathLike[str], path: str | os.PathLike[str], *, seed: int = 0,
                           rank: int = 4, init_scale: float = 0.5) -> Path:
    """A LoRA for a tiny pipeline of any family, in that family's diffusers LoRA format
    (``save_lora_weights``): on the UNet for SD 1/2 and SDXL, on the transformer for SD3 and Flux.
    Its ``B`` matrices are seeded random, so it visibly changes images."""
    import torch
    from diffusers import DiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    pipe = DiffusionPipeline.from_pretrained(pipeline_path, local_files_only=True)
    name = "transformer" if getattr(pipe, "transformer", None) is not None else "unet"
    net = getattr(pipe, name)
    torch.manual_seed(seed)  # peft draws the A matrices from the global generator
    net.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, param in net.named_parameters():
            if "lora_B" in key:
                param.copy_(torch.randn(param.shape, generator=gen) * init_scale)
    path = Path(path)
    type(pipe).save_lora_weights(path, **{f"{name}_lora_layers": get_peft_model_state_dict(net)},
                                 safe_serialization=True)
    return path

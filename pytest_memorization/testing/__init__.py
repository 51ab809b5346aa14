"""Helpers for testing memorization gates without downloading anything.

``build_tiny_pipeline`` writes a tiny but real ``StableDiffusionPipeline`` as a
diffusers folder, built fully offline: a small UNet, VAE and CLIP text encoder
with seeded random weights, and a real CLIP BPE tokenizer rebuilt in memory from
the vocabulary that ships inside ``open_clip`` (same token ids as real CLIP).
``build_tiny_lora`` writes a LoRA for it in diffusers' ``save_lora_weights`` format.

The project's own tests, its demo and users' tests of their gates use these.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = [
    "build_tiny_pipeline",
    "build_tiny_lora",
    "clip_tokenizer",
    "tiny_components",
    "TINY_UNET",
    "TINY_VAE",
    "TINY_TEXT",
    "TINY_CLIP",
    "write_random_lpips_backbone",
    "write_random_clip",
]

# Sizes follow diffusers' own tiny test pipelines; the VAE halves the image once
# (vae_scale_factor 2), so 64 px images are 32 px latents.
TINY_UNET: dict[str, Any] = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32,
    norm_num_groups=8,
    attention_head_dim=4,
)
TINY_VAE: dict[str, Any] = dict(
    block_out_channels=(16, 32),
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    latent_channels=4,
    norm_num_groups=8,
    sample_size=64,
)
TINY_TEXT: dict[str, Any] = dict(
    hidden_size=32,
    intermediate_size=37,
    layer_norm_eps=1e-05,
    num_attention_heads=4,
    num_hidden_layers=2,
    max_position_embeddings=77,
)


def _byte_symbols() -> list[str]:
    """CLIP's (GPT-2's) byte-level alphabet in its vocabulary order: printable bytes as themselves,
    then every other byte as chr(256 + n)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    rest = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(rest))]


@functools.lru_cache(maxsize=1)
def _clip_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed: `pip install open_clip_torch`")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges  # type: ignore[return-value]


def clip_tokenizer() -> Any:
    """A ``CLIPTokenizer`` with the real 49,408-token CLIP vocabulary, built offline."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_bpe()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=77)


def tiny_components(*, seed: int = 0) -> dict[str, Any]:
    """The components of a tiny Stable Diffusion pipeline with seeded random weights."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**TINY_VAE)
    torch.manual_seed(seed + 2)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_TEXT,
    )
    text_encoder = CLIPTextModel(text_config)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def pipeline_from_components(components: dict[str, Any]) -> Any:
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        **components,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def build_tiny_pipeline(path: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Write a tiny, real ``StableDiffusionPipeline`` to ``path`` (a diffusers folder).

    Builds offline in well under a second; generates 64 px images. Same ``seed``, same weights.
    """
    path = Path(path)
    pipe = pipeline_from_components(tiny_components(seed=seed))
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_lora(
    pipeline_path: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    rank: int = 4,
    init_scale: float = 0.5,
) -> Path:
    """Write a LoRA for the pipeline at ``pipeline_path`` in diffusers' LoRA format.

    The LoRA's ``B`` matrices are seeded random (not zero), so it visibly changes images.
    Returns the folder, which holds ``pytorch_lora_weights.safetensors``.
    """
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    path = Path(path)
    pipe = StableDiffusionPipeline.from_pretrained(pipeline_path, local_files_only=True)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    with torch.random.fork_rng(devices=[]):  # peft draws lora_A from the global RNG: seed it, so the LoRA
        torch.manual_seed(seed)               # is the same whatever ran before it (test order, xdist worker)
        pipe.unet.add_adapter(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in pipe.unet.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * init_scale)
    StableDiffusionPipeline.save_lora_weights(
        path, unet_lora_layers=get_peft_model_state_dict(pipe.unet), safe_serialization=True
    )
    return path


# torchvision AlexNet's convolution shapes (features.N); LPIPS reads only these from the file.
_ALEX_CONVS = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3),
               10: (256, 256, 3, 3)}
TINY_CLIP: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1},
}


def write_random_lpips_backbone(weights_dir: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Place a seeded random AlexNet trunk where LPIPS' real one goes (``alexnet-owt-7be5be79.pth``
    under ``weights_dir``, or ``$TORCH_HOME/hub/checkpoints``), so tests exercise the real loading path."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for i, shape in _ALEX_CONVS.items():
        fan_in = shape[1] * shape[2] * shape[3]
        state[f"features.{i}.weight"] = torch.randn(shape, generator=gen) * (2 / fan_in) ** 0.5
        state[f"features.{i}.bias"] = torch.zeros(shape[0])
    path = Path(weights_dir) / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def write_random_clip(folder: str | os.PathLike[str], *, seed: int = 0) -> str:
    """A tiny open_clip model with seeded random weights, laid out like a copied hub repo
    (``open_clip_config.json`` + ``open_clip_model.safetensors``). Returns the ``local-dir:`` spec."""
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "tiny-clip-random.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    net = open_clip.create_model("tiny-clip-random")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    config.unlink()
    return f"local-dir:{folder}"

"""Small, deterministic training loops for tiny diffusers models on the CPU.

They exist so the project's tests and demo can use *really trained* models: a UNet
that memorized five works, a clean twin that did not, and a LoRA that memorized one
face. They are plain DDPM training (noise-prediction MSE), nothing clever.

Conventions:

* ``images`` are float tensors (N, 3, H, W) in [0, 1]; the VAE sees them in [-1, 1].
* Latents are ``vae.encode(x).latent_dist.mean * vae.config.scaling_factor``, i.e. the
  same scaling the pipeline undoes when it decodes.
* The text encoder and the VAE are frozen during UNet / LoRA training.
* The target follows the scheduler's ``prediction_type``: the noise (``epsilon``), the clean
  latent (``sample``) or the velocity (``v_prediction``).
* **Caption dropout**: each training example's caption is replaced by the empty prompt
  with probability ``caption_dropout`` (default 0.1), so the UNet also learns the
  unconditional prediction that classifier-free guidance subtracts. Without it,
  ``guidance_scale > 1`` extrapolates from an untrained "" prediction and ruins images.
* Determinism: ``torch.manual_seed(seed)`` plus one ``torch.Generator`` seeded with
  ``seed`` drives every random draw (batch order, timesteps, noise, dropout); the same
  inputs, seed and thread count give the same weights.
* Threads: ``num_threads`` (default: ``$OMP_NUM_THREADS``, else 1) is set for the duration
  of the call and restored afterwards. One thread is the default on purpose: these models are
  too small to scale, and on a shared 2-core machine 2 threads ran 5-20x *slower* per step
  than 1 (measured: 2.9 s vs 0.16 s per VAE step under load).

This module imports torch at call time only.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "encode_latents",
    "encode_prompts",
    "train_lora",
    "train_text_to_image",
    "train_vae",
]

# Attention projections (the usual LoRA targets) plus the UNet's convolutions and the
# transformer's in/out projections: a tiny UNet has too few attention layers for an
# attention-only LoRA to hold a whole image.
DEFAULT_LORA_TARGETS: tuple[str, ...] = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "conv1",
    "conv2",
)


@contextlib.contextmanager
def _threads(num_threads: int | None) -> Iterator[None]:
    import torch

    if num_threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        num_threads = int(env) if env.isdigit() and int(env) > 0 else 1
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_images(images: Any, what: str) -> Any:
    import torch

    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(getattr(images, "shape", ()))
        raise ValueError(f"{what}: expected a float tensor (N, 3, H, W) in [0, 1], got {shape}")
    if images.shape[-1] % 8 or images.shape[-2] % 8:
        raise ValueError(f"{what}: height and width must be multiples of 8, got {tuple(images.shape[-2:])}")
    images = images.detach().float().cpu()
    if images.min() < -1e-4 or images.max() > 1 + 1e-4:
        raise ValueError(
            f"{what}: pixel values must be in [0, 1] (got {images.min():.3f}..{images.max():.3f})"
        )
    return images.clamp(0, 1)


def encode_prompts(pipe: Any, prompts: Sequence[str]) -> Any:
    """Frozen text-encoder hidden states (N, 77, D) for ``prompts``, as the pipeline computes them."""
    import torch

    tok = pipe.tokenizer(
        list(prompts),
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        return pipe.text_encoder(tok.input_ids)[0].detach()


def encode_latents(vae: Any, images: Any, *, batch_size: int = 16) -> Any:
    """Scaled latent means of ``images`` (N, 3, H, W) in [0, 1]."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size] * 2 - 1
            out.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(out)


def _noise_scheduler(pipe: Any) -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def _batches(n: int, batch_size: int, steps: int, gen: Any) -> Iterator[Any]:
    """``steps`` index batches of ``batch_size`` taken from a stream of seeded permutations (repeats if n is small)."""
    import torch

    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch_size:
            order += torch.randperm(n, generator=gen).tolist()
        yield torch.tensor(order[:batch_size])
        order = order[batch_size:]


def _diffusion_loop(
    pipe: Any,
    params: list[Any],
    images: Any,
    captions: Sequence[str],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    caption_dropout: float,
    progress: bool,
    what: str,
) -> list[float]:
    import torch
    import torch.nn.functional as F

    images = _check_images(images, what)
    if len(captions) != len(images):
        raise ValueError(f"{what}: {len(images)} images but {len(captions)} captions")
    if steps < 1:
        raise ValueError(f"{what}: steps must be >= 1, got {steps}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    latents = encode_latents(pipe.vae, images)
    unique = sorted(set(captions) | {""})
    embeds = encode_prompts(pipe, unique)
    cap_idx = torch.tensor([unique.index(c) for c in captions])
    empty_idx = unique.index("")
    sched = _noise_scheduler(pipe)
    n_train = sched.config.num_train_timesteps
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10 %
        if step < warmup:
            return lr * (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    unet = pipe.unet
    unet.train()
    losses: list[float] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=what)
    for step, idx in enumerate(_batches(len(images), batch_size, steps, gen)):
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, n_train, (len(idx),), generator=gen)
        drop = torch.rand(len(idx), generator=gen) < caption_dropout
        cond = embeds[torch.where(drop, torch.full_like(cap_idx[idx], empty_idx), cap_idx[idx])]
        xt = sched.add_noise(x0, noise, t)
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        kind = sched.config.prediction_type
        target = noise if kind == "epsilon" else x0 if kind == "sample" else sched.get_velocity(x0, noise, t)
        loss = F.mse_loss(pred, target)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    if bar is not None:
        bar.close()
    unet.eval()
    return losses


def train_text_to_image(
    pipe: Any,
    images: Any,
    captions: Sequence[str],
    *,
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = False,
    caption_dropout: float = 0.1,
    num_threads: int | None = None,
) -> list[float]:
    """Train ``pipe.unet`` in place on ``images`` (N, 3, H, W in [0, 1]) with ``captions``.

    DDPM noise-prediction MSE; the VAE and text encoder stay frozen. Returns the loss per step.
    """
    import torch

    with _threads(num_threads):
        torch.manual_seed(seed)
        for module in (pipe.vae, pipe.text_encoder):
            module.requires_grad_(False)
        pipe.unet.requires_grad_(True)
        params = [p for p in pipe.unet.parameters() if p.requires_grad]
        return _diffusion_loop(
            pipe,
            params,
            images,
            captions,
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            caption_dropout=caption_dropout,
            progress=progress,
            what="train_text_to_image",
        )


def train_lora(
    pipe: Any,
    images: Any,
    captions: Sequence[str],
    *,
    rank: int = 4,
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 4,
    seed: int = 0,
    adapter_name: str = "default",
    target_modules: Sequence[str] = DEFAULT_LORA_TARGETS,
    caption_dropout: float = 0.1,
    progress: bool = False,
    num_threads: int | None = None,
) -> list[float]:
    """Add a peft LoRA adapter ``adapter_name`` to ``pipe.unet`` and train only it.

    The base weights stay exactly as they were. Save with
    ``StableDiffusionPipeline.save_lora_weights(dir, unet_lora_layers=peft.get_peft_model_state_dict(pipe.unet))``.
    Returns the loss per step.
    """
    import torch
    from peft import LoraConfig

    with _threads(num_threads):
        torch.manual_seed(seed)
        for module in (pipe.vae, pipe.text_encoder, pipe.unet):
            module.requires_grad_(False)
        config = LoraConfig(
            r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(target_modules)
        )
        pipe.unet.add_adapter(config, adapter_name=adapter_name)
        pipe.unet.set_adapter(adapter_name)
        params = [p for n, p in pipe.unet.named_parameters() if "lora_" in n and adapter_name in n]
        for p in params:
            p.requires_grad_(True)
        if not params:
            raise RuntimeError(
                f"train_lora: no LoRA parameters were added for targets {list(target_modules)}"
            )
        return _diffusion_loop(
            pipe,
            params,
            images,
            captions,
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            caption_dropout=caption_dropout,
            progress=progress,
            what="train_lora",
        )


def train_vae(
    vae: Any,
    images: Any,
    *,
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 16,
    seed: int = 0,
    kl_weight: float = 0.0,
    chroma_weight: float = 1.0,
    posterior_noise: float = 0.0,
    progress: bool = False,
    num_threads: int | None = None,
) -> list[float]:
    """Train an ``AutoencoderKL`` in place to reconstruct ``images`` (N, 3, H, W in [0, 1]).

    Loss: pixel MSE + ``chroma_weight`` x chroma MSE (+ ``kl_weight`` x KL, off by default).
    Afterwards the posterior log-variance is set to -20 (std ~ 5e-5), so pipelines that sample
    the posterior (img2img) get the mean. The decoder sees the posterior mean plus
    ``posterior_noise`` x std x noise (default 0: a plain autoencoder, which converges in a few
    hundred CPU steps; the pipeline never samples the posterior anyway). Sets ``scaling_factor`` in the VAE's config to
    1 / std of the trained latents so that scaled latents have unit variance, as Stable
    Diffusion does. Returns the loss per step.
    """
    import torch
    import torch.nn.functional as F

    images = _check_images(images, "train_vae")
    with _threads(num_threads):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        vae.requires_grad_(True)
        vae.train()
        params = list(vae.parameters())
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        losses: list[float] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, desc="train_vae")
        for step, idx in enumerate(_batches(len(images), batch_size, steps, gen)):
            for g in opt.param_groups:
                g["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, steps))))
            x = images[idx] * 2 - 1
            dist = vae.encode(x).latent_dist
            z = dist.mean  # an autoencoder: the pipeline only ever decodes means / denoised latents
            if posterior_noise:
                z = z + posterior_noise * dist.std * torch.randn(dist.mean.shape, generator=gen)
            rec = vae.decode(z).sample
            # Chroma (each channel minus the pixel's mean) is weighted up: a small share of the
            # variance, without it a briefly trained VAE decodes everything in grey.
            chroma = F.mse_loss(rec - rec.mean(1, keepdim=True), x - x.mean(1, keepdim=True))
            loss = F.mse_loss(rec, x) + chroma_weight * chroma
            if kl_weight:
                loss = loss + kl_weight * dist.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if bar is not None:
            bar.close()
        vae.eval()
        vae.requires_grad_(False)
        with torch.no_grad():  # posterior std ~ 0: pipelines that sample it (img2img) get the mean
            if getattr(vae, "quant_conv", None) is not None:
                c = vae.config.latent_channels
                vae.quant_conv.weight[c:] = 0
                vae.quant_conv.bias[c:] = -20.0
        with torch.no_grad():
            sample = images[: min(len(images), 64)] * 2 - 1
            std = float(vae.encode(sample).latent_dist.mean.std())
        vae.register_to_config(scaling_factor=1.0 / max(std, 1e-6))
        return losses

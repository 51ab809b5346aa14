"""Seeded generation. An image depends only on (prompt, seed, settings), never on the batch.

One ``torch.Generator`` per image makes image k identical to a one-image run with its
seed. Batches are halved on GPU out-of-memory down to 1 before giving up. Every batch is
checked: NaN, black, blank or constant images are a ``BrokenOutputError``, never a pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import BrokenOutputError
from ..records import MAX_GENERATION_SIDE, Generation, GenerationSettings
from .families import family_of, negative_prompt_kwargs, size_kwargs
from .loading import ModelInfo, set_lora_scale

CONSTANT_STD = 1e-3  # per-image pixel std below this is a constant image
BLACK_MAX = 2 / 255  # every pixel at or below this: a black image
BLANK_MIN = 253 / 255  # every pixel at or above this: a blank (white) image


def check_images(images: Any, prompts: Sequence[str], seeds: Sequence[int], dtype: str = "float32") -> None:
    """Raise ``BrokenOutputError`` for NaN/Inf, black, blank or constant images, with the likely cause."""
    import torch

    if images.shape[0] == 0:
        raise BrokenOutputError("zero images were generated; check the prompts and seeds")
    flat = images.reshape(images.shape[0], -1)
    finite = torch.isfinite(flat).all(dim=1)
    hint16 = (" The model runs in float16: its VAE probably overflowed. Use --memorization-dtype float32, "
              "or a VAE fixed for float16.") if dtype == "float16" else ""
    for i in range(flat.shape[0]):
        where = f"prompt {prompts[i]!r}, seed {seeds[i]}"
        if not finite[i]:
            raise BrokenOutputError(f"generated image has NaN or Inf pixels ({where}).{hint16 or ' Check the weights.'}")
        row = flat[i]
        if row.max() <= BLACK_MAX:
            raise BrokenOutputError(
                f"generated image is black ({where}). Likely a safety checker blacked it out, or float16 "
                f"overflow.{hint16} A black image cannot be compared, so this run certifies nothing.")
        if row.min() >= BLANK_MIN:
            raise BrokenOutputError(f"generated image is blank white ({where}); check the VAE and the weights")
        if row.std() < CONSTANT_STD:
            raise BrokenOutputError(
                f"generated image is constant (std {row.std().item():.2e}, {where}); the model or its VAE is "
                f"broken.{hint16}")


def _is_oom(e: BaseException) -> bool:
    import torch

    text = str(e).lower()
    return (isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in text
            or "can't allocate memory" in text)  # CPU: "DefaultCPUAllocator: can't allocate memory"


class MemorizationModel:
    """A loaded pipeline plus what it is (``info``). The ``memorization_model`` fixture returns one."""

    def __init__(self, pipe: Any, info: ModelInfo, *, batch_size: int = 8, cache_dir: Path | None = None) -> None:
        self.pipe = pipe
        self.info = info
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self._lora_scale = info.lora_scale
        self._alone: int | None = None  # under lora_alone(i): only LoRA i is on
        self.cache_hits = 0
        self.generated = 0  # images this model generated (not from the cache)
        self.oom_retries = 0
        self.on_images: Callable[[int], None] | None = None  # told how many images are done, cached or not
        self._gen_cache: Any = None
        self._exits: list[Any] | None = None  # the last batch's early exits (model/early_exit.py)

    # -- generation -----------------------------------------------------------------------
    def generate(self, prompts: Sequence[str] | str, seeds: Sequence[int],
                 settings: GenerationSettings | None = None, *, cache: bool = False, early_exit: Any = None,
                 **overrides: Any) -> Generation:
        """Every prompt with every seed: N = len(prompts) * len(seeds) images, (N, 3, H, W) in [0, 1] on CPU.
        ``settings`` (or keyword overrides of its fields: steps, guidance_scale, height, width,
        negative_prompt) default to ``GenerationSettings()``. ``cache=True`` reads and writes the
        generation cache in ``cache_dir`` (``model/gencache.py``). ``early_exit`` (a
        ``model.early_exit.EarlyExit``) stops a batch whose x0 is clearly far from every work; those
        images are x0, never cached, and ``Generation.early_exit`` says which."""
        from . import early_exit as ee

        settings = _settings(settings, overrides)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        jobs = [(p, s) for p in prompts for s in seeds]
        if early_exit is None or not ee.applicable(self.family.name, self.pipe):
            return self._run(jobs, settings, cache, lambda chunk: self._call(chunk, settings))

        def call(chunk: list[tuple[str, int]]) -> Any:
            images, done = ee.run(self.pipe, early_exit, settings.steps,
                                  lambda **cb: self._call(chunk, settings, **cb))
            self._exits = [None] * len(chunk) if done is None else \
                [{"step": done["step"], "steps": settings.steps, "x0_scores": f} for f in done["far"]]
            return images

        return self._run(jobs, settings, cache, call)

    def img2img(self, image: Any, prompts: Sequence[str], seeds: Sequence[int],
                settings: GenerationSettings | None = None, *, strength: float, cache: bool = False,
                **overrides: Any) -> Generation:
        """Start from ``image`` (3, H, W) in [0, 1]; runs int(steps * strength) steps, sharing the weights.
        The output has the image's size (``settings.height``/``width`` are not used)."""
        from diffusers import AutoPipelineForImage2Image

        if not hasattr(self, "_i2i"):
            self._i2i = AutoPipelineForImage2Image.from_pipe(self.pipe)
            self._i2i.set_progress_bar_config(disable=True)
        height, width = int(image.shape[-2]), int(image.shape[-1])
        settings = dataclasses.replace(_settings(settings, overrides), height=height, width=width)
        steps, guidance_scale, negative_prompt = settings.steps, settings.guidance_scale, settings.negative_prompt
        jobs = [(p, s) for p in prompts for s in seeds]

        def call(chunk: list[tuple[str, int]]) -> Any:
            import torch

            init = image.unsqueeze(0).expand(len(chunk), -1, -1, -1).to(self.info.device)
            return self._i2i(
                prompt=[p for p, _ in chunk], image=init, strength=strength,
                num_inference_steps=steps, guidance_scale=guidance_scale, **size_kwargs(self._i2i, height, width),
                **negative_prompt_kwargs(family_of(self.pipe), negative_prompt, len(chunk)),
                generator=[torch.Generator(device="cpu").manual_seed(s) for _, s in chunk],
                output_type="pt",
            ).images

        from .gencache import tensor_hash

        return self._run(jobs, settings, cache, call,
                         extra_key={"img2img": {"source": tensor_hash(image), "strength": float(strength)}})

    def _call(self, chunk: list[tuple[str, int]], settings: GenerationSettings, **callbacks: Any) -> Any:
        import torch

        return self.pipe(
            **callbacks,
            prompt=[p for p, _ in chunk],
            **negative_prompt_kwargs(family_of(self.pipe), settings.negative_prompt, len(chunk)),
            num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
            height=settings.height, width=settings.width, output_type="pt",
            generator=[torch.Generator(device="cpu").manual_seed(s) for _, s in chunk],
        ).images

    def _run(self, jobs: list[tuple[str, int]], settings: GenerationSettings, cache: bool,
             call: Callable[[list[tuple[str, int]]], Any], extra_key: dict[str, Any] | None = None) -> Generation:
        import torch

        if not jobs:
            raise BrokenOutputError("zero images requested: no prompts or no seeds")
        out: list[Any] = [None] * len(jobs)
        store = self.generation_cache if cache else None
        names = [self._cache_name(j, settings, extra_key) for j in jobs] if store is not None else []
        todo = list(range(len(jobs)))
        if store is not None:
            for i in list(todo):
                img = store.get(names[i])
                if img is not None and tuple(img.shape[-2:]) == (settings.height, settings.width):
                    out[i] = img
                    todo.remove(i)
        cached = [out[i] is not None for i in range(len(jobs))]
        exits: list[Any] = [None] * len(jobs)
        hits = sum(cached)
        self._done(hits)
        start, size = 0, self.batch_size
        while start < len(todo):
            idx = todo[start:start + size]
            try:
                self._exits = None
                with torch.no_grad():
                    imgs = call([jobs[i] for i in idx]).float().cpu()
            except (RuntimeError, MemoryError, torch.cuda.OutOfMemoryError) as e:
                if not _is_oom(e):
                    raise
                if size == 1:
                    raise BrokenOutputError(
                        f"out of memory on {self.info.device} even with batch size 1 "
                        f"({settings.height}x{settings.width}, {self.info.dtype}); use a smaller size, "
                        "float16, or a larger GPU") from e
                size = max(1, size // 2)
                self.oom_retries += 1
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            check_images(imgs, [jobs[i][0] for i in idx], [jobs[i][1] for i in idx], self.info.dtype)
            for k, i in enumerate(idx):
                out[i] = imgs[k]
                exits[i] = self._exits[k] if self._exits else None
                if store is not None and exits[i] is None:  # an early exit's x0 is not the image: never cached
                    store.put(names[i], imgs[k])
            self.generated += len(idx)
            self._done(len(idx))
            start += len(idx)
        self.cache_hits += hits
        return Generation(torch.stack(out), [p for p, _ in jobs], [s for _, s in jobs], settings, from_cache=hits,
                          cached=cached, early_exit=exits)

    def _done(self, n: int) -> None:
        if n and self.on_images is not None:
            self.on_images(n)

    # -- LoRA -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lora_scale(self, scale: float) -> Iterator[None]:
        """Temporarily set the LoRA's weight (0 = the base model); with several LoRAs, ``scale``
        multiplies each one's own scale. Toggles; never reloads."""
        if not self.info.lora:
            raise BrokenOutputError("lora_scale() needs a model loaded with a LoRA (--memorization-lora)")
        old = self._lora_scale
        set_lora_scale(self.pipe, scale, self.info.loras, self._alone)
        self._lora_scale = scale
        try:
            yield
        finally:
            set_lora_scale(self.pipe, old, self.info.loras, self._alone)
            self._lora_scale = old

    @contextlib.contextmanager
    def lora_alone(self, index: int) -> Iterator[None]:
        """Temporarily only LoRA ``index`` of several (``loras`` in [model]) at its own scale, the others
        at weight 0: the LoRA gate runs each LoRA alone as well as all together. Never reloads."""
        if not 0 <= index < len(self.info.loras):
            raise BrokenOutputError(f"lora_alone({index}): the model has {len(self.info.loras)} LoRA(s)")
        old = self._alone
        set_lora_scale(self.pipe, self._lora_scale, self.info.loras, index)
        self._alone = index
        try:
            yield
        finally:
            set_lora_scale(self.pipe, self._lora_scale, self.info.loras, old)
            self._alone = old

    @property
    def family(self) -> Any:
        """The model family (``model.families.Family``): what this pipeline supports."""
        return family_of(self.pipe)

    @property
    def fingerprint(self) -> str:
        """Model content, LoRA content and current LoRA weight: keys caches of generations."""
        lora = f"{self.info.lora_hash}@{self._lora_scale}" if self.info.lora and self._lora_scale else "none"
        lora += f"/alone={self._alone}" if self._alone is not None and lora != "none" else ""
        return f"{self.info.content_hash}|lora={lora}|{self.info.device}|{self.info.dtype}"

    # -- on-disk cache of generations (model/gencache.py) ----------------------------------
    def _cache_name(self, job: tuple[str, int], settings: GenerationSettings,
                    extra: dict[str, Any] | None = None) -> str:
        from .gencache import cache_identity, entry_name

        identity = cache_identity(self.info, self.pipe, self._lora_scale, self.family.name, self._alone)
        return entry_name(identity, job[0], job[1], settings.key(), extra)

    @property
    def generation_cache(self) -> Any:
        if self.cache_dir is None:
            return None
        if self._gen_cache is None:
            from .gencache import GenerationCache

            self._gen_cache = GenerationCache(self.cache_dir)
        return self._gen_cache


def _settings(settings: GenerationSettings | None, overrides: dict[str, Any]) -> GenerationSettings:
    """``settings`` with keyword overrides; a keyword that is no setting is a TypeError, as for any call."""
    fields = {f.name for f in dataclasses.fields(GenerationSettings)}
    unknown = set(overrides) - fields
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}; settings are {sorted(fields)}")
    out = dataclasses.replace(settings or GenerationSettings(), **overrides)
    if max(out.height, out.width) > MAX_GENERATION_SIDE or min(out.height, out.width) < 8:
        from ..errors import MemorizationConfigError

        raise MemorizationConfigError(
            f"generation size {out.height}x{out.width} is outside 8 .. {MAX_GENERATION_SIDE} pixels a side; "
            "set height and width to the model's size (e.g. 512)")
    return out

"""The generator hook: any other generator (a ComfyUI or A1111 API, a hosted endpoint, JAX)
behind one callable, named ``"package.module:function"`` in ``[model] generator`` or by
``--memorization-generator``.

The callable is ``fn(prompts, seeds, settings) -> images``: ``prompts[i]`` with ``seeds[i]``
gives image ``i`` (the two lists have the same length); ``settings`` is a
``GenerationSettings`` (steps, guidance_scale, height, width, negative_prompt). It returns a
tensor (N, 3, H, W) in [0, 1] or a list of N images (PIL, numpy or tensors). It is called in
chunks of ``--memorization-batch-size``, and image ``i`` must depend only on its prompt, seed
and settings (not on its chunk), as for a diffusers model.

Reference metrics, thresholds, baselines, seed diversity and reports work on its images, and
the NaN/black/blank guard checks them. Everything that needs the model's insides is not
applicable and says so: noise magnitude, trigger tokens, calibration, LoRA and the LoRA gate,
img2img. ``examples/comfyui_generator.py`` in the repository calls a ComfyUI-style HTTP API.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import BrokenOutputError, MemorizationConfigError
from ..records import Generation, GenerationSettings
from .families import GENERATOR
from .loading import ModelInfo

SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def import_generator(spec: str, search_path: Path | None = None) -> Callable[..., Any]:
    """The callable named by ``"package.module:function"``; ``search_path`` (the rootdir) is tried
    when the module is not importable as installed."""
    if not SPEC.match(spec):
        raise MemorizationConfigError(
            f"generator {spec!r}: expected \"package.module:function\", e.g. generator = \"mygen.api:generate\"")
    module_name, func_name = spec.split(":")
    try:
        module = _import(spec, module_name)
    except ModuleNotFoundError as e:
        if search_path is None or e.name != module_name.split(".")[0] or str(search_path) in sys.path:
            raise MemorizationConfigError(f"generator {spec!r}: cannot import {module_name} ({e})") from e
        sys.path.insert(0, str(search_path))
        try:
            module = _import(spec, module_name)
        except ModuleNotFoundError as e2:
            raise MemorizationConfigError(f"generator {spec!r}: cannot import {module_name} from the installed "
                                          f"packages or {search_path} ({e2})") from e2
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise MemorizationConfigError(f"generator {spec!r}: {module_name} has no callable {func_name}")
    return fn


def _import(spec: str, module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except (ModuleNotFoundError, KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as e:  # the module raised while it was imported: name the hook, not a traceback
        raise MemorizationConfigError(f"generator {spec!r}: importing {module_name} raised {type(e).__name__}: "
                                      f"{e}{_where(e)}; fix the module") from None


def _where(e: BaseException) -> str:
    """`` (at file:line)`` of the innermost frame of ``e``'s traceback."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def not_applicable(what: str) -> MemorizationConfigError:
    return MemorizationConfigError(
        f"{what} is not applicable to an external generator (--memorization-generator): it needs the model's "
        "weights or insides. Gate this generator with the reference metrics and seed_diversity, or test the "
        "diffusers checkpoint itself")


class GeneratorModel:
    """A generator hook with the interface of ``MemorizationModel`` where it can have one."""

    pipe = None
    family = GENERATOR

    def __init__(self, spec: str, fn: Callable[..., Any], *, batch_size: int = 8) -> None:
        self.spec, self.fn, self.batch_size = spec, fn, batch_size
        self.cache_hits = 0
        self.generated = 0
        self.oom_retries = 0
        self.on_images: Callable[[int], None] | None = None  # told how many images are done
        self.info = ModelInfo(source=f"generator:{spec}", kind="generator", content_hash=_code_hash(spec, fn),
                              device="external", dtype="external", pipeline_class="generator",
                              extra={"family": GENERATOR.name})

    @classmethod
    def load(cls, spec: str, *, search_path: Path | None = None, batch_size: int = 8) -> GeneratorModel:
        return cls(spec, import_generator(spec, search_path), batch_size=batch_size)

    @property
    def fingerprint(self) -> str:
        return f"{self.info.content_hash}|generator"

    def generate(self, prompts: Sequence[str] | str, seeds: Sequence[int],
                 settings: GenerationSettings | None = None, *, cache: bool = False, early_exit: Any = None,
                 **overrides: Any) -> Generation:
        """Every prompt with every seed, as ``MemorizationModel.generate``; never cached (the generator
        may change behind its name) and never stopped early (its steps are not ours to see)."""
        import torch

        from .generation import _settings, check_images

        settings = _settings(settings, overrides)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        jobs = [(p, s) for p in prompts for s in seeds]
        if not jobs:
            raise BrokenOutputError("zero images requested: no prompts or no seeds")
        out = []
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start:start + self.batch_size]
            ps, ss = [p for p, _ in chunk], [s for _, s in chunk]
            try:
                raw = self.fn(ps, ss, settings)
            except (KeyboardInterrupt, SystemExit, MemoryError):
                raise
            except Exception as e:  # the hook's own bug: one clean error that names it, not its traceback
                raise BrokenOutputError(f"generator {self.spec} raised {type(e).__name__}: {e}{_where(e)}; fix the "
                                        "hook (run it alone to see its traceback)") from None
            imgs = _as_batch(raw, len(chunk), self.spec)
            check_images(imgs, ps, ss)
            out.append(imgs)
            self.generated += len(chunk)
            if self.on_images is not None:
                self.on_images(len(chunk))
        n = len(jobs)  # per image: never from the cache, never stopped early (the pipeline zips over these)
        return Generation(torch.cat(out), [p for p, _ in jobs], [s for _, s in jobs], settings,
                          cached=[False] * n, early_exit=[None] * n)

    def img2img(self, *args: Any, **kwargs: Any) -> Generation:
        raise not_applicable("img2img")

    @contextlib.contextmanager
    def lora_scale(self, scale: float) -> Iterator[None]:
        raise not_applicable("the LoRA gate")
        yield  # pragma: no cover


def _as_batch(images: Any, n: int, spec: str) -> Any:
    """The callable's output as (n, 3, H, W) float32 in [0, 1]; anything else is a ``BrokenOutputError``."""
    import torch

    from ..images import from_any

    if isinstance(images, torch.Tensor) and images.ndim == 4:
        images = list(images)
    if not isinstance(images, (list, tuple)):
        raise BrokenOutputError(f"generator {spec} returned a {type(images).__name__}; expected a tensor "
                                "(N, 3, H, W) in [0, 1] or a list of N images")
    if len(images) != n:
        raise BrokenOutputError(f"generator {spec} returned {len(images)} images for {n} (prompt, seed) pairs")
    for i, t in enumerate(images):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            if not torch.isfinite(t).all():
                raise BrokenOutputError(f"generator {spec} returned NaN or Inf pixels (image {i})")
            if t.min() < 0 or t.max() > 1:
                raise BrokenOutputError(f"generator {spec} returned values outside [0, 1] (image {i}); "
                                        "return images scaled to [0, 1]")
    tensors = [from_any(img) for img in images]
    if len({tuple(t.shape) for t in tensors}) != 1:
        raise BrokenOutputError(f"generator {spec} returned images of different sizes")
    return torch.stack(tensors)


def _code_hash(spec: str, fn: Callable[..., Any]) -> str:
    """The spec and the callable's source file: a new version of the code is a new model in reports."""
    h = hashlib.sha256(spec.encode())
    try:
        h.update(Path(inspect.getfile(fn)).read_bytes())
    except (TypeError, OSError):
        pass
    return h.hexdigest()

"""The on-disk cache of generated images, for every item: a run that changes only thresholds,
metrics or works regenerates nothing.

An entry is named by the sha256 of everything that changes pixels, and nothing that does not
(thresholds, metrics and works are not in it): the model's and LoRA's content hashes, the LoRA
weight in force, the family and pipeline class, the scheduler's class and config, the dtype and
the device *kind* (cuda:0 and cuda:1 give the same pixels; cpu and cuda do not), the prompt,
negative prompt, seed, steps, guidance, size, for img2img the source image's hash and the
strength, and ``CODE_VERSION`` (bumped whenever the generation code changes what it draws).

Each entry is sealed (an HMAC of its name and its pixels, ``_io.seal``). A damaged, edited or
foreign entry is regenerated with a warning, never trusted; writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

from ..errors import one_line

CODE_VERSION = "2"  # 1: LoRA-gate base images only; 2: every item, img2img keyed by source and strength


class GenerationCacheWarning(UserWarning):
    """A cache entry could not be trusted and was regenerated."""


def cache_identity(info: Any, pipe: Any, lora_scale: float, family: str, alone: int | None = None) -> dict[str, Any]:
    """What of the loaded model changes pixels (``alone``: only that one of several LoRAs is on)."""
    lora: dict[str, Any] | None = {"hash": info.lora_hash, "scale": float(lora_scale)} if info.lora and lora_scale else None
    if lora is not None and alone is not None:
        lora["alone"] = int(alone)
    scheduler = getattr(pipe, "scheduler", None)
    config = dict(getattr(scheduler, "config", {}) or {})
    return {"model": info.content_hash, "lora": lora, "family": family, "pipeline": info.pipeline_class,
            "scheduler": [type(scheduler).__name__, {k: v for k, v in config.items() if not k.startswith("_")}],
            "dtype": str(info.dtype), "device": str(info.device).split(":")[0], "code": CODE_VERSION}


def entry_name(identity: dict[str, Any], prompt: str, seed: int, settings: dict[str, Any],
               extra: dict[str, Any] | None = None) -> str:
    key = json.dumps({"model": identity, "prompt": prompt, "seed": int(seed), "settings": settings,
                      "extra": extra or {}}, sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()


def tensor_hash(t: Any) -> str:
    """sha256 of a tensor's dtype, shape and bytes (an img2img source image)."""
    from ..metrics.cache import tensor_bytes

    return hashlib.sha256(tensor_bytes(t)).hexdigest()


class GenerationCache:
    """``get`` / ``put`` of one sealed image (3, H, W) by entry name under ``root/<folder>``.

    ``label`` names the entries in seals and warnings; the VAE floor keeps its round trips in one
    of these too (``folder="vae_floor"``)."""

    def __init__(self, root: Path, *, folder: str = "generations", label: str = "generation") -> None:
        self.root = Path(root)
        self.folder = self.root / folder
        self.label = label
        self.rejected = 0  # entries found but not trusted (regenerated)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.safetensors"

    def get(self, name: str) -> Any:
        path = self.path(name)
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                seal = (f.metadata() or {}).get("seal")
                image = f.get_tensor("image")
        except Exception as e:  # a damaged cache entry is regenerated, never trusted
            return self._reject(path, f"unreadable ({type(e).__name__})")
        if seal != _seal(self.label, name, image):
            return self._reject(path, "its seal does not match its pixels (edited, damaged or from another machine)")
        if image.ndim != 3 or image.shape[0] != 3:
            return self._reject(path, f"shape {tuple(image.shape)} is not (3, H, W)")
        return image

    def put(self, name: str, image: Any) -> None:
        from safetensors.torch import save_file

        from .._io import atomic_path, mark_cache_dir

        image = image.detach().to("cpu").float().contiguous()
        try:
            mark_cache_dir(self.root)
            with atomic_path(self.path(name)) as tmp:
                save_file({"image": image}, str(tmp), metadata={"seal": _seal(self.label, name, image)})
        except OSError as e:  # a full disk or a read-only cache: the image is generated again next time
            warnings.warn(one_line(f"{self.label} cache {self.folder}: cannot write an entry ({e}); free space or choose "
                                   "another --memorization-cache-dir. The run goes on without caching it"),
                          GenerationCacheWarning, stacklevel=2)

    def _reject(self, path: Path, why: str) -> None:
        self.rejected += 1
        warnings.warn(one_line(f"{self.label} cache entry {path} was not used: {why}; the image is computed again and "
                               "the entry rewritten"), GenerationCacheWarning, stacklevel=3)
        return None


def _seal(label: str, name: str, image: Any) -> str:
    """HMAC of the entry's inputs (its name is the hash of model, prompt, seed and settings) and pixels."""
    from .._io import seal
    from ..metrics.cache import tensor_bytes

    return seal(f"{label}|{name}", [tensor_bytes(image)])

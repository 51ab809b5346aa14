"""A LoRA loads whole or not at all: the adapter modules in the file against those PEFT injected.

diffusers loads what it understands of a LoRA file and only warns about the rest (unexpected
keys, text-encoder keys it found no prefix for): a file in a mixed key format then loads in
part, and the gate would test a different model from the one being merged. Here every adapter
module named in the file (its ``lora_A`` / ``lora_down`` keys) must have a loaded counterpart
in the same component (UNet or text encoder), compared by name with separators removed, so the
diffusers/PEFT (``unet.down_blocks.0.attn1.to_q``) and kohya (``lora_unet_down_blocks_0_attn1_to_q``)
conventions compare equal. Names in a convention diffusers converts (e.g. original ``input_blocks``)
do not compare by name; there the count of modules per component must match instead.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

# The key suffix that marks one adapter module's "down" (A) matrix, in the known conventions.
_DOWN = re.compile(r"(?:\.lora_A(?:\.[^.]+)?\.weight|\.lora\.down\.weight|\.lora_down\.weight|_lora\.down\.weight)$")
# File prefix -> pipeline component.
_PREFIXES = (("unet.", "unet"), ("lora_unet_", "unet"), ("text_encoder_2.", "text_encoder_2"),
             ("lora_te2_", "text_encoder_2"), ("text_encoder.", "text_encoder"), ("lora_te1_", "text_encoder"),
             ("lora_te_", "text_encoder"), ("transformer.", "transformer"))
SHOWN = 5


def _norm(name: str) -> str:
    name = name.replace("base_model.model.", "").replace(".processor", "")
    return re.sub(r"[._]", "", name).lower()


def file_keys(path: Path) -> list[str]:
    """The tensor names in a LoRA file (no tensors loaded for safetensors)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    import torch

    return list(torch.load(str(path), map_location="cpu", weights_only=True))


# An adapter module's "down" (A) and "up" (B) matrices, in each convention: each needs the other.
_PAIRS = ((".lora_A.", ".lora_B."), (".lora.down.", ".lora.up."), (".lora_down.", ".lora_up."),
          ("_lora.down.", "_lora.up."))


def check_pairs(path: Path) -> None:
    """CheckpointError when a LoRA file has a down matrix without its up matrix or the reverse (tensors
    removed or left over): diffusers would fail deep inside with a long traceback, or load half a module."""
    try:
        keys = set(file_keys(path))
    except Exception as e:  # a damaged file: one clean error
        raise CheckpointError(f"LoRA {path} cannot be read ({type(e).__name__}: {str(e)[:200]}); re-save it") from None
    unmatched = []
    for key in sorted(keys):
        for down, up in _PAIRS:
            for a, b in ((down, up), (up, down)):
                if a in key and key.replace(a, b, 1) not in keys:
                    unmatched.append((key, key.replace(a, b, 1)))
    if unmatched:
        shown = "; ".join(f"{k} has no {other}" for k, other in unmatched[:SHOWN])
        more = f" and {len(unmatched) - SHOWN} more" if len(unmatched) > SHOWN else ""
        raise CheckpointError(f"LoRA {path} is incomplete: {len(unmatched)} adapter matrices lack their pair "
                              f"({shown}{more}). Each module needs both its down (lora_A) and up (lora_B) tensors; "
                              "re-save the LoRA whole")


def file_modules(path: Path) -> dict[str, list[str]]:
    """Adapter module names in a LoRA file, per component (keys read, no tensors loaded)."""
    keys = file_keys(path)
    out: dict[str, list[str]] = {}
    for key in keys:
        m = _DOWN.search(key)
        if not m:
            continue
        name = key[: m.start()]
        component = "unet"  # un-prefixed (PEFT) keys are the UNet's, as diffusers reads them
        for prefix, comp in _PREFIXES:
            if name.startswith(prefix):
                component, name = comp, name[len(prefix):]
                break
        out.setdefault(component, []).append(name)
    return out


def injected_modules(pipe: Any, adapter: str) -> dict[str, list[str]]:
    """Module names per component that carry adapter ``adapter``."""
    out: dict[str, list[str]] = {}
    for component in ("unet", "transformer", "text_encoder", "text_encoder_2"):
        model = getattr(pipe, component, None)
        if model is None or not hasattr(model, "named_modules"):
            continue
        names = [n for n, mod in model.named_modules()
                 if adapter in (getattr(mod, "lora_A", None) or {}) or adapter in (getattr(mod, "lora_magnitude_vector", None) or {})]
        if names:
            out[component] = names
    return out


def check_whole(pipe: Any, path: Path, adapter: str, messages: list[str]) -> None:
    """CheckpointError when some adapter module of ``path`` did not load into ``pipe``."""
    expected = file_modules(path)
    loaded = injected_modules(pipe, adapter)
    for component, names in expected.items():
        got = loaded.get(component, [])
        got_norm = {_norm(n) for n in got}
        missing = [n for n in names if _norm(n) not in got_norm]
        if not missing or (len(got) >= len(names) and len(missing) == len(names)):
            continue  # all matched by name, or all in a convention diffusers converted and the count matches
        if getattr(pipe, component, None) is None:
            cause = f"the pipeline has no {component}"
        elif len(missing) < len(names):
            cause = ("the file mixes key formats (some modules in one naming convention, the rest in another), "
                     "and diffusers understood only one of them; re-save the LoRA in one format "
                     "(diffusers/PEFT: `pipe.save_lora_weights`)")
        else:
            cause = "none of its keys matched this model's layers in the format diffusers read them"
        said = f" diffusers said: {' | '.join(m[:200] for m in messages[:2])}." if messages else ""
        raise CheckpointError(
            f"LoRA {path} loaded only in part: {len(names) - len(missing)} of {len(names)} {component} adapter "
            f"modules were injected; not loaded: {', '.join(missing[:SHOWN])}"
            f"{f' and {len(missing) - SHOWN} more' if len(missing) > SHOWN else ''}. Likely cause: {cause}.{said} "
            "A partly loaded LoRA is a different model from the one being merged, so nothing is certified")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def collected_messages() -> Iterator[list[str]]:
    """Warnings diffusers/PEFT/transformers log or warn while a LoRA loads. Their log lines are
    captured here, not printed (a partial load is our error, which quotes them; the rest is noise
    such as "No LoRA keys associated to CLIPTextModel"); Python warnings are passed on."""
    handler = _Collect()
    loggers = [logging.getLogger(n) for n in ("diffusers", "peft", "transformers")]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.handlers = [handler]
        lg.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield handler.messages
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers = handlers
            lg.propagate = propagate
    for w in caught:
        handler.messages.append(str(w.message))
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

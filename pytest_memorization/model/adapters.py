"""LoRA adapters: one (``lora``) or several (``loras``), each a ``.safetensors`` file, a folder holding
one, or a hub id (``org/name``) already in the local Hugging Face cache.

Before diffusers sees a LoRA, two checks turn what would be a silent wrong model or a torch dump
into an error that names both sides:

- its model card (``README.md`` beside the weights, read with ``huggingface_hub.ModelCard``) names a
  ``base_model``: it must be the base in use (its hub id, or the hub id its cache folder belongs to),
  or the base that the base in use names in its own card (a fine-tune of it);
- its tensor shapes must fit the base's layers (an SD 1 LoRA on an SDXL base has other widths).

Several LoRAs load as adapters ``memorization_lora_0``, ``_1``, ... and run together with
``set_adapters(names, adapter_weights=[scale_0, scale_1, ...])``; ``weights_for`` gives the weights
for all of them, for one alone, or for none (the base model).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import hub_repo_dir, hub_snapshot_dir
from ..errors import CheckpointError

LORA_ADAPTER = "memorization_lora"
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
# cross-attention width -> the family it is the mark of, to say what a misfitting LoRA was made for
WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


@dataclass
class LoadedLora:
    """One loaded adapter, as the report and the cache keys see it."""

    path: str  # as written (a path or a hub id)
    file: Path
    hash: str
    scale: float
    adapter: str
    base_model: list[str]  # what its model card names ([] when it has no card or names none)


def adapter_names(n: int) -> list[str]:
    """One LoRA keeps the adapter name it always had; several are numbered."""
    return [LORA_ADAPTER] if n == 1 else [f"{LORA_ADAPTER}_{i}" for i in range(n)]


def resolve(value: str) -> Path:
    """A LoRA given as a local path or a hub id in the local cache -> a local path (file or folder)."""
    p = Path(value).expanduser()
    if p.exists():
        return p
    if HUB_ID.match(value) and not value.startswith((".", "/", "~")) and not Path(value.split("/")[0]).is_dir():
        snap = hub_snapshot_dir(value)
        if snap is None:
            raise CheckpointError(
                f"LoRA {value} not found: no such file or folder (resolved to {p.resolve()}), and as a hub id it "
                f"is not in the local Hugging Face cache (looked for {hub_repo_dir(value)}). Pass a folder holding "
                "pytorch_lora_weights.safetensors or the .safetensors file itself; or, for a hub id, run "
                f"`hf download {value}` on a connected machine and copy that folder here (or set HF_HUB_CACHE)")
        return snap
    raise CheckpointError(f"LoRA {p} not found (resolved to {p.resolve()}); pass a folder holding "
                          "pytorch_lora_weights.safetensors, the .safetensors file itself, or a cached hub id")


def lora_file(path: Path, allow_pickle: bool) -> Path:
    if not path.exists():
        raise CheckpointError(
            f"LoRA {path} not found (resolved to {path.resolve()}); pass a folder holding "
            "pytorch_lora_weights.safetensors or the .safetensors file itself"
        )
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
            raise CheckpointError(f"LoRA {path}: pickle files are refused; convert to .safetensors or pass "
                                  "--memorization-allow-pickle")
        return path
    files = [p for p in path.iterdir() if p.is_file()]
    safe = [p for p in files if p.suffix in SAFE_SUFFIXES]
    pickled = [p for p in files if p.suffix in PICKLE_SUFFIXES]
    if len(safe) == 1:
        return safe[0]
    preferred = path / "pytorch_lora_weights.safetensors"
    if preferred.is_file():
        return preferred
    if len(safe) > 1:
        raise CheckpointError(f"LoRA folder {path} holds several .safetensors files "
                              f"({', '.join(p.name for p in safe)}); pass the file itself")
    if pickled and allow_pickle:
        return pickled[0]
    raise CheckpointError(f"LoRA folder {path} holds no .safetensors LoRA weights "
                          "(expected pytorch_lora_weights.safetensors, as written by save_lora_weights)")


def card_base_models(folder: Path) -> list[str]:
    """The ``base_model`` entries of the model card (README.md) in ``folder``; [] without a card or entry."""
    card = folder / "README.md"
    if not card.is_file():
        return []
    from huggingface_hub import ModelCard

    try:
        data = ModelCard.load(card).data.to_dict()
    except Exception as e:  # a YAML error: the card is broken; say which and how to go on
        raise CheckpointError(f"{card}: the model card's front matter does not parse "
                              f"({' '.join(str(e).split())[:200]}); fix the card") from None
    value = data.get("base_model")
    values = value if isinstance(value, list) else [value] if value else []
    return [str(v).strip() for v in values if str(v).strip()]


def hub_id_of(path: Path | None) -> str | None:
    """``org/name`` when ``path`` lies in a Hugging Face cache repo folder (``models--org--name``)."""
    if path is None:
        return None
    for part in path.resolve().parts[::-1]:
        if part.startswith("models--") and part.count("--") >= 2:
            return part[len("models--"):].replace("--", "/", 1)
    return None


def base_names(pretrained: str, kind: str, path: Path | None) -> tuple[str | None, set[str]]:
    """(the base's hub id or None when it has none, every name a LoRA card may give for it: that id
    and the bases its own card names)."""
    ident = pretrained if kind == "hub" else hub_id_of(path)
    folder = path if path is not None and path.is_dir() else hub_snapshot_dir(pretrained) if kind == "hub" else None
    names = {ident} if ident else set()
    if folder is not None:
        names |= set(card_base_models(folder))
    return ident, {n.lower() for n in names}


def check_base(lora: str, folder: Path, wanted: list[str], pretrained: str, ident: str | None,
               names: set[str]) -> None:
    """CheckpointError when the LoRA's card names a base_model other than the base in use."""
    if not wanted or ident is None or any(w.lower() in names for w in wanted):
        return
    said = " or ".join(wanted)
    raise CheckpointError(
        f"LoRA {lora} was made for base model {said} (its model card {folder / 'README.md'} says base_model: "
        f"{said}), but the base model in use is {ident} ({pretrained}). A gate on another base says nothing "
        f"about the model that will ship: use {wanted[0]} as [model] pretrained, or fix base_model in the "
        f"card; if {ident} is a fine-tune of {said}, pass --memorization-lora-base-check=no "
        "(ini memorization_lora_base_check = false)")


def check_shapes(pipe: Any, f: Path, lora: str, pretrained: str, family: str) -> None:
    """CheckpointError, naming both sides, when the LoRA's matrices do not fit the base's layers
    (diffusers would stop with a long list of torch size mismatches)."""
    if f.suffix != ".safetensors":
        return
    from safetensors import safe_open

    from .lora_modules import _DOWN, _PREFIXES, _norm

    modules: dict[str, dict[str, Any]] = {}
    bad: list[tuple[str, int, int]] = []
    checked = 0
    with safe_open(str(f), framework="pt") as fh:
        for key in fh.keys():
            m = _DOWN.search(key)
            if not m:
                continue
            name, component = key[: m.start()], "unet"
            for prefix, comp in _PREFIXES:
                if name.startswith(prefix):
                    component, name = comp, name[len(prefix):]
                    break
            if component not in modules:
                model = getattr(pipe, component, None)
                modules[component] = {_norm(n): mod for n, mod in model.named_modules()} \
                    if model is not None and hasattr(model, "named_modules") else {}
            mod = modules[component].get(_norm(name))
            width = getattr(mod, "in_features", None) or getattr(mod, "in_channels", None)
            if width is None:
                continue
            shape = fh.get_slice(key).get_shape()
            checked += 1
            if len(shape) >= 2 and int(shape[1]) != int(width):
                bad.append((f"{component}.{name}", int(shape[1]), int(width)))
    if not bad:
        return
    cross = [(n, a, b) for n, a, b in bad if "attn2.to_k" in n or "attn2.to_v" in n]
    n, a, b = (cross or bad)[0]
    made = f" ({WIDTHS[a]})" if cross and a in WIDTHS else ""
    base = f" ({WIDTHS[b]})" if cross and b in WIDTHS else ""
    kind = "cross-attention width" if cross else "input width"
    raise CheckpointError(
        f"LoRA {lora} does not fit base model {pretrained} ({family}): {len(bad)} of its {checked} layers have "
        f"other sizes, e.g. {n} takes {a} inputs in the LoRA and {b} in the base. The LoRA was made for a "
        f"base with {kind} {a}{made}; this base has {b}{base}. Use the base the LoRA was trained for, or a "
        "LoRA trained for this base")


def load_loras(pipe: Any, specs: tuple[tuple[str, float], ...], *, pretrained: str, kind: str, path: Path | None,
               family: str, allow_pickle: bool, base_check: bool, multiplier: float) -> list[LoadedLora]:
    """Load every LoRA as its own adapter and set the weights (each scale x ``multiplier``)."""
    from .hashing import _sha256
    from .lora_modules import check_pairs, check_whole, collected_messages

    ident, names = base_names(pretrained, kind, path) if base_check else (None, set())
    out: list[LoadedLora] = []
    for (value, scale), adapter in zip(specs, adapter_names(len(specs))):
        f = lora_file(resolve(value), allow_pickle)
        who = value if Path(value).expanduser() == f else f"{value} ({f})"
        wanted = card_base_models(f.parent)
        if base_check:
            check_base(value, f.parent, wanted, pretrained, ident, names)
        check_pairs(f)  # missing or extra tensors: a clean error before diffusers fails deep inside
        check_shapes(pipe, f, value, pretrained, family)
        try:
            with collected_messages() as messages:
                pipe.load_lora_weights(str(f.parent), weight_name=f.name, adapter_name=adapter)
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as e:  # diffusers/PEFT fail in many types; one clean error, not their traceback
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"LoRA {who} does not match model {pretrained} ({family}): {type(e).__name__}: "
                f"{first}. Was it trained for this base model (same architecture and rank layout)?") from None
        if adapter not in loaded_adapters(pipe):
            raise CheckpointError(
                f"LoRA {who} does not match model {pretrained} ({family}): none of its keys matched a "
                "layer of the UNet or text encoder. Was it trained for this base model?")
        check_whole(pipe, f, adapter, messages)  # loads whole or not at all
        out.append(LoadedLora(path=value, file=f, hash=_sha256(f), scale=float(scale), adapter=adapter,
                              base_model=wanted))
    set_weights(pipe, out, weights_for(out, multiplier))
    return out


def combined_hash(loras: list[LoadedLora]) -> str:
    """One LoRA: its file's sha256. Several: a sha256 over each file's sha256 and scale, in order."""
    if len(loras) == 1:
        return loras[0].hash
    return hashlib.sha256("|".join(f"{lo.hash}@{lo.scale!r}" for lo in loras).encode()).hexdigest()


def weights_for(loras: list[Any], multiplier: float, alone: int | None = None) -> list[float]:
    """Each adapter's weight: its scale x ``multiplier`` (0 = the base model); with ``alone``, only that one."""
    return [float(lo.scale) * float(multiplier) if alone is None or i == alone else 0.0
            for i, lo in enumerate(loras)]


def set_weights(pipe: Any, loras: list[Any], weights: list[float]) -> None:
    """Weight 0 everywhere gives exactly the base model's image; the adapters stay loaded (no reload)."""
    pipe.set_adapters([lo.adapter for lo in loras], adapter_weights=[float(w) for w in weights])


def loaded_adapters(pipe: Any) -> set[str]:
    try:
        return {a for names in pipe.get_list_adapters().values() for a in names}
    except (AttributeError, ValueError):
        return set()

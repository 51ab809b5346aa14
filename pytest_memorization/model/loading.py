"""Loading a checkpoint: a diffusers folder, a single file plus a local config folder,
or a hub id already in the local Hugging Face cache, with diffusers' loading conventions
(``variant``, ``revision``, ``subfolder``, ``torch_dtype``) and optional LoRAs (``adapters.py``).

Paths and folder layouts are checked *before* diffusers sees them, because its raw
errors are misleading here (a missing LoRA reports "you must specify a weight_name",
a folder missing UNet weights reports a missing ``.bin``). Every problem raises a
``CheckpointError`` that names the path, what was expected, and how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import hub_cache_dir, hub_repo_dir, hub_snapshot_dir
from ..errors import CheckpointError
from .families import default_dtype, family_hint, family_of
from .hashing import content_hash

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
WEIGHTLESS = {"tokenizer", "tokenizer_2", "tokenizer_3", "scheduler", "feature_extractor", "safety_checker", "image_encoder"}
LORA_ADAPTER = "memorization_lora"
_SHARD = re.compile(r"-\d+-of-\d+$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from and how to run it. Hashable: one load per distinct source."""

    pretrained: str
    config: str | None = None
    lora: str | None = None
    lora_scale: float = 1.0
    device: str = "auto"
    dtype: str = "auto"
    allow_pickle: bool = False
    allow_download: bool = False
    generator: str | None = None  # "package.module:function": an external generator (model/hook.py), no weights
    allow_outside_root: bool = False  # component folders/files that resolve outside the model folder
    variant: str | None = None  # diffusers' variant: load *.<variant>.safetensors (e.g. "fp16")
    revision: str | None = None  # a hub id's branch, tag or commit in the local cache
    subfolder: str | None = None  # the pipeline lives in this folder of the model folder or hub repo
    loras: tuple[tuple[str, float], ...] = ()  # several LoRAs (path or hub id, scale), loaded at once
    lora_base_check: bool = True  # a LoRA whose card names another base_model is an error

    def lora_specs(self) -> tuple[tuple[str, float], ...]:
        """The LoRAs and their own scales: ``loras``, or ``lora`` alone at 1 (``lora_scale`` scales them all)."""
        return self.loras or (((self.lora, 1.0),) if self.lora else ())


@dataclass
class ModelInfo:
    """What went into the model: recorded in reports and baseline fingerprints."""

    source: str
    kind: str  # "folder", "single-file" or "hub"
    content_hash: str
    device: str
    dtype: str
    lora: str | None = None
    lora_hash: str | None = None
    lora_scale: float = 1.0  # multiplies every LoRA's own scale (one LoRA: its weight)
    loras: list[Any] = field(default_factory=list)  # adapters.LoadedLora, one per adapter
    pipeline_class: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str) -> str:
    """auto: cuda (worker N of pytest-xdist on cuda:N modulo the count), then mps, then cpu."""
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise CheckpointError(
                f"--memorization-device {device}: CUDA is not available on this machine "
                f"(torch {torch.__version__}); use --memorization-device cpu or auto"
            )
        if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise CheckpointError("--memorization-device mps: MPS is not available; use cpu or auto")
        return device
    if torch.cuda.is_available():
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
        index = int(worker[2:]) if worker[2:].isdigit() else 0
        return f"cuda:{index % torch.cuda.device_count()}"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str, family: Any = None) -> str:
    """auto: on CUDA the family's dtype (float16 for SD 1/2/XL, bfloat16 for SD3 and Flux), float32 elsewhere."""
    return dtype if dtype != "auto" else default_dtype(family, device)


def check_inside(path: Path, allow_outside: bool) -> None:
    """Every component folder and file of a model folder resolves inside it (a link out of it would
    load weights from elsewhere), unless allowed."""
    if allow_outside:
        return
    root = path.resolve()
    for folder, dirs, names in os.walk(path, followlinks=False):
        for n in [*dirs, *names]:
            p = Path(folder) / n
            if p.is_symlink() and not p.resolve().is_relative_to(root):
                raise CheckpointError(
                    f"{p} links to {p.resolve()}, outside the model folder {root}; copy the component into the "
                    "folder, or pass --memorization-allow-outside-root (ini memorization_allow_outside_root) "
                    "to load it")


def _weights_in(folder: Path) -> tuple[list[Path], list[Path]]:
    files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    return [p for p in files if p.suffix in SAFE_SUFFIXES], [p for p in files if p.suffix in PICKLE_SUFFIXES]


def variant_of(file: Path) -> str | None:
    """"fp16" for ``diffusion_pytorch_model.fp16.safetensors`` (and its shards), None for the plain names."""
    parts = file.name.split(".")
    return _SHARD.sub("", parts[1]) if len(parts) >= 3 else None


def _check_variant(sub: Path, name: str, files: list[Path], variant: str | None) -> None:
    found = sorted({v for v in map(variant_of, files) if v})
    plain = [p for p in files if variant_of(p) is None]
    if variant is None and found and not plain:
        raise CheckpointError(
            f"{sub}: component '{name}' holds only {' / '.join(found)} variant weights "
            f"({', '.join(p.name for p in files)}), which diffusers loads only when asked: add "
            f"variant = \"{found[0]}\" to the manifest's [model] (or pass --memorization-variant {found[0]})")
    if variant is not None and variant not in found:
        raise CheckpointError(
            f"{sub}: variant \"{variant}\" was asked for, but component '{name}' has no {variant} weights (found "
            f"{', '.join(p.name for p in files)}); "
            + (f"use variant = \"{found[0]}\"" if found else "remove variant from [model] to load these")
            + " or add the component's variant weights")


def check_folder(path: Path, allow_pickle: bool, variant: str | None = None) -> dict[str, Any]:
    """Check a diffusers folder's layout (and that each component has weights of ``variant``); return its
    model_index.json."""
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise CheckpointError(
            f"{path}: folder has no model_index.json, so it is not a diffusers pipeline folder. "
            "Save one with pipe.save_pretrained(folder), or pass a single .safetensors checkpoint "
            "together with --memorization-config <diffusers folder of the same architecture>."
        )
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{index_file}: cannot be read as JSON ({e}); re-save the pipeline") from None
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None or name in WEIGHTLESS:
            continue
        sub = path / name
        if not sub.is_dir():
            raise CheckpointError(
                f"{path}: model_index.json lists component '{name}' but the folder {sub} is missing; "
                "copy the whole pipeline folder (every component subfolder)"
            )
        safe, pickled = _weights_in(sub)
        if not safe and not pickled:
            raise CheckpointError(
                f"{sub}: no weights file for component '{name}' (expected e.g. "
                "diffusion_pytorch_model.safetensors or model.safetensors); the download or copy is incomplete"
            )
        if not safe and not allow_pickle:
            raise CheckpointError(
                f"{sub}: only pickle weights ({', '.join(p.name for p in pickled)}) for '{name}'. Pickle files can "
                "run code when loaded, so they are refused: convert them to .safetensors, or pass "
                "--memorization-allow-pickle to load them with torch.load(weights_only=True)"
            )
        _check_variant(sub, name, safe or pickled, variant)
    return index


def classify(source: ModelSource) -> tuple[str, Path | None]:
    """("folder" | "single-file" | "hub", local path or None)."""
    p = Path(source.pretrained).expanduser()
    if p.is_dir():
        return "folder", p
    if p.is_file():
        if p.suffix in SAFE_SUFFIXES:
            return "single-file", p
        if p.suffix in PICKLE_SUFFIXES:
            if not source.allow_pickle:
                raise CheckpointError(
                    f"{p}: pickle checkpoints ({p.suffix}) can run code when loaded and are refused. Convert it "
                    "to .safetensors, or pass --memorization-allow-pickle to load it with weights_only=True"
                )
            return "single-file", p
        raise CheckpointError(f"{p}: not a checkpoint (expected a diffusers folder or a .safetensors file)")
    first = Path(source.pretrained.split("/", 1)[0])
    if HUB_ID.match(source.pretrained) and not source.pretrained.startswith((".", "/", "~")) and not first.is_dir():
        return "hub", None  # 'org/name' whose 'org' is a local folder is a mistyped path, not a hub id
    raise CheckpointError(
        f"model '{source.pretrained}' not found: no such file or folder (resolved to {p.resolve()}). "
        "Give a diffusers folder, a .safetensors file, or a hub id (org/name) already in the local cache"
    )


def hub_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The cached snapshot folder of a hub model (at ``revision``), or a CheckpointError saying how to cache it."""
    snap = hub_snapshot_dir(repo_id, revision)
    if snap is not None:
        return snap
    repo = hub_repo_dir(repo_id)
    at = f" at revision '{revision}'" if revision else ""
    raise CheckpointError(
        f"hub id '{repo_id}'{at} is not in the local Hugging Face cache (looked for {repo}"
        + (f"/refs/{revision} and snapshots/{revision}*" if revision else "") + "). This run is offline: "
        f"on a connected machine run `hf download {repo_id}{f' --revision {revision}' if revision else ''}` and "
        f"copy {repo} here (or set HF_HUB_CACHE), pass a local diffusers folder instead, or allow downloads with "
        "--memorization-allow-download"
    )


def _conventions(source: ModelSource, kind: str, path: Path | None) -> Path | None:
    """Apply ``revision`` and ``subfolder``: the local folder to load (None: load the hub id as it is)."""
    if source.revision and kind != "hub":
        raise CheckpointError(f"revision = \"{source.revision}\" applies to a hub id; {source.pretrained} is a "
                              "local " + ("folder" if kind == "folder" else "file") + ", one revision already: "
                              "remove revision, or give the hub id")
    if kind == "single-file" and (source.subfolder or source.variant):
        raise CheckpointError(f"{source.pretrained}: subfolder and variant apply to a diffusers folder or hub id, "
                              "not to a single-file checkpoint; remove them from [model]")
    if kind == "hub" and not source.allow_download:
        path = hub_snapshot(source.pretrained, source.revision)
    if source.subfolder:
        if path is None:
            raise CheckpointError(f"subfolder = \"{source.subfolder}\" with --memorization-allow-download: "
                                  f"download {source.pretrained} first (`hf download`), then load it offline")
        sub = (path / source.subfolder).resolve()
        if not sub.is_relative_to(path.resolve()) or not sub.is_dir():
            raise CheckpointError(
                f"{source.pretrained}: subfolder \"{source.subfolder}\" is not a folder inside it (looked for "
                f"{path / source.subfolder}); folders there: "
                f"{', '.join(sorted(p.name for p in path.iterdir() if p.is_dir())) or 'none'}")
        return sub
    return path


def _torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def load(source: ModelSource) -> tuple[Any, ModelInfo]:
    """Load the pipeline on its device with the safety checker off. Returns (pipeline, info)."""
    if not source.allow_download:
        os.environ["HF_HUB_OFFLINE"] = "1"  # read at first Hugging Face import; set before it
    kind, path = classify(source)
    local = _conventions(source, kind, path)  # revision and subfolder applied
    device = resolve_device(source.device)
    hint = family_hint("folder" if local is not None and kind == "hub" else kind, local,
                       lambda: hub_snapshot(source.pretrained))
    dtype = resolve_dtype(source.dtype, device, hint)
    import diffusers
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()  # our own progress bar covers generation
    transformers_logging.disable_progress_bar()

    common: dict[str, Any] = dict(dtype=_torch_dtype(dtype))
    if hint is None or hint.name == "sd":  # only SD 1/2 pipelines have a safety checker
        common.update(safety_checker=None, requires_safety_checker=False)
    if source.variant:
        common["variant"] = source.variant
    if kind == "single-file":
        assert path is not None
        from .single_file import load_single_file

        pipe = load_single_file(source, path, common, diffusers, _wrap)
        digest = content_hash(path)
    elif local is not None:  # a folder, or a hub id at its cached snapshot (or a subfolder of either)
        check_folder(local, source.allow_pickle, source.variant)
        if kind == "folder":  # a cache snapshot's files are links to its blobs, by design
            check_inside(local, source.allow_outside_root)
        if kind == "hub" and not source.subfolder and not source.revision:
            pipe = _wrap(lambda: DiffusionPipeline.from_pretrained(
                source.pretrained, local_files_only=True, cache_dir=str(hub_cache_dir()), **common), local)
        else:
            pipe = _wrap(lambda: DiffusionPipeline.from_pretrained(
                local, local_files_only=True, use_safetensors=not source.allow_pickle or None, **common), local)
        digest = content_hash(local)
    else:
        revision = {"revision": source.revision} if source.revision else {}
        pipe = _wrap(lambda: DiffusionPipeline.from_pretrained(source.pretrained, **revision, **common),
                     source.pretrained)
        digest = "hub:" + source.pretrained + (f"@{source.revision}" if source.revision else "")
    if source.variant:  # a folder holding both variants hashes the same: the variant chose the weights
        digest = hashlib.sha256(f"{digest}|variant={source.variant}".encode()).hexdigest()
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None  # it blacks out images, which would hide a copy
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    family = family_of(pipe).name
    conventions = {k: v for k in ("variant", "revision", "subfolder") if (v := getattr(source, k))}
    info = ModelInfo(source=source.pretrained, kind=kind, content_hash=digest, device=device, dtype=dtype,
                     pipeline_class=type(pipe).__name__, extra={"family": family, **conventions})
    specs = source.lora_specs()
    if specs:
        from .adapters import combined_hash, load_loras

        info.loras = load_loras(pipe, specs, pretrained=source.pretrained, kind=kind, path=local or path,
                                family=family, allow_pickle=source.allow_pickle, base_check=source.lora_base_check,
                                multiplier=source.lora_scale)
        info.lora = " + ".join(lo.path for lo in info.loras)
        info.lora_hash, info.lora_scale = combined_hash(info.loras), source.lora_scale
        if len(info.loras) > 1:
            info.extra["loras"] = [{"path": lo.path, "sha256": lo.hash, "scale": lo.scale} for lo in info.loras]
        said = sorted({b for lo in info.loras for b in lo.base_model})
        if said:
            info.extra["lora_base_model"] = said
    return pipe, info


def _wrap(fn: Any, where: object) -> Any:
    try:
        return fn()
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(
            f"{where}: diffusers could not load this checkpoint: {type(e).__name__}: {str(e)[:500]}. "
            "Check that it is a complete Stable Diffusion pipeline of a supported architecture"
        ) from e


def set_lora_scale(pipe: Any, scale: float, loras: list[Any] | None = None, alone: int | None = None) -> None:
    """Every LoRA at its own scale x ``scale`` (0 gives exactly the base model's image), or only LoRA
    ``alone``; the adapters stay loaded (no reload)."""
    from .adapters import LoadedLora, set_weights, weights_for

    loras = loras or [LoadedLora(path="", file=Path(), hash="", scale=1.0, adapter=LORA_ADAPTER, base_model=[])]
    set_weights(pipe, loras, weights_for(loras, scale, alone))

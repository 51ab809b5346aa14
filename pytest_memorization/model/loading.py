"""Loading a checkpoint: a diffusers folder, a single file plus a local config folder,
or a hub id already in the local Hugging Face cache, with an optional LoRA.

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

from .._io import atomic_write_text, hub_cache_dir, sha256_file
from ..errors import CheckpointError
from .families import SD, checkpoint_keys, default_dtype, family_hint, family_of, single_file_family

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
WEIGHTLESS = {"tokenizer", "tokenizer_2", "tokenizer_3", "scheduler", "feature_extractor", "safety_checker", "image_encoder"}
LORA_ADAPTER = "memorization_lora"


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
    lora_scale: float = 1.0
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


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _memo_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-memorization" / "sha256-memo.json"


def _sha256(path: Path) -> str:
    """sha256 of a file. A Hugging Face cache blob is named by its sha256 (LFS files): no read needed.
    Otherwise memoised on disk by (real path, size, mtime_ns, inode), like make and git trust stat."""
    real = path.resolve()
    if real.parent.name == "blobs" and _HEX64.match(real.name):
        return real.name
    st = real.stat()
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    memo_path = _memo_file()
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if isinstance(memo, dict) and isinstance(memo.get(key), str):
        return memo[key]
    digest = sha256_file(real)
    if st.st_size >= 1 << 24:  # only big files are worth remembering
        try:
            memo = memo if isinstance(memo, dict) else {}
            memo[key] = digest
            atomic_write_text(memo_path, json.dumps(memo))
        except OSError:
            pass  # a read-only home is fine: the hash is just recomputed next time
    return digest


def content_hash(path: Path) -> str:
    """sha256 over every file's relative path and bytes (a folder) or over the file's bytes.
    Symlinked folders and files are followed (two UNets behind symlinks hash differently); a
    folder reached twice through links (a cycle) is read once."""
    if path.is_file():
        return _sha256(path)
    files: list[Path] = []
    seen: set[str] = set()
    for folder, dirs, names in os.walk(path, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [Path(folder) / n for n in names if not n.startswith(".") and (Path(folder) / n).is_file()]
    h = hashlib.sha256()
    for p in sorted(files):
        h.update(str(p.relative_to(path)).encode())
        h.update(_sha256(p).encode())
    return h.hexdigest()


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


def check_folder(path: Path, allow_pickle: bool) -> dict[str, Any]:
    """Check a diffusers folder's layout; return its model_index.json."""
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


def hub_snapshot(repo_id: str) -> Path:
    """The cached snapshot folder of a hub model, or a CheckpointError saying how to cache it."""
    cache = hub_cache_dir()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
        return snapshots / ref.read_text().strip()
    candidates = sorted(snapshots.iterdir()) if snapshots.is_dir() else []
    if candidates:
        return candidates[-1]
    raise CheckpointError(
        f"hub id '{repo_id}' is not in the local Hugging Face cache (looked for {repo}). This run is offline: "
        f"on a connected machine run `hf download {repo_id}` and copy {repo} here (or set HF_HUB_CACHE), "
        "pass a local diffusers folder instead, or allow downloads with --memorization-allow-download"
    )


def _torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def load(source: ModelSource) -> tuple[Any, ModelInfo]:
    """Load the pipeline on its device with the safety checker off. Returns (pipeline, info)."""
    if not source.allow_download:
        os.environ["HF_HUB_OFFLINE"] = "1"  # read at first Hugging Face import; set before it
    kind, path = classify(source)
    device = resolve_device(source.device)
    hint = family_hint(kind, path, lambda: hub_snapshot(source.pretrained))
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
    if kind == "folder":
        assert path is not None
        check_folder(path, source.allow_pickle)
        check_inside(path, source.allow_outside_root)
        pipe = _wrap(lambda: DiffusionPipeline.from_pretrained(
            path, local_files_only=True, use_safetensors=not source.allow_pickle or None, **common), path)
        digest = content_hash(path)
    elif kind == "single-file":
        assert path is not None
        if not source.config:
            raise CheckpointError(
                f"{path}: a single-file checkpoint needs a local config folder, since offline diffusers cannot "
                "fetch its configs from the hub. Pass --memorization-config <diffusers folder of the same "
                "architecture> (or config = \"folder\" in the manifest's [model])"
            )
        cfg = Path(source.config).expanduser()
        if not (cfg / "model_index.json").is_file():
            raise CheckpointError(
                f"--memorization-config {cfg}: not a diffusers folder (no model_index.json); point it at a "
                "pipeline folder of the same architecture as the checkpoint"
            )
        family = single_file_family(path, cfg)  # keys vs config folder: a mismatch is a CheckpointError
        pipeline_class = getattr(diffusers, family.pipeline_class)
        kwargs = dict(common) if family is SD else {"dtype": common["dtype"]}
        from .single_file import text_encoders_from_config  # the ones the file lacks

        kwargs.update(text_encoders_from_config(family.name, checkpoint_keys(path), cfg, common["dtype"]))
        pipe = _wrap(lambda: pipeline_class.from_single_file(
            str(path), config=str(cfg), local_files_only=True, **kwargs), path)
        digest = content_hash(path)
    else:
        if source.allow_download:
            pipe = _wrap(lambda: DiffusionPipeline.from_pretrained(source.pretrained, **common), source.pretrained)
            digest = "hub:" + source.pretrained
        else:
            snap = hub_snapshot(source.pretrained)
            check_folder(snap, source.allow_pickle)
            pipe = _wrap(lambda: DiffusionPipeline.from_pretrained(
                source.pretrained, local_files_only=True, cache_dir=str(hub_cache_dir()), **common), snap)
            digest = content_hash(snap)
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None  # it blacks out images, which would hide a copy
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    info = ModelInfo(source=source.pretrained, kind=kind, content_hash=digest, device=device, dtype=dtype,
                     pipeline_class=type(pipe).__name__, extra={"family": family_of(pipe).name})
    if source.lora:
        info.lora, info.lora_hash = source.lora, load_lora(pipe, Path(source.lora).expanduser(), source)
        info.lora_scale = source.lora_scale
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
    safe, pickled = _weights_in(path)
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


def load_lora(pipe: Any, path: Path, source: ModelSource) -> str:
    """Load a LoRA as a named adapter at ``source.lora_scale``; check that every module in it loaded."""
    from .lora_modules import check_pairs, check_whole, collected_messages

    f = lora_file(path, source.allow_pickle)
    check_pairs(f)  # missing or extra tensors: a clean error before diffusers fails deep inside
    try:
        with collected_messages() as messages:
            pipe.load_lora_weights(str(f.parent), weight_name=f.name, adapter_name=LORA_ADAPTER)
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as e:  # diffusers/PEFT fail in many types; one clean error, not their traceback
        raise CheckpointError(
            f"LoRA {f} does not match model {source.pretrained}: {type(e).__name__}: {str(e)[:300]}. "
            "Was it trained for this base model (same architecture and rank layout)?"
        ) from None
    if LORA_ADAPTER not in _adapters(pipe):
        raise CheckpointError(
            f"LoRA {f} does not match model {source.pretrained}: none of its keys matched a layer of the UNet "
            "or text encoder. Was it trained for this base model?"
        )
    check_whole(pipe, f, LORA_ADAPTER, messages)  # loads whole or not at all
    set_lora_scale(pipe, source.lora_scale)
    return _sha256(f)


def _adapters(pipe: Any) -> set[str]:
    try:
        return {a for names in pipe.get_list_adapters().values() for a in names}
    except (AttributeError, ValueError):
        return set()


def set_lora_scale(pipe: Any, scale: float) -> None:
    """Scale 0 gives exactly the base model's image; the adapter stays loaded (no reload)."""
    pipe.set_adapters([LORA_ADAPTER], adapter_weights=[float(scale)])

"""The ``[model]`` keys of diffusers' loading conventions, checked before anything loads:

    variant = "fp16"            # load *.fp16.safetensors
    revision = "v1.1"           # a hub id's branch, tag or commit in the local cache
    subfolder = "pipelines/a"   # the pipeline's folder inside the model folder or hub repo
    torch_dtype = "float16"     # float32, float16, bfloat16 or auto
    lora = "org/lora"           # a LoRA: a path, or a hub id in the local cache
    loras = [{ path = "loras/style", scale = 0.8 }, { path = "org/subject" }]   # several at once

Every problem is a ``ManifestError`` naming the key and the fix. No torch here.
"""

from __future__ import annotations

import re
from typing import Any

from .._io import hub_repo_dir
from .check import Checker

DTYPES = ("auto", "float32", "float16", "bfloat16")
HUB_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
FILE_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".pth")
LORAS_EXAMPLE = 'loras = [{ path = "loras/style", scale = 0.8 }, { path = "loras/subject" }]'


def is_hub_id(folder: Any, text: str) -> bool:
    """``org/name`` is a hub id unless it exists under ``folder``, or its first folder does (a typo'd
    path), or it names a weights file."""
    try:
        if (folder / text).exists() or (folder / text.split("/")[0]).is_dir():
            return False
    except (OSError, ValueError):
        return False
    return bool(HUB_RE.fullmatch(text)) and not text.lower().endswith(FILE_SUFFIXES)


def lora_value(c: Checker, v: Any, key: str, offline_hub: bool) -> str:
    """A LoRA path (made absolute, checked to exist) or a hub id kept as written (checked to be cached)."""
    text = c.string(v, key, "a path or hub id")
    if is_hub_id(c.dir, text):
        repo = hub_repo_dir(text)
        if offline_hub and c.check_images and not (repo / "snapshots").is_dir():
            c.fail(key, f"{text!r} is neither a local path ({c.dir / text} does not exist) nor a hub id in the "
                        f"local Hugging Face cache ({repo}). Fix the path, or cache the LoRA (`hf download {text}` "
                        "on a connected machine, then copy that folder here)")
        return text
    return str(c.path(text, key, "any", must_exist=c.check_images))


def loading_keys(c: Checker, m: dict[str, Any], spec: Any, offline_hub: bool) -> None:
    """Fill ``spec`` (a ``ModelSpec``) from ``[model]``'s loading keys."""
    if "variant" in m:
        spec.variant = c.string(m["variant"], "model.variant", '"fp16"').strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", spec.variant):
            c.fail("model.variant", f"{spec.variant!r:.60} is not a variant name; write the part of the weight "
                                    'file name between the dots, e.g. variant = "fp16" for *.fp16.safetensors')
    if "revision" in m:
        spec.revision = c.string(m["revision"], "model.revision", '"main"').strip()
        if not spec.revision:
            c.fail("model.revision", 'is empty; write a branch, tag or commit, e.g. revision = "main"')
        if spec.pretrained_kind not in (None, "hub"):
            c.fail("model.revision", f"applies to a hub id, but pretrained is the local {spec.pretrained_kind} "
                                     f"{spec.pretrained} (one revision already); remove revision")
    if "subfolder" in m:
        sub = c.string(m["subfolder"], "model.subfolder", '"a/folder"').strip().strip("/")
        if not sub or sub.startswith(("/", "~")) or ".." in sub.split("/"):
            c.fail("model.subfolder", f"{m['subfolder']!r:.60} is not a folder inside the model; write a relative "
                                      'path without "..", e.g. subfolder = "pipelines/v2"')
        if spec.pretrained_kind == "file":
            c.fail("model.subfolder", "applies to a diffusers folder or hub id, not to a single-file checkpoint")
        if spec.pretrained_kind == "folder" and c.check_images and not (c.dir / spec.pretrained / sub).is_dir():
            c.fail("model.subfolder", f"{sub!r} is not a folder in {spec.pretrained}; give the folder that "
                                      "holds model_index.json")
        spec.subfolder = sub
    if "torch_dtype" in m:
        v = c.string(m["torch_dtype"], "model.torch_dtype", '"float16"').strip().removeprefix("torch.")
        if v not in DTYPES:
            c.fail("model.torch_dtype", f"{m['torch_dtype']!r:.60} is not one of {', '.join(DTYPES)}; "
                                        'write e.g. torch_dtype = "float16"')
        spec.torch_dtype = v
    if "lora" in m:
        spec.lora = lora_value(c, m["lora"], "model.lora", offline_hub)
    if "loras" in m:
        if "lora" in m:
            c.fail("model.loras", "give either lora (one LoRA) or loras (several), not both; " + LORAS_EXAMPLE)
        v = m["loras"]
        if not isinstance(v, list) or not v:
            c.fail("model.loras", f"expected a non-empty array of tables, got {v!r:.60}; write {LORAS_EXAMPLE}")
        out: list[tuple[str, float]] = []
        for i, t in enumerate(v):
            key = f"model.loras[{i}]"
            t = c.table(t, key, ("path", "scale"), '{ path = "loras/style", scale = 0.8 }')
            if "path" not in t:
                c.fail(f"{key}.path", f"missing; every LoRA needs a path: {LORAS_EXAMPLE}")
            path = lora_value(c, t["path"], f"{key}.path", offline_hub)
            scale = c.number(t["scale"], f"{key}.scale", 0.0, 10.0, open_low=True, fix="e.g. scale = 0.8") \
                if "scale" in t else 1.0
            if any(p == path for p, _ in out):
                c.fail(f"{key}.path", f"{path} is listed twice; list each LoRA once")
            out.append((path, scale))
        spec.loras = out

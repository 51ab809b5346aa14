"""Manifests: the TOML file that lists the model, the protected works and their canary prompts.

The key names are the contract (extend, don't rename). ``load_manifest`` validates
everything before any generation starts; every problem is a ``ManifestError`` that
names the file, the key (a dotted path such as ``work[2].prompts``) and the fix.
Imported at plugin start-up: no torch here (images are checked with Pillow only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import hub_cache_dir
from ..config.policy import lora_gate_problem, steps_problem
from ..config.trust import waiver_date
from ..errors import ManifestError, one_line
from ..records import MAX_GENERATION_SIDE, Waiver
from .check import (
    MAX_PARAPHRASES,
    METRIC_RANGES,
    ROOT_MARKERS,
    TOP_KEYS,
    Checker,
    metric_names,
    project_root,
    read_toml,
    tname,
)
from .detectors import detectors_table
from .lines import file_entry_lines
from .loading_keys import is_hub_id, loading_keys

__all__ = ["ModelSpec", "Img2ImgSpec", "WorkSpec", "CanarySpec", "Manifest", "load_manifest", "project_root",
           "MAX_PARAPHRASES", "METRIC_RANGES", "ROOT_MARKERS", "metric_names"]

MODEL_KEYS = ("pretrained", "generator", "config", "lora", "loras", "lora_scale", "gate", "seeds", "steps",
              "guidance_scale", "height", "width", "negative_prompt", "vae_floor", "variant", "revision", "subfolder",
              "torch_dtype")
WORK_KEYS = ("id", "image", "sha256", "prompts", "kind", "thresholds", "paraphrases", "img2img", "waive")
WORK_KINDS = ("work", "mark")
CANARY_KEYS = ("id", "prompt", "paraphrases")
HUB_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
FILE_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".pth")


@dataclass
class ModelSpec:
    pretrained: str | None = None  # absolute path, or a hub id kept as written
    config: str | None = None
    lora: str | None = None
    lora_scale: float | None = None
    seeds: list[int] | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None
    negative_prompt: str | None = None
    gate: str | None = None  # "lora": the LoRA pre-merge gate
    vae_floor: bool | None = None  # also score against the model's VAE round trip of each work
    pretrained_kind: str | None = None  # "folder", "file" or "hub"
    generator: str | None = None  # "package.module:function" (model/hook.py) instead of pretrained
    missing: str | None = None  # why ``pretrained`` is neither a folder nor a cached hub id (an error)
    loras: list[tuple[str, float]] | None = None  # several LoRAs: (path or hub id, scale)
    variant: str | None = None  # diffusers' loading conventions (manifest/loading_keys.py)
    revision: str | None = None
    subfolder: str | None = None
    torch_dtype: str | None = None


@dataclass
class Img2ImgSpec:
    strengths: list[float]
    min_safe_strength: float | None = None


@dataclass
class WorkSpec:
    id: str
    image: Path
    prompts: list[str]
    sha256: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    paraphrases: list[list[str]] = field(default_factory=list)  # per prompt: its paraphrases
    img2img: Img2ImgSpec | None = None
    waive: Waiver | None = None
    kind: str = "work"  # or "mark" (a logo, signature or watermark: searched at small sizes)
    line: int = 0  # 0-based line of its [[work]] header in the manifest (manifest/lines.py)


@dataclass
class CanarySpec:
    id: str
    prompt: str
    paraphrases: list[str] = field(default_factory=list)
    line: int = 0  # 0-based line of its [[canary]] header


@dataclass
class Manifest:
    path: Path
    model: ModelSpec
    thresholds: dict[str, float] = field(default_factory=dict)
    warn: dict[str, float] = field(default_factory=dict)
    metrics: list[str] | None = None
    detectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    works: list[WorkSpec] = field(default_factory=list)
    canaries: list[CanarySpec] = field(default_factory=list)
    project_root: Path | None = None  # paths may not leave it (see ``project_root()``)

    @property
    def root(self) -> Path:
        return self.path.parent


def _model(c: Checker, data: dict[str, Any], require_model: bool, offline_hub: bool = False) -> ModelSpec:
    spec = ModelSpec()
    if "model" not in data and not require_model:
        return spec
    m = c.table(data.get("model"), "model", MODEL_KEYS, '[model] pretrained = "models/base"') if "model" in data else {}
    if "pretrained" in m:
        text = c.string(m["pretrained"], "model.pretrained", "a path or hub id")
        if is_hub_id(c.dir, text):
            spec.pretrained, spec.pretrained_kind = text, "hub"
            repo = hub_cache_dir() / ("models--" + text.replace("/", "--"))
            if offline_hub and c.check_images and not repo.is_dir():  # once, at collection: not per item
                spec.missing = (f"{text!r} is neither a local folder ({c.dir / text} does not exist) nor a hub id "
                                f"in the local Hugging Face cache ({repo}). Fix the path, or cache the model, or "
                                "pass --memorization-allow-download")
        else:
            p = c.path(text, "model.pretrained", "any", must_exist=c.check_images)
            try:
                kind = "folder" if p.is_dir() else "file" if p.is_file() else None
            except OSError:
                kind = None
            spec.pretrained, spec.pretrained_kind = str(p), kind
    elif require_model and "generator" not in m:
        c.fail("model.pretrained", 'missing model: add [model] pretrained = "path/to/diffusers-folder" '
                                   "(or a single .safetensors with config = \"folder\", or a cached hub id), "
                                   "or pass --memorization-model")
    if "generator" in m:
        spec.generator = c.string(m["generator"], "model.generator", '"package.module:function"')
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", spec.generator):
            c.fail("model.generator", f"{spec.generator!r:.80} is not \"package.module:function\", "
                                      'e.g. generator = "mygen.api:generate"')
        if "pretrained" in m:
            c.fail("model.generator", "give either pretrained (a diffusers model) or generator, not both")
    if "config" in m:
        spec.config = str(c.path(m["config"], "model.config", "folder", must_exist=c.check_images))
    loading_keys(c, m, spec, offline_hub)  # variant, revision, subfolder, torch_dtype, lora, loras
    if "lora_scale" in m:
        spec.lora_scale = c.number(m["lora_scale"], "model.lora_scale", 0.0, 10.0, fix="e.g. lora_scale = 1.0")
    if "seeds" in m:
        spec.seeds = c.seeds(m["seeds"], "model.seeds")
    if "steps" in m:
        spec.steps = c.integer(m["steps"], "model.steps", 1, "write e.g. steps = 25")
        if problem := steps_problem(spec.steps):
            c.fail("model.steps", problem)
    if "guidance_scale" in m:
        spec.guidance_scale = c.number(m["guidance_scale"], "model.guidance_scale", 0.0, 100.0,
                                       fix="e.g. guidance_scale = 7.5")
    for side in ("height", "width"):
        if side in m:
            v = m[side]
            if isinstance(v, bool) or not isinstance(v, int) or v < 8 or v % 8:
                c.fail(f"model.{side}", f"{v!r:.60} is not a positive multiple of 8; diffusion models need "
                                        f"multiples of 8, e.g. {side} = 512")
            if v > MAX_GENERATION_SIDE:
                c.fail(f"model.{side}", f"{v} is more than {MAX_GENERATION_SIDE} pixels; generate at the model's "
                                        f"size, e.g. {side} = 512")
            setattr(spec, side, v)
    if "negative_prompt" in m:
        if not isinstance(m["negative_prompt"], str):
            c.fail("model.negative_prompt", f"expected a string, got {tname(m['negative_prompt'])}; put it in double quotes")
        spec.negative_prompt = m["negative_prompt"]
    if "gate" in m:
        if m["gate"] != "lora":
            c.fail("model.gate", f"{m['gate']!r:.60} is not a known gate; the only gate is \"lora\" (gate = \"lora\")")
        if spec.lora is None and not spec.loras:
            c.fail("model.gate", 'gate = "lora" compares the model with and without its LoRA, but no lora is '
                                 'given; add lora = "path/to/lora" (or loras = [...]) to [model] or remove gate')
        if spec.lora_scale is not None and (problem := lora_gate_problem(spec.lora_scale)):
            c.fail("model.lora_scale", problem)
        spec.gate = "lora"
    if "vae_floor" in m:
        if not isinstance(m["vae_floor"], bool):
            c.fail("model.vae_floor", f"expected true or false, got {tname(m['vae_floor'])}; write vae_floor = true")
        spec.vae_floor = m["vae_floor"] is True
    return spec


def _image(c: Checker, w: dict[str, Any], key: str) -> tuple[Path, str | None]:
    from ..images import ImageError, check_work, sha256_file

    image = c.path(w["image"], f"{key}.image", "file", must_exist=c.check_images)
    sha = None
    if "sha256" in w:
        sha = c.string(w["sha256"], f"{key}.sha256", "a SHA-256 hex digest").strip().lower().removeprefix("sha256:")
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            c.fail(f"{key}.sha256", f"{w['sha256']!r:.80} is not a SHA-256 digest (64 hex digits); "
                                    f"compute it with `sha256sum {image.name}`")
    if c.check_images:
        try:
            note = check_work(image)
        except ImageError as e:
            c.fail(f"{key}.image", f"{e}")
        if note:
            import warnings

            warnings.warn(one_line(f"{c.file}: key '{key}.image': {note}"), UserWarning, stacklevel=2)
        if sha is not None:
            try:
                actual = sha256_file(image)
            except OSError as e:
                c.fail(f"{key}.image", f"cannot read {image} ({e}); check its permissions")
            if actual != sha:
                c.fail(f"{key}.sha256", f"{image} has changed: expected sha256 {sha}, actual {actual}; restore "
                                        f"the original image, or update sha256 if the change is intended")
    return image, sha


def _work(c: Checker, w: Any, i: int, example: str) -> WorkSpec:
    key = f"work[{i}]"
    w = c.table(w, key, WORK_KEYS, example)
    for req in ("id", "image", "prompts"):
        if req not in w:
            c.fail(f"{key}.{req}", f"missing; every [[work]] needs id, image and prompts, e.g. {example}")
    wid = c.ident(w["id"], f"{key}.id")
    image, sha = _image(c, w, key)
    prompts = c.strings(w["prompts"], f"{key}.prompts", '["portrait of an astronaut"]')
    spec = WorkSpec(id=wid, image=image, prompts=prompts, sha256=sha)
    if "kind" in w:
        if w["kind"] not in WORK_KINDS:
            c.fail(f"{key}.kind", f"{w['kind']!r:.40} is not a kind of work; write kind = \"work\" (the default) or "
                                  "kind = \"mark\" (a logo, signature or watermark, small against the frame)")
        spec.kind = w["kind"]
    if "thresholds" in w:
        spec.thresholds = c.thresholds(w["thresholds"], f"{key}.thresholds")
    if "paraphrases" in w:
        v, k = w["paraphrases"], f"{key}.paraphrases"
        if isinstance(v, list) and v and all(isinstance(x, list) for x in v):
            if len(v) != len(prompts):
                c.fail(k, f"has {len(v)} lists for {len(prompts)} prompts; give one list per prompt")
            spec.paraphrases = [c.paraphrases(x, f"{k}[{j}]", p, prompts) for j, (x, p) in enumerate(zip(v, prompts))]
        elif isinstance(v, list) and v and len(prompts) > 1:
            c.fail(k, f"an array of strings is ambiguous with {len(prompts)} prompts; give a count, or one "
                      "array per prompt: paraphrases = [[\"...\"], [\"...\"]]")
        elif isinstance(v, list):
            spec.paraphrases = [c.paraphrases(v, k, prompts[0], prompts)]
        else:
            spec.paraphrases = [c.paraphrases(v, k, p, prompts) for p in prompts]
    if "img2img" in w:
        k = f"{key}.img2img"
        t = c.table(w["img2img"], k, ("strengths", "min_safe_strength"), "{ strengths = [0.3, 0.5, 0.75] }")
        if "strengths" not in t:
            c.fail(f"{k}.strengths", "missing; write img2img = { strengths = [0.3, 0.5, 0.75] }")
        s = t["strengths"]
        if not isinstance(s, list) or not s:
            c.fail(f"{k}.strengths", f"expected a non-empty array of numbers, got {s!r:.60}; write strengths = [0.3, 0.5]")
        fix = "e.g. strengths = [0.3, 0.5, 0.75]"
        strengths = [c.number(x, f"{k}.strengths[{j}]", 0.0, 1.0, open_low=True, fix=fix) for j, x in enumerate(s)]
        if len(set(strengths)) != len(strengths):
            c.fail(f"{k}.strengths", f"{strengths} repeats a strength; list each once")
        if "min_safe_strength" not in t:  # without it every copy would only be a warning
            c.fail(f"{k}.min_safe_strength", "missing; without it a copy at any strength is only a warning, so "
                                             "this check could never fail: write e.g. min_safe_strength = 0.5")
        safe = c.number(t["min_safe_strength"], f"{k}.min_safe_strength", 0.0, 1.0, open_low=True,
                        fix="e.g. min_safe_strength = 0.5")
        if max(strengths) < safe:
            c.fail(f"{k}.min_safe_strength", f"{safe:g} is above every strength {strengths}, so no strength is "
                                             f"checked and this check could never fail; add a strength >= {safe:g}")
        spec.img2img = Img2ImgSpec(strengths=strengths, min_safe_strength=safe)
    if "waive" in w:
        spec.waive = _waiver(c, w["waive"], f"{key}.waive")
    return spec


WAIVE_EXAMPLE = 'waive = { reason = "licensed from the rights holder, ticket LEGAL-42", until = 2027-06-30 }'


def _waiver(c: Checker, v: Any, key: str) -> Waiver:
    """``waive = { reason = "...", until = 2027-06-30 }``: both required (a waiver with no end date
    would be a permanent hole in the gate)."""
    t = c.table(v, key, ("reason", "until"), WAIVE_EXAMPLE)
    for req in ("reason", "until"):
        if req not in t:
            c.fail(f"{key}.{req}", f"missing; a waiver needs a reason and an end date: {WAIVE_EXAMPLE}")
    reason = c.string(t["reason"], f"{key}.reason").strip()
    if not reason:
        c.fail(f"{key}.reason", f"is empty; say why this similarity was accepted: {WAIVE_EXAMPLE}")
    until = waiver_date(t["until"], lambda message: ManifestError(c.file, message, key=f"{key}.until"))
    return Waiver(reason=one_line(reason), until=until)


def _canary(c: Checker, v: Any, i: int) -> CanarySpec:
    key = f"canary[{i}]"
    t = c.table(v, key, CANARY_KEYS, '[[canary]] prompt = "a photo of sks person"')
    if "prompt" not in t:
        c.fail(f"{key}.prompt", 'missing; every [[canary]] needs a prompt, e.g. prompt = "a photo of sks person"')
    cid = c.ident(t["id"], f"{key}.id") if "id" in t else f"canary-{i}"
    prompt = c.string(t["prompt"], f"{key}.prompt", "a non-empty prompt string")
    para = c.paraphrases(t["paraphrases"], f"{key}.paraphrases", prompt, [prompt]) if "paraphrases" in t else []
    return CanarySpec(id=cid, prompt=prompt, paraphrases=para)


def _entries(c: Checker, data: dict[str, Any], name: str, example: str) -> list[Any]:
    v = data.get(name, [])
    if isinstance(v, dict):
        c.fail(name, f"[{name}] is a single table; use [[{name}]] (double brackets) for each entry")
    if not isinstance(v, list):
        c.fail(name, f"expected [[{name}]] tables, got {tname(v)}; write {example}")
    return v


def load_manifest(path: str | Path, *, allow_outside_root: bool = False, check_images: bool = True,
                  require_model: bool = True, offline_hub: bool = False) -> Manifest:
    """Read and validate a manifest. Raises ``ManifestError`` (never anything else) on any problem.

    Relative paths are read from the manifest's folder and may not leave ``project_root(path)``
    unless ``allow_outside_root``. ``check_images=False`` skips opening (and hashing) the works.
    ``require_model=False`` accepts a manifest without ``[model] pretrained`` (the command line
    gives the model). ``offline_hub``: a hub id must already be in the local cache (checked here, once).
    """
    p = Path(path).expanduser().absolute()
    data = read_toml(p)
    try:
        c = Checker(p, allow_outside_root, check_images)
    except (OSError, RuntimeError, ValueError) as e:
        raise ManifestError(p, f"cannot locate the project root ({e}); check the path") from None
    c.table(data, "", TOP_KEYS, "[model] ... [[work]] ...")
    model = _model(c, data, require_model, offline_hub)
    manifest = Manifest(path=p, model=model, project_root=c.root)
    if "thresholds" in data:
        manifest.thresholds = c.thresholds(data["thresholds"], "thresholds")
    if "warn" in data:
        manifest.warn = c.thresholds(data["warn"], "warn", gating=False)
    if "metrics" in data:
        names = metric_names()
        metrics = c.strings(data["metrics"], "metrics", '["tiled_l2", "ssim"]')
        for i, name in enumerate(metrics):
            if name not in names:
                c.fail(f"metrics[{i}]", c.unknown(name, names, None, "metric"))
        manifest.metrics = metrics
    if "detectors" in data:
        manifest.detectors = detectors_table(c, data["detectors"])
    example = '[[work]] id = "astronaut" image = "works/astronaut.png" prompts = ["..."]'
    manifest.works = [_work(c, w, i, example) for i, w in enumerate(_entries(c, data, "work", example))]
    canaries = _entries(c, data, "canary", '[[canary]] prompt = "..."')
    manifest.canaries = [_canary(c, v, i) for i, v in enumerate(canaries)]
    seen: dict[str, str] = {}
    for kind, specs in (("work", manifest.works), ("canary", manifest.canaries)):
        for i, s in enumerate(specs):
            if s.id in seen:
                c.fail(f"{kind}[{i}].id", f"duplicate id '{s.id}' (already used by {seen[s.id]}); ids must be unique")
            seen[s.id] = f"{kind}[{i}]"
    if not manifest.works and not manifest.canaries:
        c.fail(None, f"lists no works and no canaries, so it would check nothing; add {example} or a [[canary]]")
    lines = file_entry_lines(p)
    for kind, specs in (("work", manifest.works), ("canary", manifest.canaries)):
        for s, line in zip(specs, lines[kind]):
            s.line = line
    if model.missing:  # reported after the rest of the file was checked, so its other errors come first
        c.fail("model.pretrained", model.missing)
    return manifest

"""Manifests: the TOML file that lists the model, the protected works and their canary prompts.

The key names are the contract (extend, don't rename). ``load_manifest`` validates
everything before any generation starts; every problem is a ``ManifestError`` that
names the file, the key and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ModelSpec:
    pretrained: str | None = None
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


@dataclass
class CanarySpec:
    id: str
    prompt: str
    paraphrases: list[str] = field(default_factory=list)


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

    @property
    def root(self) -> Path:
        return self.path.parent


def load_manifest(path: str | Path, *, allow_outside_root: bool = False, check_images: bool = True) -> Manifest:
    raise NotImplementedError

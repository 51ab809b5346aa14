"""Plain data that flows one way: manifest -> generation -> scores -> verdicts -> report.

Nothing here imports torch at module load; tensors are typed as ``Any``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Verdict = Literal["pass", "warn", "fail", "error"]
VERDICT_ORDER: dict[str, int] = {"error": 0, "fail": 1, "warn": 2, "pass": 3}


@dataclass(frozen=True)
class GenerationSettings:
    steps: int = 25
    guidance_scale: float = 7.5
    height: int = 512
    width: int = 512
    negative_prompt: str | None = None

    def key(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Generation:
    """Images (N, 3, H, W) float in [0, 1] on the CPU, with the prompt and seed of each."""

    images: Any
    prompts: list[str]
    seeds: list[int]
    settings: GenerationSettings
    from_cache: int = 0

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass
class Work:
    """A protected work: an id and an image, loaded as (3, H, W) float in [0, 1]."""

    id: str
    image: Any  # torch.Tensor (3, H, W) in [0, 1]
    path: Path | None = None
    sha256: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)


@dataclass
class Crossing:
    """One metric score of one image against one work, and what it means."""

    metric: str
    value: float
    threshold: float | None
    direction: str  # "distance" or "similarity"
    verdict: Verdict


@dataclass
class ImageResult:
    """One generated image's outcome: one row of report.json and of the HTML report."""

    item: str
    prompt: str
    seed: int
    work: str | None
    scores: dict[str, float]
    thresholds: dict[str, float]
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    image: str | None = None  # path of the saved PNG, relative to the report dir
    work_image: str | None = None
    detectors: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    pixels: Any = None  # the image tensor, kept in memory until the report is written

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("pixels")
        return d

"""Plain data that flows one way: manifest -> generation -> scores -> verdicts -> report.

Nothing here imports torch at module load; tensors are typed as ``Any``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Verdict = Literal["pass", "warn", "fail", "error"]
VERDICTS: tuple[Verdict, ...] = ("error", "fail", "warn", "pass")  # most severe first: the one severity order
SEVERITY: dict[str, int] = {v: i for i, v in enumerate(VERDICTS)}

# The rules whose finding means "this score crossed its line" (drawn as crossed in every report).
CROSSING_RULES = frozenset({"threshold", "flat_guard", "ssim.unconfirmed", "waiver", "lora_gate.crossed", "img2img.copy",
                            "noise_magnitude", "zero_step", "lora_delta", "seed_diversity", "subject",
                            "subject_concentration"})

# The keys of each reference-free detector's table: a manifest's ``[detectors]`` (``manifest.detectors``)
# and, ``threshold`` excepted, a policy's (``config.trust``). These two need a model with a LoRA.
DETECTOR_KEYS: dict[str, tuple[str, ...]] = {
    "noise_magnitude": ("threshold", "steps", "seeds", "gate"),
    "seed_diversity": ("threshold", "gate"),
    "zero_step": ("threshold", "timesteps", "norm_weight", "align_weight"),
    "lora_delta": ("threshold", "kind"),
    "subject_concentration": ("threshold", "seeds", "gate"),
}
LORA_DETECTORS = ("lora_delta", "subject_concentration")

MAX_GENERATION_SIDE = 4096  # pixels; 65536 x 65536 was a 1,000-line traceback, then out of memory


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
    cached: list[bool] = field(default_factory=list)  # per image: read from the generation cache
    early_exit: list[Any] = field(default_factory=list)  # per image: None, or {step, steps, x0_scores}

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True)
class Waiver:
    """A reviewed, accepted similarity to one work (``waive`` in the manifest): until ``until``
    (inclusive) its copies are expected failures with ``reason``; after it they fail again."""

    reason: str
    until: dt.date


@dataclass
class Work:
    """A protected work: an id and an image, loaded as (3, H, W) float in [0, 1]."""

    id: str
    image: Any  # torch.Tensor (3, H, W) in [0, 1]
    path: Path | None = None
    sha256: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    waiver: Waiver | None = None
    kind: str = "work"  # "work", or "mark": a logo, signature or watermark, searched small (metrics.local_copy)


@dataclass(frozen=True)
class Finding:
    """What one rule found about one image: the only input of ``judging.verdict.decide``.

    ``rule`` names the rule (``threshold``, ``warn_band``, ``lora_gate.crossed``,
    ``lora_gate.approaching``, ``lora_gate.moved``, ``img2img.below_safe_strength``,
    ``noise_magnitude``, ``seed_diversity``, ``baseline.worsened``, ``baseline.missing``);
    ``severity`` is what the rule asks for (``pass`` findings are information for the report).
    ``gating`` findings also become the item's failure lines.
    """

    rule: str
    severity: Verdict
    message: str
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None
    work: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Finding:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class DetectorScore:
    """What a reference-free detector measured for one prompt: the input of its rule
    (``judging.detectors.detector_finding``). ``score``/``threshold`` follow the detector's
    ``direction``: ``similarity`` (higher = more memorized: noise magnitude, zero-step, LoRA delta)
    or ``distance`` (lower = more memorized: seed diversity's closest pair)."""

    name: str
    prompt: str
    score: float
    threshold: float
    calibrated: bool = False
    direction: str = "similarity"
    gate: bool = True  # False: a crossing warns only (seed diversity without ``gate = true``)
    n_images: int = 0
    trigger_words: tuple[str, ...] | None = None  # None: not available for this family
    agreement: tuple[float, float] | None = None  # subject concentration: (LoRA, base) mean pairwise agreement


@dataclass
class ImageResult:
    """One generated image's outcome: one row of report.json and of the HTML report."""

    item: str
    prompt: str
    seed: int
    work: str | None
    scores: dict[str, float]
    thresholds: dict[str, float]
    verdict: Verdict = "pass"  # set by judging.verdict.decide, from the findings, and nowhere else
    reasons: list[str] = field(default_factory=list)  # the messages of the findings that set the verdict
    findings: list[Finding] = field(default_factory=list)
    image: str | None = None  # path of the saved PNG, relative to the report dir
    work_image: str | None = None
    detectors: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    pixels: Any = None  # the image tensor, kept in memory until the report is written

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "pixels"}
        d["findings"] = [f.to_json() for f in self.findings]
        return _plain(d)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ImageResult:
        """The inverse of ``to_json`` (``pixels`` stay behind): ``from_json(r.to_json()).to_json() ==
        r.to_json()``. How rows travel from xdist workers and back from report.json."""
        names = {f.name for f in dataclasses.fields(cls)} - {"pixels", "findings"}
        row = cls(**{k: v for k, v in d.items() if k in names})
        row.findings = [Finding.from_json(f) for f in d.get("findings") or []]
        return row

    def crossed(self, metric: str) -> bool:
        """Whether a failing or waived finding of this row names ``metric``: what reports draw as crossed
        (they read the judge's findings and never compare a score with a threshold themselves)."""
        return any(f.metric == metric and f.rule in CROSSING_RULES for f in self.findings)


_SCALARS = (str, int, float, bool, type(None))


def _plain(obj: Any) -> Any:
    if type(obj) in _SCALARS:  # most values of a row: no dataclass test (a row has ~45 of them)
        return obj
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    return obj


@dataclass
class Outcome:
    """What an item's evaluation produced: its image rows and the findings about the whole item
    (detectors, baseline); ``failures`` is filled by ``judging.verdict.decide``, once."""

    results: list[ImageResult]
    findings: list[Finding] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

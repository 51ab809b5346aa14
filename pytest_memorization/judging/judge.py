"""The one judge: what was measured -> findings -> verdict, in one documented order, for every path.

Every entry point (a manifest item run with diffusers or with a ``generator`` hook, the Python
assertion helpers, ``pytest-memorization rescore``, an item that could not be evaluated, an xdist
worker) measures what it can into a ``Measured`` record and calls ``judge``. Nothing else runs a
rule. The order, once:

1. **nothing measured** -> ``error`` (no image was scored against a work with a threshold and no
   detector ran: a check that checks nothing never passes);
2. **threshold** and **warn band** against each image's nearest work (``judging.thresholds``), with
   every threshold floored ONCE here: a work's own thresholds and the manifest's may tighten the
   command line's / policy's (``Rules.floors``), never relax them;
3. **VAE floor** annotation (the closer of work and VAE round trip gated; the message says so);
4. **LoRA gate** (paired with the base model's images of the same seeds), then **amplified** gate;
5. **SSIM agreement and flat guard**: an SSIM-only copy (threshold or LoRA-gate crossing) that no other scored metric confirms, or on a near-flat image, is a
   warning (``judging.flat_guard``);
6. **img2img** safe strength (re-reads the copy findings the flat guard left);
7. **detectors** (``judging.detectors.detector_finding``: a NaN score is an ``error``), including the LoRA
   gate's reference-free rule ``judging.lora_gate.subject_concentration_finding`` (a LoRA that draws one subject);
8. **early exit** notes (information only);
9. **baseline** (``judging.baselines``), then **waivers** (``judging.waivers``);
10. ``judging.verdict.decide``: the one function that sets a verdict.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config.policy import with_floors
from ..records import DetectorScore, Finding, ImageResult, Outcome, Waiver, Work
from .thresholds import MetricRule, rules_for, score_rows


@dataclass
class Measured:
    """What one check measured: the judge's only input besides ``Rules``.

    ``scores[metric]`` is an (N, M) matrix of the N images against ``works``; ``images`` the
    (N, 3, H, W) images themselves (for the flat guard and the report), or None where only scores
    exist. ``extras[i]`` is information for image i's report row (never judged)."""

    item: str
    prompts: list[str]
    seeds: list[int]
    works: list[Work] = field(default_factory=list)
    scores: dict[str, Any] = field(default_factory=dict)
    images: Any = None
    extras: list[dict[str, Any]] = field(default_factory=list)
    base_scores: dict[str, Any] | None = None  # the LoRA gate: base model's images of the same seeds
    base_images: Any = None
    amplified: tuple[float, dict[str, Any]] | None = None  # (lambda, scores) of the amplified LoRA
    vae_floor: dict[str, Any] | None = None  # scores vs the VAE round trips, and "<metric>@work"
    img2img: list[float] | None = None  # per image: its img2img strength
    min_safe_strength: float | None = None
    detectors: list[DetectorScore] = field(default_factory=list)
    detector_rows: list[dict[str, Any]] = field(default_factory=list)  # per image: r.detectors
    error: str | None = None  # could not be evaluated: the reason (one error row)
    lora_alone: str | None = None  # several LoRAs, this one alone: named in the LoRA-gate findings

    @classmethod
    def failed(cls, item: str, prompt: str, error: BaseException | str) -> Measured:
        why = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
        return cls(item=item, prompts=[prompt], seeds=[-1], error=why)

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True)
class Rules:
    """The rules in force for one check: built once by ``make_rules`` (floors applied there and, for
    each work's own thresholds, in ``judge``)."""

    metrics: dict[str, MetricRule]
    floors: dict[str, float] = field(default_factory=dict)
    lora_gate_tolerance: dict[str, float] | None = None
    waivers: dict[str, Waiver] = field(default_factory=dict)
    own_work: str | None = None  # the item's own work (a stale waiver of it is reported)
    today: dt.date | None = None

    def with_waivers(self, waivers: Mapping[str, Waiver], own_work: str | None) -> Rules:
        return dataclasses.replace(self, waivers=dict(waivers), own_work=own_work)

    def thresholds(self) -> dict[str, float]:
        return {n: r.threshold for n, r in self.metrics.items() if r.threshold is not None}


def make_rules(metrics: Mapping[str, Any], thresholds: Mapping[str, float], warn: Mapping[str, float],
               band: float, floors: Mapping[str, float], *,
               lora_gate_tolerance: Mapping[str, float] | None = None) -> Rules:
    """The one way to build ``Rules``: ``thresholds`` (manifest, marker, argument) floored by ``floors``
    (command line, ini, policy), each metric's default where neither sets one."""
    return Rules(metrics=rules_for(metrics, with_floors(thresholds, floors), warn, band), floors=dict(floors),
                 lora_gate_tolerance=dict(lora_gate_tolerance) if lora_gate_tolerance else None)


def floored(works: list[Work], floors: Mapping[str, float]) -> list[Work]:
    """``works`` with their own thresholds no laxer than ``floors`` (a work may tighten, never relax)."""
    out = []
    for w in works:  # most works set no threshold of their own: kept as they are (a catalogue holds many)
        t = with_floors(w.thresholds, floors, add=False) if w.thresholds else w.thresholds
        out.append(w if t == w.thresholds else dataclasses.replace(w, thresholds=t))
    return out


Baseline = Callable[[Outcome], None]  # adds baseline.* findings to an outcome (judging.baselines)


def judge(m: Measured, rules: Rules, *, baseline: Baseline | None = None) -> Outcome:
    """Run every rule on ``m`` in the documented order and decide the verdicts (see the module)."""
    from .verdict import decide

    if m.error is not None:
        row = ImageResult(item=m.item, prompt=m.prompts[0] if m.prompts else "", seed=-1, work=None, scores={},
                          thresholds={}, findings=[Finding("error", "error", m.error)])
        out = Outcome([row])
        out.failures = decide(out.results, out.findings)
        return out
    works = floored(m.works, rules.floors)
    gating = {n: r for n, r in rules.metrics.items() if n in m.scores}
    results = _rows(m, works, gating)
    item_findings: list[Finding] = []
    if not m.detectors and not any(r.thresholds for r in results):  # 1. nothing measured
        item_findings.append(Finding("error", "error", _nothing_checked(m, works, gating)))
    _vae_floor(results, works, m.vae_floor)  # 3.
    if m.base_scores is not None:  # 4.
        from .flat_guard import guard_approaches

        item_findings += guard_approaches(_lora_gate(results, works, gating, m, rules), results, gating)
        if m.lora_alone:
            item_findings = [_named(f, m.lora_alone) for f in item_findings]
            for r in results:
                r.findings = [_named(f, m.lora_alone) for f in r.findings]
    if m.images is not None and results:  # 5.
        from .flat_guard import apply_flat_guard

        apply_flat_guard(results, m.images)
    if m.img2img is not None:  # 6.
        from .img2img import img2img_findings

        for r, strength in zip(results, m.img2img):
            r.findings = img2img_findings(r.findings, r.work or "", strength, m.min_safe_strength)
    from .detectors import detector_finding

    for d in m.detectors:  # 7.
        found = detector_finding(d)
        if found is not None:
            item_findings.append(found)
    for r in results:  # 8.
        stop = r.extra.get("early_exit")
        if isinstance(stop, dict) and stop.get("stopped"):
            from .early_exit import stopped_finding

            r.findings.append(stopped_finding(stop))
    out = Outcome(results, item_findings)
    if baseline is not None:  # 9.
        baseline(out)
    if rules.waivers:
        from .waivers import apply_waivers

        out.findings += apply_waivers(out.results, rules.waivers, rules.today or dt.date.today(), rules.own_work)
    out.failures = decide(out.results, out.findings)  # 10.
    return out


def _rows(m: Measured, works: list[Work], gating: dict[str, MetricRule]) -> list[ImageResult]:
    """One row per image: threshold and warn-band findings against its nearest work (2.)."""
    n = len(m.prompts)
    if works and gating:
        results = score_rows(m.item, m.prompts, m.seeds, m.scores, works, gating)
    else:
        results = [ImageResult(item=m.item, prompt=p, seed=int(s), work=None, scores={}, thresholds={})
                   for p, s in zip(m.prompts, m.seeds)]
    for i, r in enumerate(results):
        if m.images is not None and i < len(m.images):
            r.pixels = m.images[i]
        if i < len(m.extras):
            r.extra.update(m.extras[i])
        if i < len(m.detector_rows):
            r.detectors.update(m.detector_rows[i])
    assert len(results) == n
    return results


def _nothing_checked(m: Measured, works: list[Work], gating: dict[str, MetricRule]) -> str:
    if not works:
        return ("checked nothing: no protected work to compare the images with and no detector; add [[work]] "
                "entries (or a [detectors] table) to the manifest")
    if not gating:
        return "checked nothing: no metric was scored; list at least one metric (metrics = [\"tiled_l2\"])"
    return ("checked nothing: no scored metric has a threshold; set one (e.g. [thresholds] tiled_l2 = 0.15) or "
            "use a metric with a default threshold")


def _vae_floor(results: list[ImageResult], works: list[Work], floor: dict[str, Any] | None) -> None:
    """Under VAE-floor scoring: both scores of each row against its nearest work, and the finding says
    which one gated."""
    if floor is None:
        return
    index = {w.id: j for j, w in enumerate(works)}
    names = [n for n in floor if not n.endswith("@work")]
    for i, r in enumerate(results):
        j = index.get(r.work, 0) if r.work is not None else 0
        work = {n: float(floor[f"{n}@work"][i, j]) for n in names}
        r.extra["vae_floor"] = {"work": work, "vae_round_trip": {n: float(floor[n][i, j]) for n in names},
                                "gates": "the closer of the two"}
        r.findings = [dataclasses.replace(f, message=f"{f.message} (its VAE round trip; the work itself: "
                                                     f"{work[f.metric]:.4f})")
                      if f.metric in work and f.value is not None and f.value != work[f.metric] else f
                      for f in r.findings]


def _lora_gate(results: list[ImageResult], works: list[Work], gating: dict[str, MetricRule], m: Measured,
               rules: Rules) -> list[Finding]:
    """The LoRA gate (and its amplified run) on the paired scores; the rows record both sides (4.)."""
    from .lora_gate import lora_gate_findings

    assert m.base_scores is not None
    gate, item = lora_gate_findings(m.scores, m.base_scores, works, gating, tolerance=rules.lora_gate_tolerance)
    index = {w.id: j for j, w in enumerate(works)}
    for i, (r, found) in enumerate(zip(results, gate)):
        j = index[r.work] if r.work is not None else 0
        r.findings += found
        r.extra.setdefault("lora_gate", {})["base_scores"] = {n: float(m.base_scores[n][i, j]) for n in gating}
        if m.base_images is not None:
            r.extra["base_pixels"] = m.base_images[i]
    if m.amplified is not None:
        lam, scores = m.amplified
        per_image, amp_item = lora_gate_findings(scores, m.base_scores, works, gating, amplified=lam,
                                                 tolerance=rules.lora_gate_tolerance)
        item += amp_item
        for i, (r, found) in enumerate(zip(results, per_image)):
            j = index[r.work] if r.work is not None else 0
            r.findings += found
            r.extra["lora_gate"]["amplified"] = {
                "lambda": lam, "scores": {n: float(scores[n][i, j]) for n in gating},
                "closest": {n: _closest(scores[n][i], g.direction) for n, g in gating.items()}}
    return item


def _named(f: Finding, lora: str) -> Finding:
    return dataclasses.replace(f, message=f"{f.message} ({lora})") if f.rule.startswith("lora_gate") else f


def _closest(row: Any, direction: str) -> float:
    return float(row.min() if direction == "distance" else row.max())


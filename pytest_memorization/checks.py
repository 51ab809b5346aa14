"""What one manifest item does: manifest -> generation -> scores -> verdicts.

``plan_for`` resolves every setting once per manifest (item > command line > ini >
manifest > default). The ``check_*`` functions return ``ImageResult`` rows plus the
failure messages; the item raises. Loading, generation and scoring run in the item's
setup, so a run that cannot evaluate shows as ERROR, and a copy as FAILED.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .detection import run_detectors
from .loading import ModelSource
from .manifest import Manifest, WorkSpec
from .metrics.base import crosses, worsening
from .records import GenerationSettings, ImageResult, Work
from .session import MemorizationSession
from .verdicts import MetricRule, failure_message, judge, rules_for

DEFAULT_SEEDS = [0, 1, 2, 3]


@dataclass
class Plan:
    source: ModelSource
    gen: GenerationSettings
    seeds: list[int]
    thresholds: dict[str, float]
    warn: dict[str, float]
    metrics: dict[str, Any]
    rules: dict[str, MetricRule]
    lora_gate: bool
    works: list[Work] = field(default_factory=list)


@dataclass
class Outcome:
    results: list[ImageResult]
    failures: list[str] = field(default_factory=list)


def plan_for(session: MemorizationSession, manifest: Manifest) -> Plan:
    s, m = session.settings, manifest.model  # the manifest's paths are already resolved and checked
    source = session.source(session.model_path("model", m.pretrained), config=session.model_path("config", m.config),
                            lora=session.model_path("lora", m.lora), lora_scale=s.pick("lora_scale", m.lora_scale))
    gen = GenerationSettings(
        steps=s.pick("steps", m.steps) or 25,
        guidance_scale=m.guidance_scale if m.guidance_scale is not None else 7.5,
        height=m.height or 512, width=m.width or 512, negative_prompt=m.negative_prompt)
    thresholds = s.thresholds(manifest.thresholds)
    metrics = session.metrics_for(manifest.metrics, thresholds)
    gate = bool(s.lora_gate or m.gate == "lora")
    if gate and not source.lora:
        from .errors import MemorizationConfigError

        raise MemorizationConfigError(f"{manifest.path}: the LoRA gate needs a LoRA: set lora in [model] "
                                      "or pass --memorization-lora")
    return Plan(source=source, gen=gen, seeds=s.pick("seeds", m.seeds) or list(DEFAULT_SEEDS),
                thresholds=thresholds, warn=dict(manifest.warn), metrics=metrics,
                rules=rules_for(metrics, thresholds, manifest.warn, s.warn_band), lora_gate=gate)


def load_works(plan: Plan, manifest: Manifest) -> list[Work]:
    if not plan.works:
        from .images import load_image, sha256_file

        plan.works = [Work(id=w.id, image=load_image(w.image), path=w.image,
                           sha256=w.sha256 or sha256_file(w.image), thresholds=dict(w.thresholds))
                      for w in manifest.works]
    return plan.works


def _versions(plan: Plan) -> dict[str, str]:
    return {n: m.version for n, m in plan.metrics.items()}


def check_prompt(session: MemorizationSession, manifest: Manifest, plan: Plan, item: str,
                 prompt: str) -> Outcome:
    """Generate every seed for ``prompt``, score against every work, judge, gate."""
    from .scoring import score_matrices

    model = session.model(plan.source)
    works = load_works(plan, manifest)
    g = plan.gen
    session.record_run(model, _run_extra(plan))
    if plan.lora_gate:
        with model.lora_scale(0.0):
            base = model.generate([prompt], plan.seeds, steps=g.steps, guidance_scale=g.guidance_scale,
                                  height=g.height, width=g.width, negative_prompt=g.negative_prompt, cache=True)
    gen = model.generate([prompt], plan.seeds, steps=g.steps, guidance_scale=g.guidance_scale,
                         height=g.height, width=g.width, negative_prompt=g.negative_prompt)
    scores = score_matrices(plan.metrics, gen.images, works, session.reference_cache)
    results = judge(item, gen.prompts, gen.seeds, scores, works, plan.rules)
    for r, img in zip(results, gen.images):
        r.pixels = img
    failures = [failure_message(results)] if any(r.verdict == "fail" for r in results) else []
    if plan.lora_gate:
        base_scores = score_matrices(plan.metrics, base.images, works, session.reference_cache)
        failures += lora_gate(results, base_scores, base.images, works, plan, session.settings.lora_gate_tolerance,
                              from_cache=base.from_cache)
    failures += run_detectors(session, manifest, model, plan, [prompt], results, gen.images)
    return Outcome(results, failures)


def lora_gate(results: list[ImageResult], base_scores: dict[str, Any], base_images: Any, works: list[Work],
              plan: Plan, tolerance: dict[str, float], *, from_cache: int = 0) -> list[str]:
    """Fail when the LoRA moves an image toward a work by more than the tolerance, or makes it cross
    a threshold that the base image with the same seed did not cross."""
    index = {w.id: j for j, w in enumerate(works)}
    lines = []
    for i, r in enumerate(results):
        j = index[r.work] if r.work is not None else 0
        base = {n: float(base_scores[n][i, j]) for n in plan.rules}
        r.extra["lora_gate"] = {"base_scores": base, "from_cache": from_cache}
        r.extra["base_pixels"] = base_images[i]
        for n, rule in plan.rules.items():
            t = works[j].thresholds.get(n, rule.threshold)
            tol = tolerance.get(n, abs(t) * 0.1 if t is not None else None)
            if tol is None:
                continue
            delta = worsening(base[n], r.scores[n], rule.direction)
            if delta > tol:
                r.verdict = "fail"
                msg = (f"{n} moved {delta:+.4f} toward '{r.work}' with the LoRA (base {base[n]:.4f} -> "
                       f"LoRA {r.scores[n]:.4f}; tolerance {tol:g})")
                r.reasons.append(msg)
                lines.append(f"LoRA gate: prompt {r.prompt!r}, seed {r.seed}: {msg}")
            elif t is not None and crosses(r.scores[n], t, rule.direction) and not crosses(base[n], t, rule.direction):
                r.verdict = "fail"
                msg = f"{n} crosses {t:g} with the LoRA ({r.scores[n]:.4f}) but not without it ({base[n]:.4f})"
                r.reasons.append(msg)
                lines.append(f"LoRA gate: prompt {r.prompt!r}, seed {r.seed}: {msg}")
    return lines


def check_img2img(session: MemorizationSession, manifest: Manifest, plan: Plan, item: str,
                  work: WorkSpec) -> Outcome:
    """Start from the work itself at each strength; fail when a strength at or above
    ``min_safe_strength`` still yields a copy. Records the similarity-versus-strength curve."""
    from .images import fit_to
    from .scoring import score_matrices

    assert work.img2img is not None
    model = session.model(plan.source)
    works = load_works(plan, manifest)
    target = next(w for w in works if w.id == work.id)
    g = plan.gen
    session.record_run(model, _run_extra(plan))
    init = fit_to(target.image, g.height, g.width)
    results: list[ImageResult] = []
    curve: list[dict[str, Any]] = []
    failures: list[str] = []
    safe = work.img2img.min_safe_strength
    for strength in sorted(work.img2img.strengths):
        gen = model.img2img(init, work.prompts[:1], plan.seeds, strength=strength, steps=g.steps,
                            guidance_scale=g.guidance_scale, negative_prompt=g.negative_prompt)
        scores = score_matrices(plan.metrics, gen.images, [target], session.reference_cache)
        rows = judge(f"{item}@{strength:g}", gen.prompts, gen.seeds, scores, [target], plan.rules)
        curve.append({"strength": strength, **{n: _worst(rows, n, r.direction) for n, r in plan.rules.items()}})
        for r, img in zip(rows, gen.images):
            r.item, r.pixels = item, img
            r.extra["img2img"] = {"strength": strength, "min_safe_strength": safe}
            if r.verdict == "fail" and (safe is None or strength < safe):
                r.verdict = "warn"  # a copy below the safe strength is expected: it is what the curve shows
                r.reasons.append(f"copy at strength {strength:g}, below min_safe_strength {safe}")
        bad = [r for r in rows if r.verdict == "fail"]
        if bad:
            failures.append(f"img2img from '{work.id}' at strength {strength:g} (>= min_safe_strength {safe}) "
                            f"still yields a copy:\n" + failure_message(bad).split("\n", 1)[1])
        results += rows
    for r in results:
        r.extra["img2img_curve"] = curve
    return Outcome(results, failures)


def _worst(rows: list[ImageResult], name: str, direction: str) -> float:
    vals = [r.scores[name] for r in rows]
    return min(vals) if direction == "distance" else max(vals)


def check_canary(session: MemorizationSession, manifest: Manifest, plan: Plan, item: str, prompt: str) -> Outcome:
    """A prompt-only canary: no reference image, only the reference-free detectors."""
    model = session.model(plan.source)
    session.record_run(model, _run_extra(plan))
    g = plan.gen
    results = [ImageResult(item=item, prompt=prompt, seed=s, work=None, scores={}, thresholds={}, verdict="pass")
               for s in plan.seeds]
    images = None
    if "seed_diversity" in manifest.detectors:
        gen = model.generate([prompt], plan.seeds, steps=g.steps, guidance_scale=g.guidance_scale,
                             height=g.height, width=g.width, negative_prompt=g.negative_prompt)
        images = gen.images
        for r, img in zip(results, images):
            r.pixels = img
    failures = run_detectors(session, manifest, model, plan, [prompt], results, images)
    return Outcome(results, failures)


def _run_extra(plan: Plan) -> dict[str, Any]:
    g = plan.gen
    return {"metrics": _versions(plan), "steps": g.steps, "guidance_scale": g.guidance_scale,
            "height": g.height, "width": g.width, "seeds": plan.seeds, "thresholds": plan.thresholds}

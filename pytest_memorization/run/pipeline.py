"""What one manifest item does: manifest -> generation -> scores -> findings.

``plan_for`` resolves every setting once per manifest (item > command line > ini >
manifest > default). The ``check_*`` functions return an ``Outcome``: image rows carrying
their findings, plus the item's findings; the verdict is decided afterwards, once, by
``judging.verdict.decide``. Loading, generation and scoring run in the item's setup, so a
run that cannot evaluate shows as ERROR, and a copy as FAILED.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..config.policy import lora_gate_problem, with_floors
from ..judging.flat_guard import apply_flat_guard
from ..judging.img2img import img2img_findings
from ..judging.lora_gate import lora_gate_findings
from ..judging.thresholds import MetricRule, rules_for, score_rows
from ..manifest.load import Manifest, WorkSpec
from ..model.loading import ModelSource
from ..records import GenerationSettings, ImageResult, Outcome, Work
from .detect import run_detectors
from .session import MemorizationSession


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
    floors: dict[str, float] = field(default_factory=dict)  # the command line's and ini's thresholds
    vae_floor: bool = False  # also score against the model's VAE round trip of each work, gate on the closer
    vae_works: dict[tuple[Any, ...], list[Work]] = field(default_factory=dict)  # per (model, size)
    cache: bool = True  # read and write the generation cache (--memorization-generation-cache)


def plan_for(session: MemorizationSession, manifest: Manifest) -> Plan:
    s, m = session.settings, manifest.model  # the manifest's paths are already resolved and checked
    source = session.source(session.model_path("model", m.pretrained), config=session.model_path("config", m.config),
                            lora=session.model_path("lora", m.lora), lora_scale=s.pick("lora_scale", m.lora_scale),
                            generator=_generator(s, m.generator))
    gen = s.generation(m)
    thresholds = s.thresholds(manifest.thresholds)
    metrics = session.metrics_for(manifest.metrics, thresholds)
    gate = bool(s.lora_gate or m.gate == "lora")
    vae_floor = bool(s.pick("vae_floor", m.vae_floor))
    if (gate or vae_floor) and source.generator:
        from ..model.hook import not_applicable

        raise not_applicable("the LoRA gate" if gate else "VAE-floor scoring (--memorization-vae-floor)")
    if gate and source.lora and lora_gate_problem(source.lora_scale):
        from ..errors import MemorizationConfigError

        raise MemorizationConfigError(f"{manifest.path}: {lora_gate_problem(source.lora_scale)}")
    if gate and not source.lora:
        from ..errors import MemorizationConfigError

        raise MemorizationConfigError(f"{manifest.path}: the LoRA gate needs a LoRA: set lora in [model] "
                                      "or pass --memorization-lora")
    return Plan(source=source, gen=gen, seeds=s.seeds_for(m.seeds),
                thresholds=thresholds, warn=dict(manifest.warn), metrics=metrics,
                rules=rules_for(metrics, thresholds, manifest.warn, s.warn_band), lora_gate=gate,
                floors=dict(s.threshold), vae_floor=vae_floor,
                cache=bool(s.generation_cache) and not source.generator)


def _generator(s: Any, manifest_value: str | None) -> str | None:
    """The generator hook in use: --memorization-generator, else the manifest's unless --memorization-model
    names a model (command line > manifest, as for every setting)."""
    if "model" in s.explicit and "generator" not in s.explicit:
        return None
    return s.pick("generator", manifest_value)  # type: ignore[no-any-return]


def load_works(plan: Plan, manifest: Manifest) -> list[Work]:
    """The manifest's works; a work's own thresholds may not relax the CI's (``plan.floors``)."""
    if not plan.works:
        from ..images import load_image, sha256_file

        plan.works = [Work(id=w.id, image=load_image(w.image), path=w.image,
                           sha256=w.sha256 or sha256_file(w.image), thresholds=with_floors(w.thresholds, plan.floors, add=False),
                           waiver=w.waive, kind=w.kind)
                      for w in manifest.works]
    return plan.works


def _vae_works(session: MemorizationSession, plan: Plan, model: Any, works: list[Work], height: int,
               width: int) -> list[Work]:
    """Each work as the model's VAE returns it, at the generation size (``model.vae_floor``), as works
    whose reference-feature cache key is the model and the work's sha256."""
    import hashlib

    from ..metrics.matrix import fit_works
    from ..model.vae_floor import vae_round_trips

    info = model.info
    key = (info.content_hash, info.device, info.dtype, height, width)
    if key not in plan.vae_works:
        shas = [w.sha256 or "" for w in works]
        rts = vae_round_trips(model, fit_works(works, height, width), shas, session.cache_dir)
        plan.vae_works[key] = [
            Work(id=w.id, image=rt, path=w.path, thresholds=w.thresholds, waiver=w.waiver,
                 sha256=hashlib.sha256(f"vae-floor|{'|'.join(map(str, key))}|{sha}".encode()).hexdigest() if sha else None)
            for w, rt, sha in zip(works, rts, shas)]
    return plan.vae_works[key]


def _score(session: MemorizationSession, plan: Plan, model: Any, images: Any,
           works: list[Work]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(gating scores, scores against the VAE round trips or None). Under VAE-floor scoring each image is
    scored against each work and against its round trip; the closer of the two gates."""
    from ..metrics.matrix import closer_of, score_matrices

    scores = score_matrices(plan.metrics, images, works, session.reference_cache)
    if not plan.vae_floor:
        return scores, None
    rts = _vae_works(session, plan, model, works, int(images.shape[-2]), int(images.shape[-1]))
    floor = score_matrices(plan.metrics, images, rts, session.reference_cache)
    for n in scores:  # kept for the report: scores against the works themselves
        floor[f"{n}@work"] = scores[n]
    return closer_of(scores, {n: floor[n] for n in scores}, plan.metrics), floor


def _record_vae_floor(results: list[ImageResult], works: list[Work], floor: dict[str, Any] | None) -> None:
    """Both scores of each row against its nearest work, in ``extra["vae_floor"]``."""
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


def _versions(plan: Plan) -> dict[str, str]:
    return {n: m.version for n, m in plan.metrics.items()}


def check_prompt(session: MemorizationSession, manifest: Manifest, plan: Plan, item: str,
                 prompt: str) -> Outcome:
    """Generate every seed for ``prompt``, score against every work, find; under the LoRA gate
    also generate the base model's images of the same seeds (cached) and pair them."""
    model = session.model(plan.source)
    works = load_works(plan, manifest)
    session.record_run(model, _run_extra(plan))
    early, no_early = _early_exit(session, plan, works, model)
    if plan.lora_gate:
        with model.lora_scale(0.0):
            base = model.generate([prompt], plan.seeds, plan.gen, cache=plan.cache, early_exit=early)
    gen = model.generate([prompt], plan.seeds, plan.gen, cache=plan.cache, early_exit=early)
    scores, floor = _score(session, plan, model, gen.images, works)
    results = score_rows(item, gen.prompts, gen.seeds, scores, works, plan.rules)
    _record_vae_floor(results, works, floor)
    for r, img, hit, stop in zip(results, gen.images, gen.cached, gen.early_exit):
        r.pixels = img
        r.extra["from_cache"] = hit
        _mark_exit(r, stop, no_early)
        if early is not None and stop is None:
            r.extra["early_exit"] = {"stopped": False}
    if plan.lora_gate:
        base_scores, _ = _score(session, plan, model, base.images, works)
        gate, item_findings = lora_gate_findings(scores, base_scores, works, plan.rules,
                                                 tolerance=session.settings.lora_gate_tolerance)
        index = {w.id: j for j, w in enumerate(works)}
        for i, (r, found) in enumerate(zip(results, gate)):
            j = index[r.work] if r.work is not None else 0
            r.findings += found
            r.extra["lora_gate"] = {"base_scores": {n: float(base_scores[n][i, j]) for n in plan.rules},
                                    "from_cache": base.from_cache,
                                    "base_generated": len(base.seeds) - base.from_cache}
            if base.early_exit[i] is not None:
                r.extra["lora_gate"]["base_early_exit"] = base.early_exit[i]
            r.extra["base_pixels"] = base.images[i]
        item_findings += _amplified(session, plan, model, prompt, works, base_scores, results)
    else:
        item_findings = []
    apply_flat_guard(results, gen.images)
    detected = run_detectors(session, manifest, model, plan, [prompt], results, gen.images)
    return Outcome(results, [*item_findings, *detected])


def _amplified(session: MemorizationSession, plan: Plan, model: Any, prompt: str, works: list[Work],
               base_scores: dict[str, Any], results: list[ImageResult]) -> list[Any]:
    """Extraction amplification (FineXtract): the same seeds at LoRA weight lambda x scale, which for a
    LoRA is base + lambda * (LoRA - base) to first order; judged by the gate rule against the base."""
    lam = session.settings.lora_amplify
    if not lam:
        return []
    with model.lora_scale(lam * plan.source.lora_scale):
        amp = model.generate([prompt], plan.seeds, plan.gen, cache=plan.cache)
    scores, _ = _score(session, plan, model, amp.images, works)
    per_image, item = lora_gate_findings(scores, base_scores, works, plan.rules, amplified=lam,
                                         tolerance=session.settings.lora_gate_tolerance)
    index = {w.id: j for j, w in enumerate(works)}
    for i, (r, found) in enumerate(zip(results, per_image)):
        j = index[r.work] if r.work is not None else 0
        r.findings += found
        r.extra["lora_gate"]["amplified"] = {"lambda": lam, "scores": {n: float(scores[n][i, j]) for n in plan.rules},
                                             "closest": {n: _closest(scores[n][i], plan.rules[n].direction)
                                                         for n in plan.rules}}
    return item


def _early_exit(session: MemorizationSession, plan: Plan, works: list[Work], model: Any) -> tuple[Any, str | None]:
    """The item's early exit (``model.early_exit``, ``judging.early_exit``), or None and why not."""
    if not session.settings.early_exit:
        return None, None
    from ..config.policy import EARLY_EXIT_AT
    from ..judging.early_exit import clearly_far, why_not
    from ..metrics.matrix import score_matrices
    from ..model.early_exit import SUPPORTED_FAMILIES, EarlyExit, applicable

    if plan.vae_floor:  # x0 would be judged against the works alone, not the closer VAE round trips
        return None, "early exit is off under the VAE floor"
    if not applicable(model.family.name, model.pipe):
        return None, f"early exit supports {', '.join(SUPPORTED_FAMILIES)}; this model is {model.family.name}"
    reason = why_not(plan.rules, works, plan.gen.steps)
    if reason:
        return None, reason
    gating = {n: r for n, r in plan.rules.items()
              if r.threshold is not None or any(n in w.thresholds for w in works)}
    metrics = {n: plan.metrics[n] for n in gating}
    quick = _unaligned(session, metrics)

    def far(images: Any) -> list[dict[str, float] | None]:
        """The item's own (aligned) metrics decide. Unaligned scores first, as a cheap veto: aligning can
        only bring an image closer, so an image not far unaligned is not far aligned either."""
        if quick and any(f is None for f in clearly_far(score_matrices(quick, images, works), works, gating)):
            return [None] * int(images.shape[0])
        return clearly_far(score_matrices(metrics, images, works, session.reference_cache), works, gating)

    return EarlyExit(far, EARLY_EXIT_AT), None


def _unaligned(session: MemorizationSession, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The same metrics without the alignment search (None when they are not aligned anyway)."""
    if not any(getattr(m, "align", False) for m in metrics.values()):
        return None
    from ..metrics import get_metric

    return {n: get_metric(n, **{**session.metric_options(n), "align": False}) for n in metrics}


def _mark_exit(r: ImageResult, stop: dict[str, Any] | None, no_early: str | None) -> None:
    """The report says which images stopped early (a ``pass`` finding: information) and why an item could not."""
    from ..config.policy import EARLY_EXIT_FACTOR
    from ..records import Finding

    if no_early:
        r.extra["early_exit"] = {"stopped": False, "not_applied": no_early}
    if stop is None:
        return
    r.extra["early_exit"] = {"stopped": True, **stop}
    far = ", ".join(f"{n} {v:.3f}" for n, v in stop["x0_scores"].items())
    r.findings.append(Finding("early_exit", "pass", f"stopped at step {stop['step']} of {stop['steps']}: its "
                              f"predicted image x0 ({far}) was {EARLY_EXIT_FACTOR:g}x past every threshold "
                              "against every work; the image scored is that x0"))


def _closest(row: Any, direction: str) -> float:
    return float(row.min() if direction == "distance" else row.max())


def check_img2img(session: MemorizationSession, manifest: Manifest, plan: Plan, item: str,
                  work: WorkSpec) -> Outcome:
    """Start from the work itself at each strength; a copy at or above ``min_safe_strength``
    fails (``judging.img2img``). Records the similarity-versus-strength curve."""
    from ..images import fit_to

    assert work.img2img is not None
    model = session.model(plan.source)
    works = load_works(plan, manifest)
    target = next(w for w in works if w.id == work.id)
    g = plan.gen
    session.record_run(model, _run_extra(plan))
    init = fit_to(target.image, g.height, g.width)
    results: list[ImageResult] = []
    curve: list[dict[str, Any]] = []
    safe = work.img2img.min_safe_strength
    for strength in sorted(work.img2img.strengths):
        gen = model.img2img(init, work.prompts[:1], plan.seeds, plan.gen, strength=strength, cache=plan.cache)
        scores, floor = _score(session, plan, model, gen.images, [target])
        rows = score_rows(item, gen.prompts, gen.seeds, scores, [target], plan.rules)
        _record_vae_floor(rows, [target], floor)
        apply_flat_guard(rows, gen.images)
        curve.append({"strength": strength, **{n: _worst(rows, n, r.direction) for n, r in plan.rules.items()}})
        for r, img, hit in zip(rows, gen.images, gen.cached):
            r.pixels = img
            r.extra["from_cache"] = hit
            r.extra["img2img"] = {"strength": strength, "min_safe_strength": safe}
            r.findings = img2img_findings(r.findings, work.id, strength, safe)
        results += rows
    for r in results:
        r.extra["img2img_curve"] = curve
    return Outcome(results)


def _worst(rows: list[ImageResult], name: str, direction: str) -> float:
    vals = [r.scores[name] for r in rows]
    return min(vals) if direction == "distance" else max(vals)


def check_canary(session: MemorizationSession, manifest: Manifest, plan: Plan, item: str, prompt: str) -> Outcome:
    """A prompt-only canary: no reference image, only the reference-free detectors."""
    model = session.model(plan.source)
    session.record_run(model, _run_extra(plan))
    results = [ImageResult(item=item, prompt=prompt, seed=s, work=None, scores={}, thresholds={})
               for s in plan.seeds]
    images = None
    if "seed_diversity" in manifest.detectors:
        images = model.generate([prompt], plan.seeds, plan.gen, cache=plan.cache).images
        for r, img in zip(results, images):
            r.pixels = img
    return Outcome(results, run_detectors(session, manifest, model, plan, [prompt], results, images))


def _run_extra(plan: Plan) -> dict[str, Any]:
    g = plan.gen
    return {"metrics": _versions(plan), "steps": g.steps, "guidance_scale": g.guidance_scale,
            "height": g.height, "width": g.width, "seeds": plan.seeds,
            # the thresholds in force: the manifest's and the command line's, and each metric's default
            "thresholds": {n: r.threshold for n, r in plan.rules.items() if r.threshold is not None},
            **({"vae_floor": "scored against each work and the model's VAE round trip of it; the closer gates"}
               if plan.vae_floor else {})}

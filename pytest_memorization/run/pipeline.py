"""What one manifest item measures: manifest -> generation -> scores, as a ``judging.judge.Measured``.

``plan_for`` resolves every setting once per manifest (item > command line > ini >
manifest > default), including the ``Rules`` the judge applies. The ``measure_*`` functions
generate and score; they run no rule: the item hands what they measured to ``judging.judge``,
the one judge of every path. Loading, generation and scoring run in the item's setup, so a
run that cannot evaluate shows as ERROR, and a copy as FAILED.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config.policy import lora_gate_problem
from ..judging.judge import Measured, Rules, floored, make_rules
from ..manifest.load import Manifest, WorkSpec
from ..model.loading import ModelSource
from ..records import GenerationSettings, Work
from .detect import run_detectors
from .session import MemorizationSession


@dataclass
class Plan:
    source: ModelSource
    gen: GenerationSettings
    seeds: list[int]
    metrics: dict[str, Any]
    rules: Rules  # the judge's rules: thresholds floored once, warn band, LoRA-gate tolerance
    lora_gate: bool
    works: list[Work] = field(default_factory=list)
    vae_floor: bool = False  # also score against the model's VAE round trip of each work, gate on the closer
    vae_works: dict[tuple[Any, ...], list[Work]] = field(default_factory=dict)  # per (model, size)
    cache: bool = True  # read and write the generation cache (--memorization-generation-cache)


def plan_for(session: MemorizationSession, manifest: Manifest) -> Plan:
    s, m = session.settings, manifest.model  # the manifest's paths are already resolved and checked
    source = session.source(session.model_path("model", m.pretrained), config=session.model_path("config", m.config),
                            lora=session.model_path("lora", m.lora), lora_scale=s.pick("lora_scale", m.lora_scale),
                            generator=_generator(s, m.generator), **loading_conventions(s, m))
    gen = s.generation(m)
    metrics = session.metrics_for(manifest.metrics, s.thresholds(manifest.thresholds))
    gate = bool(s.lora_gate or m.gate == "lora")
    vae_floor = bool(s.pick("vae_floor", m.vae_floor))
    if (gate or vae_floor) and source.generator:
        from ..model.hook import not_applicable

        raise not_applicable("the LoRA gate" if gate else "VAE-floor scoring (--memorization-vae-floor)")
    if gate and source.lora_specs() and lora_gate_problem(source.lora_scale):
        from ..errors import MemorizationConfigError

        raise MemorizationConfigError(f"{manifest.path}: {lora_gate_problem(source.lora_scale)}")
    if gate and not source.lora_specs():
        from ..errors import MemorizationConfigError

        raise MemorizationConfigError(f"{manifest.path}: the LoRA gate needs a LoRA: set lora in [model] "
                                      "or pass --memorization-lora")
    rules = make_rules(metrics, manifest.thresholds, manifest.warn, s.warn_band, s.threshold,
                       lora_gate_tolerance=s.lora_gate_tolerance)
    return Plan(source=source, gen=gen, seeds=s.seeds_for(m.seeds),
                metrics=metrics,
                rules=rules, lora_gate=gate, vae_floor=vae_floor,
                cache=bool(s.generation_cache) and not source.generator)


def loading_conventions(s: Any, m: Any) -> dict[str, Any]:
    """[model]'s variant, revision, subfolder, torch_dtype and loras, under the command line's (a LoRA given
    there, --memorization-lora, replaces the manifest's loras)."""
    out = {k: s.pick(k, getattr(m, k)) for k in ("variant", "revision", "subfolder")}
    out["dtype"] = s.pick("dtype", m.torch_dtype)
    out["loras"] = None if "lora" in s.explicit else m.loras
    return out


def _generator(s: Any, manifest_value: str | None) -> str | None:
    """The generator hook in use: --memorization-generator, else the manifest's unless --memorization-model
    names a model (command line > manifest, as for every setting)."""
    if "model" in s.explicit and "generator" not in s.explicit:
        return None
    return s.pick("generator", manifest_value)  # type: ignore[no-any-return]


def load_works(plan: Plan, manifest: Manifest) -> list[Work]:
    """The manifest's works (their own thresholds as written: the judge floors them)."""
    if not plan.works:
        from ..images import load_image, sha256_file

        plan.works = [Work(id=w.id, image=load_image(w.image), path=w.image,
                           sha256=w.sha256 or sha256_file(w.image), thresholds=dict(w.thresholds),
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
            Work(id=w.id, image=rt, path=w.path, thresholds=w.thresholds, waiver=w.waiver, kind=w.kind,
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


def _versions(plan: Plan) -> dict[str, str]:
    return {n: m.version for n, m in plan.metrics.items()}


def measure_prompt(session: MemorizationSession, manifest: Manifest, plan: Plan, item: str,
                   prompt: str) -> Measured:
    """Generate every seed for ``prompt`` and score it against every work; under the LoRA gate also
    generate the base model's images of the same seeds (cached) and score them, for the pairing."""
    model = session.model(plan.source)
    works = load_works(plan, manifest)
    session.record_run(model, _run_extra(plan))
    early, no_early = _early_exit(session, plan, works, model)
    base = None
    if plan.lora_gate:
        with model.lora_scale(0.0):
            base = model.generate([prompt], plan.seeds, plan.gen, cache=plan.cache, early_exit=early)
    gen = model.generate([prompt], plan.seeds, plan.gen, cache=plan.cache, early_exit=early)
    scores, floor = _score(session, plan, model, gen.images, works)
    m = Measured(item, gen.prompts, gen.seeds, works, scores, images=gen.images, vae_floor=floor,
                 extras=[_row_extra(gen, i, early, no_early) for i in range(len(gen))])
    if base is not None:
        m.base_scores, _ = _score(session, plan, model, base.images, works)
        m.base_images = base.images
        for i, extra in enumerate(m.extras):
            extra["lora_gate"] = {"from_cache": base.from_cache, "base_generated": len(base.seeds) - base.from_cache}
            stop = base.early_exit[i] if i < len(base.early_exit) else None
            if stop is not None:
                extra["lora_gate"]["base_early_exit"] = stop
        lam = session.settings.lora_amplify
        if lam:  # extraction amplification (FineXtract): base + lambda * (LoRA - base), to first order
            with model.lora_scale(lam * plan.source.lora_scale):
                amp = model.generate([prompt], plan.seeds, plan.gen, cache=plan.cache)
            m.amplified = (lam, _score(session, plan, model, amp.images, works)[0])
    m.detectors, m.detector_rows = run_detectors(session, manifest, model, plan, [prompt], gen.seeds, gen.images)
    return m


def _row_extra(gen: Any, i: int, early: Any, no_early: str | None) -> dict[str, Any]:
    """Image i's report information: from the cache or generated, stopped early or not. A generator
    hook gives no per-image cache or early-exit lists: its images are generated, never stopped."""
    extra: dict[str, Any] = {"from_cache": bool(gen.cached[i]) if i < len(gen.cached) else False}
    stop = gen.early_exit[i] if i < len(gen.early_exit) else None
    if no_early:
        extra["early_exit"] = {"stopped": False, "not_applied": no_early}
    if stop is not None:
        extra["early_exit"] = {"stopped": True, **stop}
    elif early is not None:
        extra["early_exit"] = {"stopped": False}
    return extra


def measure_prompt_lora_alone(session: MemorizationSession, manifest: Manifest, plan: Plan, item: str, prompt: str,
                              index: int) -> Measured:
    """Under the LoRA gate with several LoRAs: ``measure_prompt`` with only LoRA ``index`` on, at its own
    scale (the others at weight 0), so each LoRA is gated alone as well as all together. The base images
    are the same (cached) as the together item's."""
    model = session.model(plan.source)
    with model.lora_alone(index):
        m = measure_prompt(session, manifest, plan, item, prompt)
    lora = model.info.loras[index]
    for extra in m.extras:
        extra["lora_alone"] = {"index": index + 1, "path": lora.path, "sha256": lora.hash, "scale": lora.scale}
    m.lora_alone = f"LoRA {index + 1} alone: {lora.path}"
    return m


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
    works = floored(works, plan.rules.floors)  # judged with the floors: stop only what they call far
    reason = why_not(plan.rules.metrics, works, plan.gen.steps)
    if reason:
        return None, reason
    gating = {n: r for n, r in plan.rules.metrics.items()
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


def measure_img2img(session: MemorizationSession, manifest: Manifest, plan: Plan, item: str,
                    work: WorkSpec) -> Measured:
    """Start from the work itself at each strength and score against it; records the
    similarity-versus-strength curve (the judge applies ``judging.img2img``'s safe-strength rule)."""
    import torch

    from ..images import fit_to

    assert work.img2img is not None
    model = session.model(plan.source)
    works = load_works(plan, manifest)
    target = next(w for w in works if w.id == work.id)
    g = plan.gen
    session.record_run(model, _run_extra(plan))
    init = fit_to(target.image, g.height, g.width)
    safe = work.img2img.min_safe_strength
    parts: list[tuple[float, Any, dict[str, Any], dict[str, Any] | None]] = []
    curve: list[dict[str, Any]] = []
    for strength in sorted(work.img2img.strengths):
        gen = model.img2img(init, work.prompts[:1], plan.seeds, plan.gen, strength=strength, cache=plan.cache)
        scores, floor = _score(session, plan, model, gen.images, [target])
        parts.append((strength, gen, scores, floor))
        curve.append({"strength": strength, **{n: _closest(scores[n][:, 0], r.direction)
                                               for n, r in plan.rules.metrics.items() if n in scores}})
    m = Measured(item, [p for _, gen, _, _ in parts for p in gen.prompts],
                 [s for _, gen, _, _ in parts for s in gen.seeds], [target],
                 {n: torch.cat([sc[n] for _, _, sc, _ in parts]) for n in parts[0][2]},
                 images=torch.cat([gen.images for _, gen, _, _ in parts]),
                 img2img=[strength for strength, gen, _, _ in parts for _ in gen.seeds], min_safe_strength=safe)
    if parts[0][3] is not None:
        m.vae_floor = {n: torch.cat([fl[n] for _, _, _, fl in parts]) for n in parts[0][3]}  # type: ignore[index]
    for strength, gen, _, _ in parts:
        m.extras += [{"from_cache": bool(gen.cached[i]) if i < len(gen.cached) else False,
                      "img2img": {"strength": strength, "min_safe_strength": safe}, "img2img_curve": curve}
                     for i in range(len(gen))]
    return m


def _closest(row: Any, direction: str) -> float:
    return float(row.min() if direction == "distance" else row.max())


def measure_canary(session: MemorizationSession, manifest: Manifest, plan: Plan, item: str,
                   prompt: str) -> Measured:
    """A ``[[canary]]`` prompt: generated and compared with every protected work of the manifest, plus
    the reference-free detectors. (A canary with neither works nor detectors is a collection error.)"""
    model = session.model(plan.source)
    works = load_works(plan, manifest)
    session.record_run(model, _run_extra(plan))
    gen = model.generate([prompt], plan.seeds, plan.gen, cache=plan.cache)
    scores, floor = _score(session, plan, model, gen.images, works) if works else ({}, None)
    m = Measured(item, gen.prompts, gen.seeds, works, scores, images=gen.images, vae_floor=floor,
                 extras=[_row_extra(gen, i, None, None) for i in range(len(gen))])
    m.detectors, m.detector_rows = run_detectors(session, manifest, model, plan, [prompt], gen.seeds, gen.images)
    return m


def _run_extra(plan: Plan) -> dict[str, Any]:
    g = plan.gen
    return {"metrics": _versions(plan), "steps": g.steps, "guidance_scale": g.guidance_scale,
            "height": g.height, "width": g.width, "seeds": plan.seeds,
            # the thresholds in force: the manifest's and the command line's, and each metric's default
            "thresholds": plan.rules.thresholds(),
            **({"vae_floor": "scored against each work and the model's VAE round trip of it; the closer gates"}
               if plan.vae_floor else {})}

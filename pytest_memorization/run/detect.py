"""The manifest's ``[detectors]`` table run on an item's prompt: scores only; the rules that
turn them into findings live in ``judging.detectors``. Every detector measures under the
item's own ``GenerationSettings`` (``plan.gen``: schedule, size, negative prompt), the ones its
images are generated with.

- ``noise_magnitude`` (Wen et al., ICLR 2024): gates (warns with ``gate = false``) when the
  mean of d over its ``seeds`` (default the item's) reaches the threshold. The threshold is the one written in the manifest (reported as
  *uncalibrated*), else the calibration file for this exact model; with neither, the item
  is an error that says to calibrate. Flagged prompts name their trigger tokens.
- ``seed_diversity`` (Carlini et al., 2023): the closest pair of a prompt's generations
  across seeds (tiled L2). Weak with few seeds, so it gates only with ``gate = true``.
- ``zero_step`` (after Asthana & Belagiannis, ICLR 2026) and ``lora_delta`` (the LoRA's change
  of the guidance vector): pure-noise scores with thresholds like noise_magnitude's (manifest,
  else their own calibration file). A flagged prompt's rows carry a per-pixel ``map``.
- ``subject_concentration`` (a model with a LoRA): the prompt in several contexts with each seed,
  with the LoRA and with it at weight 0; how much more the LoRA's images agree with each other than
  the base's. Threshold as above (its own calibration file); its rule is the LoRA gate's
  (``judging.lora_gate.subject_concentration_finding``). Each row records its image's agreement.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from ..errors import MemorizationConfigError
from ..judging.detectors import SEED_DIVERSITY_DEFAULT
from ..records import DetectorScore

PURE_NOISE = ("zero_step", "lora_delta")  # calibrated like noise_magnitude, scored on the seeds' pure noise


def detector_settings(plan: Any, name: str) -> Any:
    """The generation settings a detector measures under: the item's own (schedule, size, negative
    prompt), with classifier-free guidance on for noise magnitude and its trigger tokens."""
    from ..detectors.common import with_guidance

    return with_guidance(plan.gen) if name == "noise_magnitude" else plan.gen


def _seeds(cfg: dict[str, Any], plan: Any) -> list[int]:
    """The detector's own ``seeds`` from the manifest, else the item's."""
    return list(cfg.get("seeds") or plan.seeds)


def noise_threshold(session: Any, model: Any, cfg: dict[str, Any], plan: Any,
                    name: str = "noise_magnitude") -> tuple[float, bool]:
    """(threshold, calibrated). A calibration applies only to the model and settings it was made with."""
    policy = getattr(session.settings, "policy", None)
    if cfg.get("threshold") is not None:
        if policy is not None:  # the pull request wrote it: under a policy only a trusted calibration counts
            raise MemorizationConfigError(
                f"[detectors] {name} = {{ threshold = {cfg['threshold']} }}: under the policy {policy.path} a detector "
                "threshold comes from a calibration file the policy trusts ([trust] calibrations), not from the "
                "manifest; remove the threshold and calibrate")
        return float(cfg["threshold"]), False
    from ..detectors.calibration import calibration_path, load_calibration, settings_record

    path = session.settings.path("calibration")
    path = calibration_path(path, name) if path is not None else None
    if path is None or not path.is_file():
        raise MemorizationConfigError(
            f"{name} has no threshold: no calibration file at {path}. Calibrate this model with "
            "`pytest --memorization --memorization-calibrate`, or write an explicit threshold in the manifest "
            f"([detectors] {name} = {{ threshold = 3.2 }}), which the report marks as uncalibrated")
    if policy is not None:
        from ..config.trust import check_calibration

        check_calibration(policy, path)
    cal = load_calibration(path, fingerprint=model.fingerprint, detector=name)
    steps, extra = _options(name, cfg)
    cal.check_compatible(steps=steps, settings=settings_record(model.pipe, detector_settings(plan, name), name, extra))
    return float(cal.threshold), True


def _options(name: str, cfg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(steps as the calibration records it, the detector's own settings a threshold depends on)."""
    if name == "noise_magnitude":
        return int(cfg.get("steps", 1)), {}
    if name == "zero_step":
        from ..detectors.zero_step import ALIGN_WEIGHT, NORM_WEIGHT

        return int(cfg.get("timesteps", 1)), {"norm_weight": float(cfg.get("norm_weight", NORM_WEIGHT)),
                                              "align_weight": float(cfg.get("align_weight", ALIGN_WEIGHT))}
    if name == "subject_concentration":
        from ..detectors.subject_concentration import CONTEXTS, GRID

        return 1, {"contexts": list(CONTEXTS), "grid": GRID}
    return 1, {"kind": str(cfg.get("kind", "guidance"))}


def _pure_noise_scorer(name: str, model: Any, cfg: dict[str, Any], session: Any) -> Any:
    """The detector's full scorer: (pipe, prompts, seeds, settings, **kw) -> (scores, maps)."""

    if model.family.name != "sd":
        raise MemorizationConfigError(
            f"{name} is not applicable to {model.family.label} models yet: it needs the Stable Diffusion 1/2 UNet "
            f"and text encoder. Remove it from [detectors] for this model, or use noise_magnitude")
    steps, extra = _options(name, cfg)
    if name == "zero_step":
        from ..detectors.zero_step import zero_step_scores

        # the unconditional passes on pure noise depend on the model and the seed only: one per
        # seed for the whole session, whatever the number of items
        cache = session.uncond_noise.setdefault(model.fingerprint, {})

        def zero(*args: Any, **kw: Any) -> tuple[Any, Any]:
            z = zero_step_scores(*args, timesteps=steps, uncond_cache=cache, **extra, **kw)
            return z.score, z.maps

        return zero
    if not model.info.lora:
        raise MemorizationConfigError(
            "lora_delta needs a model with a LoRA: set lora in the manifest's [model] (or --memorization-lora), "
            "or remove lora_delta from [detectors]")
    from ..detectors.lora_delta import lora_delta_scores

    def delta(*args: Any, **kw: Any) -> tuple[Any, Any]:
        scores, maps, _ = lora_delta_scores(*args, base=lambda: model.lora_scale(0.0), **extra, **kw)
        return scores, maps

    return delta


def _pixel_map(m: Any) -> list[list[float]]:
    """A latent-resolution map scaled to [0, 1] by its own maximum (rounded for report.json)."""
    peak = float(m.max())
    m = m / peak if peak > 0 else m * 0
    return [[round(float(v), 3) for v in row] for row in m.tolist()]


def _per_seed(rows: list[tuple[int, dict[str, Any]]], seeds: list[int]) -> list[tuple[dict[str, Any], Any]]:
    """Each image's row with its seed's index in the detector's seeds (None when the detector used other seeds)."""
    index = {s: i for i, s in enumerate(seeds)}
    return [(row, index.get(seed)) for seed, row in rows]


def _run_pure_noise(name: str, model: Any, cfg: dict[str, Any], session: Any, plan: Any, prompt: str,
                    rows: list[tuple[int, dict[str, Any]]]) -> DetectorScore:
    from ..judging.detectors import flagged

    scorer = _pure_noise_scorer(name, model, cfg, session)
    threshold, calibrated = noise_threshold(session, model, cfg, plan, name)
    scores, maps = scorer(model.pipe, [prompt], plan.seeds, detector_settings(plan, name))
    d = DetectorScore(name, prompt, float(scores[0].mean()), threshold, calibrated)
    hit = flagged(d)
    for row, i in _per_seed(rows, plan.seeds):
        if i is None:
            continue
        entry: dict[str, Any] = {"score": d.score, "threshold": threshold, "calibrated": calibrated,
                                 "seed_score": float(scores[0, i]), "flagged": hit}
        if hit:  # where: the per-pixel map over this seed's image (latent pixels, [0, 1])
            entry["map"] = _pixel_map(maps[0, i])
        row[name] = entry
    return d


def _require_lora(name: str, model: Any) -> None:
    if model.family.name != "sd":
        raise MemorizationConfigError(
            f"{name} is not applicable to {model.family.label} models yet: it needs the Stable Diffusion 1/2 "
            f"pipeline. Remove it from [detectors] for this model")
    if not model.info.lora:
        raise MemorizationConfigError(
            f"{name} needs a model with a LoRA: set lora in the manifest's [model] (or --memorization-lora), "
            f"or remove {name} from [detectors]")


def _subject_scorer(model: Any, keep_images: bool = False) -> Any:
    """(pipe, prompts, seeds, settings, **kw) -> SubjectConcentration, the base being the adapter at weight 0."""
    from ..detectors.subject_concentration import subject_concentration_scores

    _require_lora("subject_concentration", model)

    def score(*args: Any, **kw: Any) -> Any:
        return subject_concentration_scores(*args, base=lambda: model.lora_scale(0.0), keep_images=keep_images, **kw)

    return score


def _run_subject(model: Any, cfg: dict[str, Any], session: Any, plan: Any, prompt: str,
                 rows: list[tuple[int, dict[str, Any]]]) -> DetectorScore:
    from ..judging.detectors import flagged

    name = "subject_concentration"
    scorer = _subject_scorer(model)
    threshold, calibrated = noise_threshold(session, model, cfg, plan, name)
    seeds, gate = _seeds(cfg, plan), bool(cfg.get("gate", True))
    r = scorer(model.pipe, [prompt], seeds, detector_settings(plan, name))
    d = DetectorScore(name, prompt, float(r.score[0]), threshold, calibrated, gate=gate,
                      n_images=len(r.contexts) * len(seeds), agreement=(float(r.lora[0]), float(r.base[0])))
    hit = flagged(d)
    for row, i in _per_seed(rows, seeds):
        entry: dict[str, Any] = {"score": d.score, "threshold": threshold, "calibrated": calibrated, "gate": gate,
                                 "lora_agreement": d.agreement[0], "base_agreement": d.agreement[1],  # type: ignore[index]
                                 "contexts": r.contexts, "seeds": seeds, "flagged": hit}
        if i is not None:  # this image (the prompt itself, context 0) against the LoRA's other images
            entry["image_agreement"] = float(r.per_image[0, 0, i])
        row[name] = entry
    return d


def _run_noise_magnitude(session: Any, model: Any, c: dict[str, Any], plan: Any, prompt: str,
                         rows: list[tuple[int, dict[str, Any]]]) -> DetectorScore:
    from ..detectors.denoiser_noise import model_noise_magnitude
    from ..judging.detectors import flagged

    _check_applicable("noise_magnitude", model)
    steps, seeds, gate = int(c.get("steps", 1)), _seeds(c, plan), bool(c.get("gate", True))
    settings = detector_settings(plan, "noise_magnitude")
    threshold, calibrated = noise_threshold(session, model, c, plan)
    d = model_noise_magnitude(model, [prompt], seeds, settings, steps=steps)
    score = DetectorScore("noise_magnitude", prompt, float(d[0].mean()), threshold, calibrated, gate=gate)
    entry: dict[str, Any] = {"score": score.score, "threshold": threshold, "calibrated": calibrated, "steps": steps,
                             "seeds": seeds, "gate": gate}
    if flagged(score) and not model.family.trigger_tokens:
        from ..model.families import not_applicable

        entry["trigger_tokens"] = None
        entry["trigger_tokens_note"] = not_applicable("trigger_tokens", model.family)
    elif flagged(score):
        from ..detectors.trigger_tokens import trigger_tokens

        words = [w for w, _ in trigger_tokens(model.pipe, prompt, seeds[:1], settings, steps=steps)]
        entry["trigger_tokens"] = words
        score = dataclasses.replace(score, trigger_words=tuple(words))
    for row, i in _per_seed(rows, seeds):
        row["noise_magnitude"] = {**entry, "seed_score": None if i is None else float(d[0, i])}
    return score


def run_detectors(session: Any, manifest: Any, model: Any, plan: Any, prompts: list[str], seeds: list[int],
                  images: Any) -> tuple[list[DetectorScore], list[dict[str, Any]]]:
    """Run the manifest's detectors for one prompt: (the scores, for ``judging.judge``; per image, of
    seed ``seeds[i]``, the entries its report row shows under ``detectors``). No rule runs here."""
    from ..judging.detectors import flagged

    measured: list[DetectorScore] = []
    rows: list[tuple[int, dict[str, Any]]] = [(int(s), {}) for s in seeds]
    cfg = manifest.detectors
    if "noise_magnitude" in cfg:
        measured.append(_run_noise_magnitude(session, model, cfg["noise_magnitude"], plan, prompts[0], rows))
    for name in PURE_NOISE:
        if name in cfg:
            measured.append(_run_pure_noise(name, model, cfg[name], session, plan, prompts[0], rows))
    if "subject_concentration" in cfg:
        measured.append(_run_subject(model, cfg["subject_concentration"], session, plan, prompts[0], rows))
    if "seed_diversity" in cfg and images is not None and len(images) > 1:
        from ..detectors.seed_diversity import seed_diversity

        c = cfg["seed_diversity"]
        score = DetectorScore("seed_diversity", prompts[0], float(seed_diversity(images)),
                              float(c.get("threshold", SEED_DIVERSITY_DEFAULT)), direction="distance",
                              gate=bool(c.get("gate", False)), n_images=len(images))
        for _, row in rows:
            row["seed_diversity"] = {"score": score.score, "threshold": score.threshold, "gate": score.gate,
                                     "direction": "distance", "flagged": flagged(score)}
        measured.append(score)
    return measured, [row for _, row in rows]


def _check_applicable(name: str, model: Any) -> None:
    """A detector the manifest asks for but the model's family cannot run makes the item an
    ERROR with the reason (like a missing threshold): never a silent pass."""
    from ..model.families import not_applicable

    if not getattr(model.family, name):
        raise MemorizationConfigError(not_applicable(name, model.family))


def calibrate_item(session: Any, manifest: Any, plan: Any, nodeid: str) -> Any:
    """``--memorization-calibrate``: score ordinary prompts under the item's generation settings,
    store each threshold with the model fingerprint and those settings."""
    from ..detectors.calibration import calibration_path, ordinary_prompts
    from ..detectors.denoiser_noise import noise_scorer
    from ..records import Outcome

    model = session.model(plan.source)
    session.record_run(model, {})
    _check_applicable("noise_magnitude", model)
    path = session.settings.path("calibration_prompts")
    if path is not None and not path.is_file():
        raise MemorizationConfigError(f"--memorization-calibration-prompts {path}: no such file")
    prompts = ordinary_prompts(path)
    cfg = manifest.detectors.get("noise_magnitude", {})
    out = session.settings.path("calibration")
    scorer = functools.partial(noise_scorer(model.family), steps=int(cfg.get("steps", 1)))
    _calibrate(session, model, plan, prompts, "noise_magnitude", cfg, scorer, out)
    for name in PURE_NOISE:
        if name in manifest.detectors:
            full = _pure_noise_scorer(name, model, manifest.detectors[name], session)
            _calibrate(session, model, plan, prompts, name, manifest.detectors[name],
                       lambda *a, full=full, **kw: full(*a, **kw)[0], calibration_path(out, name))
    if "subject_concentration" in manifest.detectors:
        sub = _subject_scorer(model)
        _calibrate(session, model, plan, prompts, "subject_concentration", manifest.detectors["subject_concentration"],
                   lambda *a, **kw: sub(*a, **kw).score[:, None], calibration_path(out, "subject_concentration"))
    return Outcome([], [])


def _calibrate(session: Any, model: Any, plan: Any, prompts: list[str], name: str, cfg: dict[str, Any],
               scorer: Any, path: Any) -> None:
    from ..detectors.calibration import calibrate, save_calibration

    steps, extra = _options(name, cfg)
    seeds = _seeds(cfg, plan) if name in ("noise_magnitude", "subject_concentration") else plan.seeds
    cal = calibrate(model.pipe, prompts, seeds, detector_settings(plan, name), target_fpr=session.settings.target_fpr,
                    steps=steps, fingerprint=model.fingerprint, scorer=scorer, detector=name, extra_settings=extra)
    save_calibration(path, cal)
    session.notes.append(f"calibrated {name} threshold {cal.threshold:.4f} at FPR {cal.target_fpr:g} "
                         f"on {cal.n_prompts} ordinary prompts -> {path}")

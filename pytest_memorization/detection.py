"""The manifest's ``[detectors]`` table applied to items: reference-free memorization checks.

- ``noise_magnitude`` (Wen et al., ICLR 2024): gates when the mean over seeds of d reaches
  the threshold. The threshold is the one written in the manifest (reported as
  *uncalibrated*), else the calibration file for this exact model; with neither, the item
  is an error that says to calibrate. Flagged prompts name their trigger tokens.
- ``seed_diversity`` (Carlini et al., 2023): the closest pair of a prompt's generations
  across seeds (tiled L2). Weak with few seeds, so it gates only with ``gate = true``.
"""

from __future__ import annotations

from typing import Any

from .errors import MemorizationConfigError
from .records import ImageResult

SEED_DIVERSITY_DEFAULT = 0.15  # Carlini et al.'s tiled-L2 copy threshold, applied between seeds


def noise_threshold(session: Any, model: Any, cfg: dict[str, Any], plan: Any) -> tuple[float, bool]:
    """(threshold, calibrated). A calibration applies only to the model and settings it was made with."""
    if cfg.get("threshold") is not None:
        return float(cfg["threshold"]), False
    from .detectors.calibration import load_calibration

    path = session.settings.path("calibration")
    if path is None or not path.is_file():
        raise MemorizationConfigError(
            f"noise_magnitude has no threshold: no calibration file at {path}. Calibrate this model with "
            "`pytest --memorization --memorization-calibrate`, or write an explicit threshold in the manifest "
            "([detectors] noise_magnitude = {{ threshold = 3.2 }}), which the report marks as uncalibrated")
    cal = load_calibration(path, fingerprint=model.fingerprint)
    g = plan.gen
    cal.check_compatible(steps=int(cfg.get("steps", 1)), settings={
        "guidance_scale": float(max(g.guidance_scale, 1.01)), "height": g.height, "width": g.width})
    return float(cal.threshold), True


def run_detectors(session: Any, manifest: Any, model: Any, plan: Any, prompts: list[str],
                  results: list[ImageResult], images: Any) -> list[str]:
    failures: list[str] = []
    cfg = manifest.detectors
    g = plan.gen
    if "noise_magnitude" in cfg:
        c = cfg["noise_magnitude"]
        steps = int(c.get("steps", 1))
        threshold, calibrated = noise_threshold(session, model, c, plan)
        d = model.noise_magnitude(prompts, plan.seeds, steps, guidance_scale=max(g.guidance_scale, 1.01),
                                  height=g.height, width=g.width)
        mean = float(d[0].mean())
        entry: dict[str, Any] = {"score": mean, "threshold": threshold, "calibrated": calibrated, "steps": steps}
        if mean >= threshold:
            from .detectors.trigger_tokens import trigger_tokens

            words = [w for w, _ in trigger_tokens(model.pipe, prompts[0], plan.seeds[:1], steps=steps,
                                                   guidance_scale=max(g.guidance_scale, 1.01),
                                                   height=g.height, width=g.width)]
            entry["trigger_tokens"] = words
            label = "calibrated" if calibrated else "uncalibrated, written in the manifest"
            msg = (f"noise magnitude {mean:.4f} >= {threshold:.4f} ({label}) for prompt {prompts[0]!r}; "
                   f"memorization driven by: {', '.join(repr(w) for w in words)}")
            failures.append(msg)
        for r, score in zip(results, d[0].tolist()):
            r.detectors["noise_magnitude"] = {**entry, "seed_score": float(score)}
            if mean >= threshold:
                r.verdict = "fail"
                r.reasons.append(failures[-1])
    if "seed_diversity" in cfg and images is not None and len(images) > 1:
        from .detectors.seed_diversity import seed_diversity

        c = cfg["seed_diversity"]
        threshold = float(c.get("threshold", SEED_DIVERSITY_DEFAULT))
        score = float(seed_diversity(images))
        gate = bool(c.get("gate", False))
        flagged = score <= threshold
        for r in results:
            r.detectors["seed_diversity"] = {"score": score, "threshold": threshold, "gate": gate,
                                             "flagged": flagged}
        if flagged:
            msg = (f"seed diversity: generations for {prompts[0]!r} are near-identical across {len(images)} seeds "
                   f"(closest pair tiled L2 {score:.4f} <= {threshold:g})")
            if gate:
                failures.append(msg)
                for r in results:
                    r.verdict = "fail"
                    r.reasons.append(msg)
            else:
                for r in results:
                    if r.verdict == "pass":
                        r.verdict = "warn"
                    r.reasons.append(msg + " (not gating: set gate = true to fail on it)")
    return failures


def calibrate_item(session: Any, manifest: Any, plan: Any, nodeid: str) -> Any:
    """``--memorization-calibrate``: score ordinary prompts, store the threshold with the model fingerprint."""
    from .checks import Outcome
    from .detectors.calibration import calibrate, ordinary_prompts, save_calibration

    model = session.model(plan.source)
    session.record_run(model, {})
    path = session.settings.path("calibration_prompts")
    if path is not None:
        if not path.is_file():
            raise MemorizationConfigError(f"--memorization-calibration-prompts {path}: no such file")
        prompts = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    else:
        prompts = ordinary_prompts()
    cfg = manifest.detectors.get("noise_magnitude", {})
    g = plan.gen
    cal = calibrate(model.pipe, prompts, plan.seeds, target_fpr=session.settings.target_fpr,
                    steps=int(cfg.get("steps", 1)), guidance_scale=max(g.guidance_scale, 1.01),
                    height=g.height, width=g.width, fingerprint=model.fingerprint)
    out = session.settings.path("calibration")
    save_calibration(out, cal)
    session.notes.append(f"calibrated noise_magnitude threshold {cal.threshold:.4f} at FPR {cal.target_fpr:g} "
                         f"on {cal.n_prompts} ordinary prompts -> {out}")
    return Outcome([], [])

"""Calibrate a detector's threshold on ordinary prompts, per model.

One file per detector: ``noise_magnitude`` in the ``--memorization-calibration`` file itself,
every other detector (``zero_step``, ``lora_delta``) beside it as ``<stem>.<detector><suffix>``
(``calibration_path``); each records its ``detector`` and is refused for another one.

The scale of Wen et al.'s ``d`` depends on the model, the resolution and the schedule, so a
threshold only means something for the model and settings it was measured on. ``calibrate``
scores prompts that should not be memorized (by default the bundled ``data/ordinary_prompts.txt``)
and puts the threshold at their empirical (1 - target_fpr) quantile, so that about ``target_fpr``
of ordinary prompts score above it.

Quantile method: "inverted CDF" (numpy's ``method="inverted_cdf"``): with the n per-prompt scores
sorted ascending, the threshold is the k-th smallest with k = ceil((1 - target_fpr) * n). A prompt
is flagged when its score is strictly greater than the threshold, so at most floor(target_fpr * n)
calibration prompts are above it. The FPR can only be resolved in steps of 1/n: with fewer than
1/target_fpr prompts the threshold is simply the largest ordinary score and the achievable FPR is
no finer than 1/n; the ``Calibration`` says so (``fpr_resolution``, ``note``) and a warning is issued.

Per-prompt score: ``d`` averaged over the seeds (as in the paper).

This module imports torch only inside ``calibrate``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MemorizationConfigError
from ..records import GenerationSettings
from .common import scheduler_identity

__all__ = [
    "Calibration",
    "SCHEMA_VERSION",
    "calibrate",
    "calibration_path",
    "inverted_cdf_quantile",
    "settings_record",
    "load_calibration",
    "ordinary_prompts",
    "save_calibration",
]

SCHEMA_VERSION = 1
RECALIBRATE = "pytest --memorization --memorization-calibrate"


def calibration_path(path: str | os.PathLike[str], detector: str) -> Path:
    """The calibration file of ``detector`` given the ``--memorization-calibration`` path."""
    path = Path(path)
    if detector == "noise_magnitude":
        return path
    return path.with_name(f"{path.stem}.{detector}{path.suffix}")


def ordinary_prompts(path: str | os.PathLike[str] | None = None) -> list[str]:
    """Prompts from a text file (one per line; '#' comments and blank lines skipped).

    Without ``path``: the bundled ``pytest_memorization/data/ordinary_prompts.txt`` (~100 prompts).
    """
    if path is None:
        from importlib.resources import files

        text = files("pytest_memorization").joinpath("data/ordinary_prompts.txt").read_text(encoding="utf-8")
        where = "the bundled ordinary_prompts.txt"
    else:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise MemorizationConfigError(
                f"{p}: cannot read the calibration prompts ({exc.strerror or exc}); "
                "check --memorization-calibration-prompts"
            ) from None
        where = str(p)
    prompts = [line.strip() for line in text.splitlines()]
    prompts = [s for s in prompts if s and not s.startswith("#")]
    if not prompts:
        raise MemorizationConfigError(f"{where}: no prompts (one per line; '#' starts a comment)")
    return prompts


def inverted_cdf_quantile(values: Sequence[float], q: float) -> float:
    """The k-th smallest value, k = ceil(q * n) (at least 1): numpy's ``inverted_cdf`` quantile."""
    if not values:
        raise MemorizationConfigError("calibration: no scores to take a quantile of")
    ordered = sorted(values)
    k = min(len(ordered), max(1, math.ceil(q * len(ordered) - 1e-9)))
    return float(ordered[k - 1])


@dataclass
class Calibration:
    """A noise-magnitude threshold for one model and one set of settings."""

    threshold: float  # flag a prompt when its mean d over seeds is > threshold
    target_fpr: float
    n_prompts: int
    seeds: list[int]
    steps: int
    settings: dict[str, Any]  # settings_record: scheduler, num_inference_steps, size, negative prompt, ...
    fingerprint: str  # identifies the model (given by the caller, e.g. a weights hash)
    scores: dict[str, float]  # summary of the ordinary prompts' scores: mean, std, min, max
    empirical_fpr: float  # fraction of the calibration prompts above the threshold
    fpr_resolution: float  # 1 / n_prompts: the finest FPR this calibration can resolve
    note: str = ""
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    quantile_method: str = "inverted_cdf"
    detector: str = "noise_magnitude"  # files written before other detectors existed are noise magnitude

    def flags(self, score: float) -> bool:
        return score > self.threshold

    def check_compatible(self, *, steps: int, settings: dict[str, Any]) -> None:
        """Raise ``MemorizationConfigError`` when scores made with ``steps``/``settings`` (a
        ``settings_record``) are not comparable: a setting that differs, or that the file lacks."""
        diffs = [f"steps {self.steps} -> {steps}"] if steps != self.steps else []
        for key, value in settings.items():
            if key not in self.settings:
                diffs.append(f"{key} (not recorded) -> {value!r}")
            elif self.settings[key] != value:
                diffs.append(f"{key} {self.settings[key]!r} -> {value!r}")
        if diffs:
            raise MemorizationConfigError(
                f"the {self.detector} calibration was made with other settings ("
                + ", ".join(diffs)
                + f"); its threshold does not apply. Recalibrate: {RECALIBRATE}"
            )

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}


def settings_record(pipe: Any, settings: GenerationSettings, detector: str = "noise_magnitude",
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a ``detector``'s threshold depends on, as a calibration stores it and a run compares it:
    generation's schedule (scheduler class and config, step count), size and negative prompt; the
    guidance scale for noise magnitude and subject concentration (their latents move with the guided
    prediction; the pure-noise detectors make no step); and the detector's own ``extra`` settings (weights, kind)."""
    out: dict[str, Any] = dict(scheduler=scheduler_identity(pipe), num_inference_steps=int(settings.steps),
                               height=int(settings.height), width=int(settings.width),
                               negative_prompt=settings.negative_prompt)
    if detector in ("noise_magnitude", "subject_concentration"):  # they step with the guided prediction
        out["guidance_scale"] = float(settings.guidance_scale)
    return {**out, **(extra or {})}


def calibrate(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], settings: GenerationSettings, *,
              target_fpr: float = 0.01, fingerprint: str = "", steps: int = 1, batch_size: int = 8,
              scorer: Any = None, detector: str = "noise_magnitude",
              extra_settings: dict[str, Any] | None = None) -> Calibration:
    """Score ``prompts`` (ordinary, not memorized) under generation's ``settings`` and set the
    threshold at their (1 - target_fpr) quantile. ``scorer(pipe, prompts, seeds, settings,
    batch_size=...)`` replaces ``noise_magnitude`` at ``steps`` steps, e.g. ``denoiser_noise.noise_scorer(family)``,
    ``zero_step.zero_step`` or ``lora_delta.lora_delta`` with their options bound (then name it in
    ``detector``); ``extra_settings`` (e.g. the zero-step weights) are stored and must match when
    the threshold is used (``settings_record``)."""
    import functools

    from .noise_magnitude import noise_magnitude

    if not 0 < target_fpr < 1:
        raise MemorizationConfigError(f"calibration: target_fpr must be between 0 and 1, got {target_fpr}")
    prompts = list(prompts)
    if not prompts:
        raise MemorizationConfigError("calibration: no prompts given")
    d = (scorer or functools.partial(noise_magnitude, steps=steps))(pipe, prompts, seeds, settings,
                                                                    batch_size=batch_size)
    scores = d.mean(dim=1).tolist()
    bad = [p for p, s in zip(prompts, scores) if not math.isfinite(s)]
    if bad:  # a NaN threshold would flag nothing
        raise MemorizationConfigError(
            f"calibration: the {detector.replace('_', ' ')} of {len(bad)} ordinary prompt(s) is not a finite number (first: "
            f"{bad[0]!r}); check the model's outputs (float16 overflow: use --memorization-dtype float32)")
    n = len(scores)
    threshold = inverted_cdf_quantile(scores, 1 - target_fpr)
    above = sum(s > threshold for s in scores)
    mean = sum(scores) / n
    std = (sum((s - mean) ** 2 for s in scores) / max(1, n - 1)) ** 0.5
    note = ""
    if n < math.ceil(1 / target_fpr):
        note = (
            f"only {n} prompts: the false-positive rate is resolved in steps of 1/{n} = {1 / n:.3f}, "
            f"coarser than the target {target_fpr}; the threshold is the largest ordinary score. "
            f"Use at least {math.ceil(1 / target_fpr)} prompts for this target."
        )
        warnings.warn(f"{detector} calibration: {note}", UserWarning, stacklevel=2)
    return Calibration(
        threshold=threshold,
        target_fpr=target_fpr,
        n_prompts=n,
        seeds=[int(s) for s in seeds],
        steps=steps,
        settings=settings_record(pipe, settings, detector, extra_settings),
        fingerprint=fingerprint,
        scores=dict(mean=mean, std=std, min=min(scores), max=max(scores)),
        empirical_fpr=above / n,
        fpr_resolution=1 / n,
        note=note,
        detector=detector,
    )


def save_calibration(path: str | os.PathLike[str], cal: Calibration) -> Path:
    """Write ``cal`` as JSON atomically (a temporary file in the same folder, then ``os.replace``)."""
    from .._io import atomic_write_text

    path = Path(path)
    atomic_write_text(path, json.dumps(cal.to_json(), indent=2, sort_keys=True) + "\n")
    return path


def load_calibration(path: str | os.PathLike[str], *, fingerprint: str,
                     detector: str = "noise_magnitude") -> Calibration:
    """Read a calibration file made for the model ``fingerprint``; anything else is a config error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MemorizationConfigError(
            f"{path}: no {detector} calibration file; create one for this model with {RECALIBRATE} "
            "(or point --memorization-calibration at an existing file)"
        ) from None
    except (OSError, ValueError) as exc:
        raise MemorizationConfigError(
            f"{path}: cannot read the calibration file ({exc}); recreate it with {RECALIBRATE}"
        ) from None
    if not isinstance(data, dict):
        raise MemorizationConfigError(f"{path}: not a calibration file (expected a JSON object)")
    version = data.pop("schema_version", None)
    if version != SCHEMA_VERSION:
        raise MemorizationConfigError(
            f"{path}: key 'schema_version' is {version!r}, this version reads {SCHEMA_VERSION}; "
            f"recreate it with {RECALIBRATE}"
        )
    names = {f.name for f in dataclasses.fields(Calibration)}
    required = {f.name for f in dataclasses.fields(Calibration) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING}
    missing = sorted(required - set(data))
    if missing:
        raise MemorizationConfigError(f"{path}: missing key(s) {', '.join(missing)}; recreate it with {RECALIBRATE}")
    for key in ("threshold", "target_fpr"):  # json reads NaN and Infinity; a NaN threshold flags nothing
        v = data[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise MemorizationConfigError(
                f"{path}: key '{key}' is {v!r}, not a finite number; the calibration certifies nothing. "
                f"Recreate it with {RECALIBRATE}")
    if isinstance(data["steps"], bool) or not isinstance(data["steps"], int):
        raise MemorizationConfigError(f"{path}: key 'steps' is {data['steps']!r}, not an integer; recreate it "
                                      f"with {RECALIBRATE}")
    cal = Calibration(**{k: v for k, v in data.items() if k in names})
    if cal.detector != detector:
        raise MemorizationConfigError(
            f"{path}: key 'detector' is {cal.detector!r}, this file does not calibrate {detector}; recalibrate "
            f"with {RECALIBRATE} (each detector has its own file: {calibration_path(path, detector).name})")
    if cal.fingerprint != fingerprint:
        raise MemorizationConfigError(
            f"{path}: this calibration was made for model {cal.fingerprint!r}, not the model under test "
            f"({fingerprint!r}); {detector} thresholds are model-specific. Recalibrate for this model: "
            f"{RECALIBRATE} (or point --memorization-calibration at the file made for it)"
        )
    return cal

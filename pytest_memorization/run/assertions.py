"""Public assertion helpers for Python tests.

``assert_not_memorized`` fails a test when any generated image crosses any gating
threshold against any protected work, with a message naming the work, prompt, seed,
metric, score, threshold and saved image. Defaults come from the running test:
``@pytest.mark.memorization(thresholds=...)`` > command line > ini > the metric's default.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config.settings import DEFAULT_METRICS
from ..errors import BrokenOutputError, MemorizationConfigError, MemorizationError
from ..records import Generation, ImageResult, Outcome, Work
from .state import active, attach, current_item


def _near_test(path: str | Path) -> Path:
    """A relative work path is read from the running test file's folder (like a manifest's paths are
    read from the manifest's folder); outside a test, or when only the working folder has it, from there."""
    p = Path(path).expanduser()
    item = current_item()
    if p.is_absolute() or item is None or getattr(item, "path", None) is None:
        return p
    near = Path(item.path).parent / p
    return near if near.exists() or not p.exists() else p


def as_works(works: Any) -> list[Work]:
    """Works as ``Work`` objects from a mapping id -> (path | PIL | array | tensor), or a sequence
    of paths (id = file stem) or ``Work`` objects. Relative paths: see ``_near_test``."""
    from ..images import from_any, sha256_file

    items: list[tuple[str, Any]]
    if isinstance(works, Mapping):
        items = [(str(k), v) for k, v in works.items()]
    else:
        items = []
        for i, w in enumerate(works if isinstance(works, (list, tuple)) else [works]):
            if isinstance(w, Work):
                items.append((w.id, w))
            elif isinstance(w, (str, Path)):
                items.append((Path(w).stem, w))
            else:
                items.append((f"work{i}", w))
    out = []
    for wid, v in items:
        if isinstance(v, Work):
            out.append(v)
        elif isinstance(v, (str, Path)):
            p = _near_test(v)
            if not p.is_file():
                raise MemorizationConfigError(f"protected work '{wid}': image file {v} not found (looked for {p})")
            out.append(Work(wid, from_any(p), p, sha256_file(p)))
        else:
            out.append(Work(wid, from_any(v)))
    if not out:
        raise MemorizationConfigError("no protected works given: pass at least one image")
    return out


def _defaults() -> tuple[dict[str, float], dict[str, float], list[str] | None, float, dict[str, float]]:
    """(thresholds, warn, metrics, warn band, floors) of the running test: its marker over the session's."""
    session, item = active(), current_item()
    thresholds: dict[str, float] = {}
    warn: dict[str, float] = {}
    metrics: list[str] | None = None
    band = 0.1
    floors: dict[str, float] = {}
    if session is not None:
        floors = dict(session.settings.threshold)
        metrics = session.settings.metrics
        band = session.settings.warn_band
    marker = item.get_closest_marker("memorization") if item is not None else None
    if marker is not None:
        thresholds.update(marker.kwargs.get("thresholds", {}))
        warn.update(marker.kwargs.get("warn", {}))
        metrics = marker.kwargs.get("metrics", metrics)
    return thresholds, warn, metrics, band, floors


def _metric(name: str) -> Any:
    session = active()
    if session is not None:
        return session.metric(name)
    from ..metrics import get_metric

    return get_metric(name)


def _batch(images: Any) -> tuple[Any, list[str] | None, list[int] | None]:
    """(N, 3, H, W) images, and the prompts and seeds a ``Generation`` carries."""
    from ..images import as_batch

    if isinstance(images, Generation):
        return images.images, images.prompts, images.seeds
    return as_batch(images), None, None


def judged(images: Any, works: Any, *, thresholds: Mapping[str, float] | None = None,
           warn: Mapping[str, float] | None = None, metrics: Sequence[str] | None = None,
           prompts: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> Outcome:
    """Score ``images`` against ``works`` and hand them to the judge (``judging.judge``), as a manifest
    item does; the rows go into the running test's report. Images that cannot be judged (NaN, black,
    constant) give an error row in the report and raise ``BrokenOutputError``."""
    from ..images import ImageError
    from ..judging.judge import Measured, judge, make_rules
    from ..metrics.matrix import score_matrices
    from ..model.generation import check_images

    item = current_item()
    name = item.nodeid if item is not None else "<python>"
    work_list = as_works(works)
    try:
        batch, gen_prompts, gen_seeds = _batch(images)
        n = int(batch.shape[0])
        prompts = list(prompts if prompts is not None else gen_prompts or [""] * n)
        seeds = list(seeds if seeds is not None else gen_seeds or range(n))
        check_images(batch, prompts, seeds)
    except (BrokenOutputError, ImageError) as e:  # NaN, black, constant: an error row, never a pass
        failed = judge(Measured.failed(name, (list(prompts or []) or [""])[0], e), make_rules({}, {}, {}, 0.0, {}))
        attach(item, failed.results)
        raise BrokenOutputError(f"the images cannot be judged: {e}") from None
    t0, w0, m0, band, floors = _defaults()
    t = {**t0, **(thresholds or {})}
    names = list(metrics or m0 or list(dict.fromkeys([*DEFAULT_METRICS, *t, *floors])))
    chosen = {n: _metric(n) for n in names}
    rules = make_rules(chosen, t, {**w0, **(warn or {})}, band, floors)  # a marker cannot relax the CI's
    scores = score_matrices(chosen, batch, work_list)
    outcome = judge(Measured(name, prompts, seeds, work_list, scores, images=batch), rules)
    attach(item, outcome.results, work_list)
    return outcome


def evaluate(images: Any, works: Any, *, thresholds: Mapping[str, float] | None = None,
             warn: Mapping[str, float] | None = None, metrics: Sequence[str] | None = None,
             prompts: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[ImageResult]:
    """Score and judge without raising on a copy: one ``ImageResult`` per image."""
    return judged(images, works, thresholds=thresholds, warn=warn, metrics=metrics, prompts=prompts,
                  seeds=seeds).results


def assert_not_memorized(images: Any, works: Any, *, thresholds: Mapping[str, float] | None = None,
                         warn: Mapping[str, float] | None = None, metrics: Sequence[str] | None = None,
                         prompts: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[ImageResult]:
    """Fail (``MemorizationError``, an ``AssertionError``) when any image copies any work. ``images``:
    a pipeline's output, PIL images, numpy arrays, tensors or paths (see ``images.as_batch``)."""
    __tracebackhide__ = True
    outcome = judged(images, works, thresholds=thresholds, warn=warn, metrics=metrics, prompts=prompts, seeds=seeds)
    for r in outcome.results:
        if r.verdict == "warn":
            warnings.warn(f"memorization warn band: prompt {r.prompt!r}, seed {r.seed}, work '{r.work}': "
                          + "; ".join(r.reasons), UserWarning, stacklevel=2)
    if outcome.failures:
        raise MemorizationError("\n".join(outcome.failures))
    return outcome.results


def nearest_works(images: Any, works: Any, *, k: int = 3, metric: str = "tiled_l2") -> list[list[tuple[str, float]]]:
    """For each image, the ``k`` closest works under ``metric`` with their scores, closest first."""
    from ..metrics.matrix import score_matrices

    batch = _batch(images)[0]
    m = _metric(metric)
    work_list = as_works(works)
    s = score_matrices({metric: m}, batch, work_list)[metric]
    order = s.argsort(dim=1, descending=m.direction == "similarity")[:, :k]
    return [[(work_list[j].id, float(s[i, j])) for j in row.tolist()] for i, row in enumerate(order)]


def assert_not_memorized_prompt(model: Any, prompts: Sequence[str] | str, seeds: Sequence[int], *,
                                threshold: float, steps: int = 1, guidance_scale: float = 7.5,
                                height: int = 512, width: int = 512) -> Any:
    """Fail when Wen et al.'s noise magnitude of a prompt reaches ``threshold`` (no reference image);
    judged by the same rule as a manifest's ``[detectors] noise_magnitude`` (a NaN score is an error)."""
    __tracebackhide__ = True
    from ..detectors.common import with_guidance
    from ..detectors.denoiser_noise import model_noise_magnitude
    from ..judging.detectors import flagged
    from ..judging.judge import Measured, judge, make_rules
    from ..records import DetectorScore, GenerationSettings  # generation's defaults: its steps and scheduler

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    settings = with_guidance(GenerationSettings(guidance_scale=guidance_scale, height=height, width=width))
    d = model_noise_magnitude(model, prompts, seeds, settings, steps=steps)
    scores = []
    for p, v in zip(prompts, d.mean(dim=1).tolist()):
        score = DetectorScore("noise_magnitude", p, float(v), float(threshold), calibrated=False)
        if flagged(score) and model.family.trigger_tokens:
            from ..detectors.trigger_tokens import trigger_tokens

            words = trigger_tokens(model.pipe, p, list(seeds)[:1], settings, steps=steps)
            score = dataclasses.replace(score, trigger_words=tuple(w for w, _ in words))
        scores.append(score)
    item = current_item()
    name = item.nodeid if item is not None else "<python>"
    outcome = judge(Measured(name, [], [], detectors=scores), make_rules({}, {}, {}, 0.0, {}))
    if outcome.failures:
        raise MemorizationError("\n".join(outcome.failures))
    return d

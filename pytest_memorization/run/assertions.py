"""Public assertion helpers for Python tests.

``assert_not_memorized`` fails a test when any generated image crosses any gating
threshold against any protected work, with a message naming the work, prompt, seed,
metric, score, threshold and saved image. Defaults come from the running test:
``@pytest.mark.memorization(thresholds=...)`` > command line > ini > the metric's default.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config.policy import with_floors
from ..config.settings import DEFAULT_METRICS
from ..errors import MemorizationConfigError, MemorizationError
from ..records import Generation, ImageResult, Work
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


def _defaults() -> tuple[dict[str, float], dict[str, float], list[str] | None, float]:
    session, item = active(), current_item()
    thresholds: dict[str, float] = {}
    warn: dict[str, float] = {}
    metrics: list[str] | None = None
    band = 0.1
    if session is not None:
        thresholds.update(session.settings.threshold)
        metrics = session.settings.metrics
        band = session.settings.warn_band
    marker = item.get_closest_marker("memorization") if item is not None else None
    if marker is not None:
        thresholds.update(marker.kwargs.get("thresholds", {}))
        warn.update(marker.kwargs.get("warn", {}))
        metrics = marker.kwargs.get("metrics", metrics)
    return thresholds, warn, metrics, band


def _metric(name: str) -> Any:
    session = active()
    if session is not None:
        return session.metric(name)
    from ..metrics import get_metric

    return get_metric(name)


def evaluate(images: Any, works: Any, *, thresholds: Mapping[str, float] | None = None,
             warn: Mapping[str, float] | None = None, metrics: Sequence[str] | None = None,
             prompts: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[ImageResult]:
    """Score and judge without raising: one ``ImageResult`` per image."""
    from ..judging.flat_guard import apply_flat_guard
    from ..judging.thresholds import rules_for, score_rows
    from ..judging.verdict import decide
    from ..metrics.matrix import score_matrices
    from ..model.generation import check_images

    if isinstance(images, Generation):
        prompts, seeds, images = images.prompts, images.seeds, images.images
    if images.dim() == 3:
        images = images.unsqueeze(0)
    n = images.shape[0]
    prompts = list(prompts) if prompts is not None else [""] * n
    seeds = list(seeds) if seeds is not None else list(range(n))
    check_images(images, prompts, seeds)
    t0, w0, m0, band = _defaults()
    floors = active().settings.threshold if active() is not None else {}  # type: ignore[union-attr]
    t = with_floors({**t0, **(thresholds or {})}, floors)  # a marker or argument cannot relax the CI's
    names = list(metrics or m0 or list(dict.fromkeys([*DEFAULT_METRICS, *t])))
    chosen = {name: _metric(name) for name in names}
    work_list = as_works(works)
    scores = score_matrices(chosen, images, work_list)
    item = current_item()
    results = score_rows(item.nodeid if item is not None else "<python>", prompts, seeds, scores, work_list,
                    rules_for(chosen, t, {**w0, **(warn or {})}, band))
    for r, img in zip(results, images):
        r.pixels = img
    apply_flat_guard(results, images)
    decide(results)
    attach(item, results, work_list)
    return results


def assert_not_memorized(images: Any, works: Any, *, thresholds: Mapping[str, float] | None = None,
                         warn: Mapping[str, float] | None = None, metrics: Sequence[str] | None = None,
                         prompts: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[ImageResult]:
    """Fail (``MemorizationError``, an ``AssertionError``) when any image copies any work."""
    __tracebackhide__ = True
    from ..judging.verdict import decide

    results = evaluate(images, works, thresholds=thresholds, warn=warn, metrics=metrics, prompts=prompts, seeds=seeds)
    for r in results:
        if r.verdict == "warn":
            warnings.warn(f"memorization warn band: prompt {r.prompt!r}, seed {r.seed}, work '{r.work}': "
                          + "; ".join(r.reasons), UserWarning, stacklevel=2)
    if any(r.verdict == "fail" for r in results):
        raise MemorizationError("\n".join(decide(results)))
    return results


def nearest_works(images: Any, works: Any, *, k: int = 3, metric: str = "tiled_l2") -> list[list[tuple[str, float]]]:
    """For each image, the ``k`` closest works under ``metric`` with their scores, closest first."""
    from ..metrics.matrix import score_matrices

    if isinstance(images, Generation):
        images = images.images
    if images.dim() == 3:
        images = images.unsqueeze(0)
    m = _metric(metric)
    work_list = as_works(works)
    s = score_matrices({metric: m}, images, work_list)[metric]
    order = s.argsort(dim=1, descending=m.direction == "similarity")[:, :k]
    return [[(work_list[j].id, float(s[i, j])) for j in row.tolist()] for i, row in enumerate(order)]


def assert_not_memorized_prompt(model: Any, prompts: Sequence[str] | str, seeds: Sequence[int], *,
                                threshold: float, steps: int = 1, guidance_scale: float = 7.5,
                                height: int = 512, width: int = 512) -> Any:
    """Fail when Wen et al.'s noise magnitude of a prompt reaches ``threshold`` (no reference image)."""
    __tracebackhide__ = True
    from ..detectors.common import with_guidance
    from ..detectors.denoiser_noise import model_noise_magnitude
    from ..records import GenerationSettings  # generation's defaults: its schedule (steps) and scheduler

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    settings = with_guidance(GenerationSettings(guidance_scale=guidance_scale, height=height, width=width))
    d = model_noise_magnitude(model, prompts, seeds, settings, steps=steps)
    means = d.mean(dim=1)
    bad = [(p, float(v)) for p, v in zip(prompts, means) if float(v) >= threshold]
    if bad:
        from ..detectors.trigger_tokens import trigger_tokens

        lines = [f"noise magnitude reaches the threshold {threshold:g} for {len(bad)} prompt(s):"]
        for p, v in bad:
            if not model.family.trigger_tokens:  # an unknown pipeline: say so instead of guessing
                lines.append(f"  {p!r}: d = {v:.4f} (trigger tokens: not available for {model.family.label} models)")
                continue
            words = [w for w, _ in trigger_tokens(model.pipe, p, list(seeds)[:1], settings, steps=steps)]
            lines.append(f"  {p!r}: d = {v:.4f}; memorization driven by: " + ", ".join(repr(w) for w in words))
        raise MemorizationError("\n".join(lines))
    return d

"""Generated images x protected works -> one (N, M) score matrix per metric, batched.

Reference (work) features are computed once per session and cached on disk, keyed by
(file sha256 + comparison size, metric version); changing either invalidates them.
A metric that could not run, or that returns NaN, is a ``MetricFailedError`` naming it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import MemorizationConfigError, MetricFailedError
from ..records import Work

BOUND_SLACK = 1e-3  # rounding past a metric's bound (an SSIM of 1.0000001) is not a broken metric


def fit_works(works: Sequence[Work], height: int, width: int) -> Any:
    """Stack the works at the generation size (resize policy: ``images.fit_to``)."""
    import torch

    from ..images import fit_to

    return torch.stack([fit_to(w.image, height, width) for w in works])


def _ref_key(work: Work, height: int, width: int) -> str | None:
    if not work.sha256:
        return None
    return hashlib.sha256(f"{work.sha256}:{height}x{width}".encode()).hexdigest()


def score_matrices(metrics: Mapping[str, Any], images: Any, works: Sequence[Work],
                   cache: Any | None = None) -> dict[str, Any]:
    """``{metric: (N, M) tensor}`` for N images against M works, at the images' size."""
    import torch

    if not works:
        raise MemorizationConfigError("no protected works to compare with: add [[work]] entries to the manifest")
    height, width = int(images.shape[-2]), int(images.shape[-1])
    refs = fit_works(works, height, width)
    out = {}
    for name, metric in metrics.items():
        try:
            with torch.no_grad():
                feats = metric.features(images)
                ref_feats = (None if getattr(metric, "by_kind", False)
                             else _reference_features(metric, works, refs, height, width, cache))
                if getattr(metric, "by_kind", False):  # local_copy: each work whole, a mark searched small
                    from ..images import fit_inside

                    whole = [fit_inside(w.image, height, width) for w in works]
                    s = metric.compare(feats, whole, kinds=[w.kind for w in works]).float().cpu()
                else:
                    s = metric.compare(feats, ref_feats).float().cpu()
        except MemorizationConfigError:
            raise
        except MetricFailedError as e:
            j = getattr(e, "reference_index", None)
            if isinstance(j, int) and 0 <= j < len(works):  # name the work, not only its index
                raise MetricFailedError(f"{e} The work: {_named(works[j])}.{_flat_hint(name)}") from None
            raise
        except Exception as e:  # out of memory, shape trouble, a broken weights file...
            raise MetricFailedError(f"metric '{name}' could not run: {type(e).__name__}: {e}") from e
        if s.shape != (images.shape[0], len(works)):
            raise MetricFailedError(f"metric '{name}' returned shape {tuple(s.shape)}, "
                                    f"expected {(images.shape[0], len(works))}")
        if not torch.isfinite(s).all():
            named = ", ".join(_named(w) for j, w in enumerate(works) if not torch.isfinite(s[:, j]).all())
            raise MetricFailedError(f"metric '{name}' returned NaN or Inf scores against work {named}; the run "
                                    f"certifies nothing.{_flat_hint(name)} Check its weights and the images' "
                                    "value range")
        lo, hi = getattr(metric, "lower_bound", None), getattr(metric, "upper_bound", None)
        if (lo is not None and float(s.min()) < lo - BOUND_SLACK) or (hi is not None and float(s.max()) > hi + BOUND_SLACK):
            raise MetricFailedError(f"metric '{name}' returned scores in [{float(s.min()):.4g}, {float(s.max()):.4g}], "
                                    f"outside its range [{lo}, {hi}]; the run certifies nothing. Check its weights "
                                    "and the images' value range")
        out[name] = s
    return out


def _named(work: Any) -> str:
    return f"'{work.id}' ({work.path})" if getattr(work, "path", None) else f"'{work.id}'"


def _flat_hint(metric: str) -> str:
    return (" A flat (single-colour) work has no pattern for local_copy to locate: give the real image, or drop "
            "local_copy from the metrics." if metric == "local_copy" else "")


def closer_of(a: Mapping[str, Any], b: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Element-wise, the score of ``a`` or ``b`` closer to a copy in each metric's direction (the smaller
    distance, the larger similarity): how VAE-floor scoring gates on the work and its round trip."""
    import torch

    return {n: torch.minimum(a[n], b[n]) if metrics[n].direction == "distance" else torch.maximum(a[n], b[n])
            for n in a}


def _reference_features(metric: Any, works: Sequence[Work], refs: Any, height: int, width: int,
                        cache: Any | None) -> Any:
    import torch

    keys = [_ref_key(w, height, width) for w in works]
    if cache is None or any(k is None for k in keys):
        return metric.features(refs)
    parts = cache.get_or_compute_many(metric, keys, lambda todo: metric.features(refs[todo]))
    if isinstance(parts[0], (list, tuple)):  # per-layer feature maps (LPIPS)
        return [torch.cat([p[layer] for p in parts]) for layer in range(len(parts[0]))]
    return torch.cat(parts)

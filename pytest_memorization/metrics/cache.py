"""On-disk cache of reference features, keyed by (reference file sha256, metric version).

``ReferenceCache(dir).get_or_compute(metric, key_sha256, compute)`` returns the stored features
when both keys match, else calls ``compute()`` and stores its result. Files are safetensors written
atomically (temporary file + ``os.replace``), at ``dir/<metric>-<sha256(version)[:16]>/<key>.safetensors``
with the full version and key in the metadata, so a new weights file, preprocessing or alignment
setting (all in ``metric.version``) or a changed reference file (its sha256) never reuses a stale entry.
Features are a tensor or a list of tensors (LPIPS' per-layer maps).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import MemorizationConfigError, one_line
from .base import Metric

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class ReferenceCache:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.memo: dict[tuple[str, str], Any] = {}  # (version, key) -> features, for this process

    def path(self, metric: Metric, key_sha256: str) -> Path:
        if not _SHA_RE.match(key_sha256):
            raise MemorizationConfigError(f"reference cache: key {key_sha256!r} is not a sha256 hex digest")
        vh = hashlib.sha256(metric.version.encode()).hexdigest()[:16]
        return self.dir / f"{metric.name}-{vh}" / f"{key_sha256}.safetensors"

    def load(self, metric: Metric, key_sha256: str) -> Any | None:
        from safetensors import safe_open

        p = self.path(metric, key_sha256)
        if not p.is_file():
            return None
        try:
            with safe_open(str(p), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                if meta.get("version") != metric.version or meta.get("key") != key_sha256:
                    return None
                n = int(meta["count"])
                items = [f.get_tensor(str(i)) for i in range(n)]
            if meta.get("seal") != _seal(metric, key_sha256, meta.get("kind", ""), items):
                return None  # edited, forged or from another machine: recompute
        except Exception:  # noqa: BLE001 - a corrupt entry is recomputed, never trusted
            return None
        device = getattr(metric, "device", "cpu")
        items = [t.to(device) for t in items]
        return items if meta.get("kind") == "list" else items[0]

    def store(self, metric: Metric, key_sha256: str, feats: Any) -> None:
        from safetensors.torch import save_file

        p = self.path(metric, key_sha256)
        from .._io import mark_cache_dir

        mark_cache_dir(self.dir)
        p.parent.mkdir(parents=True, exist_ok=True)
        items = list(feats) if isinstance(feats, (list, tuple)) else [feats]
        tensors = {str(i): t.detach().to("cpu").contiguous() for i, t in enumerate(items)}
        meta = {
            "version": metric.version,
            "key": key_sha256,
            "kind": "list" if isinstance(feats, (list, tuple)) else "tensor",
            "count": str(len(items)),
        }
        meta["seal"] = _seal(metric, key_sha256, meta["kind"], list(tensors.values()))
        from .._io import atomic_path

        try:
            with atomic_path(p) as tmp:
                save_file(tensors, str(tmp), metadata=meta)
        except OSError as e:  # a full disk or a read-only cache: the features are recomputed next time
            import warnings

            warnings.warn(one_line(f"reference cache {self.dir}: cannot write an entry ({e}); free space or choose "
                                   "another --memorization-cache-dir. The run goes on without caching it"),
                          UserWarning, stacklevel=2)

    def get_or_compute(self, metric: Metric, key_sha256: str, compute: Callable[[], Any]) -> Any:
        mk = (metric.version, key_sha256)
        if mk in self.memo:  # every item scores against the same works: read each file once
            return self.memo[mk]
        hit = self.load(metric, key_sha256)
        if hit is None:
            hit = compute()
            self.store(metric, key_sha256, hit)
        self.memo[mk] = hit
        return hit

    def get_or_compute_many(self, metric: Metric, keys: Sequence[str], compute: Callable[[list[int]], Any]) -> list[Any]:
        """Features for every key: from memory, else from disk, else ``compute(missing_indices)`` in one
        batch (a tensor, or a list of per-layer tensors, with one row per missing index), stored per key."""
        out: list[Any] = []
        todo: list[int] = []
        for i, k in enumerate(keys):
            hit = self.memo.get((metric.version, k))
            if hit is None:
                hit = self.load(metric, k)
            out.append(hit)
            if hit is None:
                todo.append(i)
        if todo:
            fresh = compute(todo)
            for n, i in enumerate(todo):
                one = [f[n:n + 1].clone() for f in fresh] if isinstance(fresh, (list, tuple)) else fresh[n:n + 1].clone()
                self.store(metric, keys[i], one)
                out[i] = one
        for k, f in zip(keys, out):
            self.memo[(metric.version, k)] = f
        return out


def tensor_bytes(t: Any) -> bytes:
    """A tensor's dtype, shape and raw bytes, for sealing."""
    import torch

    t = t.detach().to("cpu").contiguous()
    data = t.float() if t.dtype == torch.bfloat16 else t  # numpy has no bfloat16
    return f"{t.dtype}{tuple(t.shape)}".encode() + data.reshape(-1).numpy().tobytes()


def _seal(metric: Metric, key: str, kind: str, items: Sequence[Any]) -> str:
    from .._io import seal

    return seal(f"reference-features|{metric.version}|{key}|{kind}|{len(items)}", [tensor_bytes(t) for t in items])


def reference_features(
    metric: Metric, works_tensors: Sequence[Any], shas: Sequence[str], cache: ReferenceCache | None
) -> list[Any]:
    """Features of each work (a (3, H, W) or (1, 3, H, W) tensor), one entry per work, cached by sha."""
    import torch

    if len(works_tensors) != len(shas):
        raise ValueError("reference_features: one sha256 per work is needed")
    out = []
    for img, sha in zip(works_tensors, shas):
        x = img[None] if img.dim() == 3 else img

        def compute(x: Any = x) -> Any:
            with torch.no_grad():
                return metric.features(x)

        out.append(cache.get_or_compute(metric, sha, compute) if cache is not None else compute())
    return out


def _signature(f: Any) -> tuple[Any, ...]:
    items = f if isinstance(f, (list, tuple)) else [f]
    return tuple(tuple(t.shape[1:]) for t in items)


def _cat(feats: list[Any]) -> Any:
    import torch

    if isinstance(feats[0], (list, tuple)):
        return [torch.cat([f[k] for f in feats]) for k in range(len(feats[0]))]
    return torch.cat(feats)


def compare_to_references(metric: Metric, gen_feats: Any, ref_feats: list[Any]) -> Any:
    """(N, M) scores of generated features against per-work features (works may differ in size)."""
    import torch

    groups: dict[tuple[Any, ...], list[int]] = {}
    for j, f in enumerate(ref_feats):
        groups.setdefault(_signature(f), []).append(j)
    n = (gen_feats[0] if isinstance(gen_feats, (list, tuple)) else gen_feats).shape[0]
    out: Any = None
    for idx in groups.values():
        s = metric.compare(gen_feats, _cat([ref_feats[j] for j in idx]))
        if out is None:
            out = torch.empty(n, len(ref_feats), dtype=s.dtype, device=s.device)
        out[:, idx] = s
    return out

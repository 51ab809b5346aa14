"""Alignment tolerance for the pixel metrics (tiled L2, SSIM).

Pixel metrics are shift-sensitive: the coffee photo shifted by 1 px at 64 px scores tiled L2
0.167, past the 0.15 copy threshold. With ``align=True`` (the default for both) a metric takes
the best score over a grid of small translations and rescalings of the *generated* image:

* scales ``(0.94, 0.96, ..., 1.06)`` (7): the generated image is resized (bicubic, antialias) by each;
* integer shifts on a ``(2 * steps + 1)^2`` grid reaching ``max_shift`` of the short side
  (default 1/16, 4 steps per side: at 64 px every shift in -4..4 px; at 512 px -32..32 in 8 px
  steps), so K = 81 * 7 = 567 candidates.

Both images are then compared on the same interior window: a margin of
``ceil(max_shift * size + max|1 - scale| * size / 2) + 1`` px is cut from every side of the
reference (7 px of 64), and each candidate is the matching window of the transformed generated
image, so no padding is ever compared. The unshifted, unscaled candidate is the raw generated pixels
(identical images still score exactly 0 / 1). With alignment on, the window is the interior one even
for that candidate, so scores differ slightly from ``align=False``.

Cost, batched: every candidate is first ranked against every reference by sums of squared
differences computed by expansion (one matmul per tile for tiled L2, one for SSIM); the ``topk``
(default 4) best candidates of each pair, plus the identity, are then scored exactly and the best is
kept. So the score is the best over those candidates, not a full search of every candidate by the
metric itself. Measured on this machine (2 shared CPU cores, 1 thread, 64 px, 8 x 8 images):
tiled L2 0.016-0.02 s -> 0.5-0.6 s (about 25-30x), SSIM 0.08-0.17 s -> 0.6-0.7 s (about 4-8x).
Coarse to fine: above ``COARSE`` px (short side), the candidates are ranked on both images reduced
to about ``COARSE`` px (area average), where the same grid of shifts and scales has the same indices
(the shifts are fractions of the size), and only the ``topk`` best (plus the identity) are built and
re-ranked at full size by the cheap key; the best is moved between the grid points (one axis, then
the other), which the full grid cannot do; the two best and the moved one are scored exactly. So the
full-size candidate stack (567 crops of the image) is never built: bench/align.py measures the time
and the scores against the full search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

COARSE = 64  # px: rank candidates at about this size when the images are larger
COARSE_TOPK = 8  # candidates kept from the coarse ranking (it sees less than the full size does)


@dataclass(frozen=True)
class AlignParams:
    max_shift: float = 1 / 16
    steps: int = 4
    scales: tuple[float, ...] = (0.94, 0.96, 0.98, 1.0, 1.02, 1.04, 1.06)
    topk: int = 4

    def __post_init__(self) -> None:
        from ..errors import MemorizationConfigError

        if not (0 <= self.max_shift <= 0.25) or self.steps < 1 or self.topk < 1:
            raise MemorizationConfigError(
                f"align: max_shift must be in [0, 0.25], steps >= 1, topk >= 1; got {self}"
            )
        if not self.scales or any(not (0.75 <= s <= 1.25) for s in self.scales):
            raise MemorizationConfigError(f"align: scales must be in [0.75, 1.25]; got {self.scales}")

    @property
    def version(self) -> str:
        sc = ",".join(f"{s:g}" for s in self.scales)
        return f"align(shift<={self.max_shift:g}x{self.steps}steps,scales={sc},top{self.topk})"

    def shifts(self, size: int) -> list[int]:
        """Integer pixel offsets on one axis for an image of ``size`` px."""
        reach = self.max_shift * size
        vals = {round(reach * i / self.steps) for i in range(-self.steps, self.steps + 1)}
        return sorted(vals, key=lambda v: (abs(v), v))  # 0 first

    def margin(self, h: int, w: int) -> int:
        size = min(h, w)
        grow = max(abs(1 - s) for s in self.scales) * max(h, w) / 2
        return int(math.ceil(self.max_shift * size + grow)) + 1


def interior(x: Any, margin: int) -> Any:
    """The window compared once alignment is on: ``margin`` px cut from each side."""
    if margin == 0:
        return x
    return x[..., margin:-margin, margin:-margin]


def candidates(x: Any, p: AlignParams) -> Any:
    """(N, K, 3, h, w): the interior window of each shifted/rescaled version of ``x`` (N, 3, H, W).

    Candidate 0 is the identity (raw pixels, no resampling).
    """
    import torch
    import torch.nn.functional as F

    n, c, H, W = x.shape
    m = p.margin(H, W)
    h, w = H - 2 * m, W - 2 * m
    dys, dxs = p.shifts(H), p.shifts(W)
    scales = sorted(p.scales, key=lambda s: abs(s - 1.0))
    out = []
    for s in scales:
        if s == 1.0:
            xs = x
        else:
            size = (max(1, round(H * s)), max(1, round(W * s)))
            xs = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
            xs = xs.clamp(0.0, 1.0)
        oy, ox = (xs.shape[-2] - H) // 2, (xs.shape[-1] - W) // 2
        for dy in dys:
            for dx in dxs:
                top, left = oy + m + dy, ox + m + dx
                top = min(max(top, 0), xs.shape[-2] - h)
                left = min(max(left, 0), xs.shape[-1] - w)
                out.append(xs[:, :, top : top + h, left : left + w])
    return torch.stack(out, dim=1)


def candidate(x: Any, p: AlignParams, index: int, ddy: int = 0, ddx: int = 0,
              scaled: dict[float, Any] | None = None) -> Any:
    """(N, 3, h, w): candidate ``index`` of ``candidates(x, p)`` alone, without building the others;
    ``ddy``/``ddx`` move its window by a few more pixels (the fine search between grid points);
    ``scaled`` memoises the rescaled images across calls."""
    import torch.nn.functional as F

    n, c, H, W = x.shape
    m = p.margin(H, W)
    h, w = H - 2 * m, W - 2 * m
    dys, dxs = p.shifts(H), p.shifts(W)
    scales = sorted(p.scales, key=lambda s: abs(s - 1.0))
    si, rest = divmod(index, len(dys) * len(dxs))
    yi, xi = divmod(rest, len(dxs))
    s = scales[si]
    xs = scaled.get(s) if scaled is not None else None
    if xs is None:
        if s == 1.0:
            xs = x
        else:
            size = (max(1, round(H * s)), max(1, round(W * s)))
            xs = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0.0, 1.0)
        if scaled is not None:
            scaled[s] = xs
    oy, ox = (xs.shape[-2] - H) // 2, (xs.shape[-1] - W) // 2
    top = min(max(oy + m + dys[yi] + ddy, 0), xs.shape[-2] - h)
    left = min(max(ox + m + dxs[xi] + ddx, 0), xs.shape[-1] - w)
    return xs[:, :, top : top + h, left : left + w]


def paired_key(x: Any, y: Any, rank: str) -> Any:
    """The cheap ranking key of paired crops (P, 3, h, w): worst-tile or whole-image mean square."""
    import torch

    sq = (x - y) ** 2
    if rank == "tiles":
        counts = torch.tensor(tile_counts(x.shape[-2], x.shape[-1], x.shape[1]), dtype=sq.dtype, device=sq.device)
        return (tile_sums(sq) / counts).amax(1)
    return sq.flatten(1).mean(1)


def _fine(gen: Any, ref: Any, p: AlignParams, chosen: list[int], rank: str, scaled: dict[float, Any]) -> list[Any]:
    """At full size: the two best of the ``chosen`` coarse candidates by the cheap key, and the best
    of them moved between the grid points (one axis, then the other; at 512 px offsets -4..4)."""
    import torch

    crops = torch.cat([candidate(gen, p, c, scaled=scaled) for c in chosen])
    key = paired_key(crops, ref.expand(len(chosen), -1, -1, -1), rank)
    order = key.argsort().tolist()
    keep = [crops[j : j + 1] for j in order[:2]]
    best, best_key = chosen[order[0]], key[order[0]]
    H, W = gen.shape[-2:]
    half = max(1, round(p.max_shift * min(H, W) / p.steps)) // 2
    ddy = ddx = 0
    for axis in (0, 1):
        offsets = [d for d in range(-half, half + 1) if d != 0]
        if not offsets:
            break
        moved = torch.cat([candidate(gen, p, best, d if axis == 0 else ddy, d if axis == 1 else ddx, scaled)
                           for d in offsets])
        k = paired_key(moved, ref.expand(len(offsets), -1, -1, -1), rank)
        j = int(k.argmin())
        if k[j] < best_key:
            best_key = k[j]
            ddy, ddx = (offsets[j], ddx) if axis == 0 else (ddy, offsets[j])
    if ddy or ddx:
        keep.append(candidate(gen, p, best, ddy, ddx, scaled))
    return keep


def coarse_size(h: int, w: int, p: AlignParams) -> tuple[int, int] | None:
    """The reduced size at which candidates are ranked, or None when the images are small enough
    (or when the grid would not map one to one onto the full-size grid)."""
    short = min(h, w)
    if short <= COARSE:
        return None
    f = short / COARSE
    ch, cw = max(COARSE, round(h / f)), max(COARSE, round(w / f))
    if len(p.shifts(ch)) != len(p.shifts(h)) or len(p.shifts(cw)) != len(p.shifts(w)):
        return None
    return ch, cw


def tile_edges(size: int, grid: int = 4) -> list[int]:
    return [round(i * size / grid) for i in range(grid + 1)]


def tile_sums(sq: Any, grid: int = 4) -> Any:
    """Per-tile sums of a (P, C, h, w) tensor -> (P, grid*grid), tiles row-major."""
    import torch

    s = sq.sum(dim=1)
    eh, ew = tile_edges(s.shape[-2], grid), tile_edges(s.shape[-1], grid)
    rows = [s[:, eh[i] : eh[i + 1]].sum(dim=1) for i in range(grid)]  # (P, w) each
    return torch.stack(
        [r[:, ew[j] : ew[j + 1]].sum(dim=1) for r in rows for j in range(grid)], dim=1
    )


def tile_counts(h: int, w: int, c: int = 3, grid: int = 4) -> list[int]:
    eh, ew = tile_edges(h, grid), tile_edges(w, grid)
    return [c * (eh[i + 1] - eh[i]) * (ew[j + 1] - ew[j]) for i in range(grid) for j in range(grid)]


def approx_tile_sq(a: Any, b: Any, grid: int = 4) -> Any:
    """Per-tile sums of squared differences for all pairs, by expansion: (A, B, grid*grid).

    ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b per tile, one matmul per tile. Float32 rounding makes
    this approximate (about 1e-4 per tile sum); it only ranks candidates, exact scores follow.
    """
    import torch

    h, w = a.shape[-2:]
    eh, ew = tile_edges(h, grid), tile_edges(w, grid)
    out = []
    for i in range(grid):
        for j in range(grid):
            ta = a[..., eh[i] : eh[i + 1], ew[j] : ew[j + 1]].reshape(a.shape[0], -1)
            tb = b[..., eh[i] : eh[i + 1], ew[j] : ew[j + 1]].reshape(b.shape[0], -1)
            d = (ta * ta).sum(1)[:, None] + (tb * tb).sum(1)[None, :] - 2.0 * (ta @ tb.T)
            out.append(d.clamp_min(0.0))
    return torch.stack(out, dim=-1)


def best_over_candidates(
    gen: Any,
    refs: Any,
    p: AlignParams,
    rank: str,
    exact: Any,
    direction: str,
    chunk_elems: int = 1 << 25,
) -> Any:
    """(N, M) best exact score over the aligned candidates of each generated image.

    ``rank``: "tiles" (worst-tile sum of squares) or "mse" (whole-image sum of squares) ranks the
    candidates cheaply; ``exact(x, y) -> (P,)`` scores paired crops (P, 3, h, w) exactly and the
    best of the ``topk`` ranked candidates is kept (min for distances, max for similarities).
    """
    import torch
    import torch.nn.functional as F

    n = gen.shape[0]
    M = refs.shape[0]
    H, W = gen.shape[-2:]
    m = p.margin(H, W)
    r = interior(refs, m)
    small = coarse_size(H, W, p)
    if small is not None:  # rank on reduced copies; the same candidate index means the same shift and scale
        g_rank = F.interpolate(gen, size=small, mode="area")
        r_rank = interior(F.interpolate(refs, size=small, mode="area"), p.margin(*small))
    else:
        g_rank, r_rank = gen, r
    counts = torch.tensor(tile_counts(r_rank.shape[-2], r_rank.shape[-1], r_rank.shape[1]), dtype=r.dtype,
                          device=r.device)
    rows = []
    for i in range(n):
        ranked = candidates(g_rank[i : i + 1], p)[0]  # (K, 3, h, w), reduced when ``small``
        K = ranked.shape[0]
        if rank == "tiles":
            key = (approx_tile_sq(ranked, r_rank) / counts).amax(-1)  # (K, M) worst tile
        else:
            key = approx_tile_sq(ranked, r_rank, grid=1)[..., 0]  # (K, M) whole-image sum of squares
        if small is not None:  # coarse to fine, pair by pair: never build the full-size stack
            top = key.topk(min(max(p.topk, COARSE_TOPK), K), dim=0, largest=False).indices  # (k, M)
            row, scaled = [], {}  # each rescaled version of this image is made once
            for j in range(M):
                chosen = list(dict.fromkeys([0, *top[:, j].tolist()]))  # the identity is always a candidate
                crops = torch.cat(_fine(gen[i : i + 1], r[j : j + 1], p, chosen, rank, scaled))
                v = exact(crops, r[j : j + 1].expand(len(crops), -1, -1, -1))
                row.append(v.min() if direction == "distance" else v.max())
            rows.append(torch.stack(row))
            continue
        k = min(p.topk, K)
        top = key.topk(k, dim=0, largest=False).indices  # (k, M)
        top = torch.cat([top, torch.zeros_like(top[:1])])  # the identity is always scored exactly
        k += 1
        per = max(1, chunk_elems // max(1, ranked[0].numel()))
        flat_c = top.T.reshape(-1)  # (M*k,) candidate index per pair, pair-major
        flat_r = torch.arange(M, device=r.device).repeat_interleave(k)
        vals = []
        for s in range(0, flat_c.numel(), per):
            vals.append(exact(ranked[flat_c[s : s + per]], r[flat_r[s : s + per]]))
        v = torch.cat(vals).view(M, k)
        rows.append(v.amin(1) if direction == "distance" else v.amax(1))
    return torch.stack(rows, dim=0)

"""Local copy: is the protected work, or a mark, smaller and anywhere, inside the generated image? And where.

Tiled L2 and SSIM compare whole images, so a protected logo, character or face pasted into a new
scene escapes them (the template and local memorization of Webster 2023 and Chen et al., ICLR
2025). This metric slides the work over the generated image at every position, at ``scales`` sizes
(the work fitted inside the image, then scaled by 20% to 100%, aspect ratio kept; a work declared
``kind = "mark"`` by 10% to 40%) and mirrored, and scores each placement by **zero-mean normalized
cross-correlation (NCC) of the luma** (ITU-R 601). Luma NCC is unchanged by a gain and an offset, so
a colour cast, a tint, a hue shift or a sepia style does not raise or lower it, where the RGB
correlation did.

**Prominence.** A template with little detail (a round fundus photo at a fifth of the side is a bright
disc) matches every similar shape of a scene (each coin of a coins photo) almost as well as a copy.
A copy stands out: its best placement beats the best placement elsewhere (outside the box's central
half) by a clear gap. The score is the best placement's NCC minus the shortfall of that gap below
``PROMINENCE`` (0 when the gap is wider), so a lone peak keeps its NCC and one of many equal peaks
loses up to ``PROMINENCE``. The cost: the same work copied twice, side by side at the same size, is
scored like a repeated shape (see docs/partial-copies.md). Marks skip the rule (a watermark repeats).

Weight-free and torch-only (FFT products for the correlations; integral images for the patch norms,
float64). Working size: generated images with a side above ``max_side`` (default 128 px) are searched
on a copy scaled to ``max_side`` (the box is in fractions of the image, so it holds at any size).

Fail closed: a work with no texture (a single colour) has no NCC and is a ``MetricFailedError``;
image patches flatter than ``FLAT_STD`` score 0 (a flat patch cannot hold a textured work).
``bench/partial_copies.py`` calibrates and proves the threshold; docs/partial-copies.md has the numbers.
Keypoint matching (ORB/SIFT + RANSAC) was the alternative; see docs/design.md for why NCC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ._util import as_images, check_scores, resize
from .base import Metric

FLAT_STD = 0.02  # per-pixel std of a patch below which it cannot match a textured work
MIN_SIDE = 16  # a work smaller than 16 x 16 px (geometric mean of its sides) holds too little to be told apart
MIN_MARK_SIDE = 10  # a declared mark: searched down to 10 x 10 px
PROMINENCE = 0.2  # the gap a copy's peak keeps over the best placement elsewhere (calibrated: see LocalCopy)


def _geometric(lo: float, hi: float, n: int) -> tuple[float, ...]:
    return tuple(round(lo * (hi / lo) ** (i / (n - 1)), 4) for i in range(n))


# 28 sizes from 20% to 100%, 6.1% apart: a work pasted between two sizes is at most 3% off one
DEFAULT_SCALES: tuple[float, ...] = _geometric(0.2, 1.0, 28)
# marks (logos, signatures, text watermarks): 16 sizes from 10% to 40% of the fitted size
MARK_SCALES: tuple[float, ...] = _geometric(0.1, 0.4, 16)
LUMA = (0.299, 0.587, 0.114)


def _box_sums(x: Any, h: int, w: int) -> Any:
    """Sum over every h x w window of (B, C, H, W) -> (B, C, H-h+1, W-w+1), by integral image."""
    import torch.nn.functional as F

    s = F.pad(x.cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    return s[..., h:, w:] - s[..., :-h, w:] - s[..., h:, :-w] + s[..., :-h, :-w]


def _template_size(work_hw: tuple[int, int], image_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """The work's size when its fit inside the image is scaled by ``scale`` (aspect ratio kept)."""
    k = scale * min(image_hw[0] / work_hw[0], image_hw[1] / work_hw[1])
    return max(4, min(image_hw[0], round(work_hw[0] * k))), max(4, min(image_hw[1], round(work_hw[1] * k)))


def luma(x: Any) -> Any:
    """(N, 3, H, W) -> (N, 1, H, W) luma (ITU-R 601)."""
    return (LUMA[0] * x[:, 0] + LUMA[1] * x[:, 1] + LUMA[2] * x[:, 2])[:, None]


def ncc_maps(images: Any, templates: Any, image_fft: Any = None) -> Any:
    """NCC of every template (M, C, h, w) at every position of every image (N, C, H, W) ->
    (N, M, H-h+1, W-w+1), float32. One norm over the C channels. Flat patches score 0; a flat template
    is NaN. The correlations are products of FFTs (``image_fft``: ``torch.fft.rfft2`` of the images,
    reused across template sizes), so the cost does not grow with the template's size."""
    import torch

    x = images.float()
    H, W = x.shape[-2:]
    C = x.shape[1]
    t = templates.double()
    h, w = t.shape[-2:]
    n = h * w
    t0 = t - t.mean(dim=(2, 3), keepdim=True)
    tnorm = t0.flatten(1).norm(dim=1)  # (M,)
    fx = torch.fft.rfft2(x) if image_fft is None else image_fft  # (N, C, H, W//2+1)
    ft = torch.fft.rfft2(t0.float(), s=(H, W))  # (M, C, ...)
    # sum T0 * X = sum T0 * (X - patch mean), since T0 sums to 0 per channel; cross-correlation
    num = torch.fft.irfft2(torch.einsum("nchw,mchw->nmhw", fx, ft.conj()), s=(H, W))[..., : H - h + 1, : W - w + 1]
    xd = x.double()
    s1 = _box_sums(xd, h, w)
    s2 = _box_sums(xd * xd, h, w)
    pvar = (s2 - s1 * s1 / n).sum(dim=1, keepdim=True).clamp_min(0.0)  # (N, 1, ., .)
    pnorm = pvar.sqrt()
    flat = pnorm < FLAT_STD * math.sqrt(C * n)
    flat_t = tnorm < 1e-6 * math.sqrt(C * n)  # a single-colour template (resizing leaves ~1e-8 ripples)
    tn = torch.where(flat_t, torch.full_like(tnorm, float("nan")), tnorm).view(1, -1, 1, 1)
    out = (num.double() / (pnorm.clamp_min(1e-12) * tn)).float()
    return torch.where(flat & torch.isfinite(tn), torch.zeros_like(out), out).clamp(-1.0, 1.0)


def _elsewhere(r: Any, i: Any, h: int, w: int) -> Any:
    """The best value of each map (N, M, Y, X) outside the central half of the box at flat index ``i``."""
    import torch

    yy = torch.div(i, r.shape[-1], rounding_mode="floor")
    xx = i % r.shape[-1]
    ys = torch.arange(r.shape[-2], device=r.device).view(1, 1, -1, 1)
    xs = torch.arange(r.shape[-1], device=r.device).view(1, 1, 1, -1)
    near = ((ys - yy[..., None, None]).abs() < max(2, h // 2)) & ((xs - xx[..., None, None]).abs() < max(2, w // 2))
    v = r.masked_fill(near, -1.0).flatten(2).max(dim=2).values
    return torch.where(near.flatten(2).all(dim=2), torch.full_like(v, -1.0), v)


def match(images: Any, works: Any, scales: Sequence[float] = DEFAULT_SCALES, max_side: int = 128, *,
          prominence: float = PROMINENCE, flip: bool = True, min_side: int = MIN_SIDE) -> tuple[Any, Any]:
    """Best placement of each work in each image: (scores (N, M), boxes (N, M, 4)) with boxes as
    (x0, y0, x1, y1) in fractions of the image's width and height. Luma NCC, mirrored too, less the
    prominence shortfall (``prominence=0``: plain NCC). Sizes below ``min_side`` px are skipped (the
    largest size is always searched)."""
    import torch

    H, W = images.shape[-2:]
    if max(H, W) > max_side:
        k = max_side / max(H, W)
        images = resize(images, (max(8, round(H * k)), max(8, round(W * k))), mode="bicubic")
        H, W = images.shape[-2:]
    y = luma(images.float())
    N, M = images.shape[0], works.shape[0]
    fx = torch.fft.rfft2(y)
    best = torch.full((N, M), -2.0, dtype=torch.float32)
    score = torch.full((N, M), -2.0, dtype=torch.float32)
    boxes = torch.zeros((N, M, 4), dtype=torch.float64)
    nan = torch.zeros((N, M), dtype=torch.bool)
    sizes = [_template_size(tuple(works.shape[-2:]), (H, W), s) for s in scales]
    keep = [hw for hw in sizes if math.sqrt(hw[0] * hw[1]) >= min_side] or [max(sizes)]
    for h, w in dict.fromkeys(keep):
        t = luma(resize(works.float(), (h, w)))
        for tt in (t, t.flip(-1)) if flip else (t,):
            r = ncc_maps(y, tt, fx)  # (N, M, H-h+1, W-w+1)
            nan |= torch.isnan(r).flatten(2).any(dim=2)
            r = torch.nan_to_num(r, nan=-1.0)
            v, i = r.flatten(2).max(dim=2)
            better = v > best
            if prominence > 0:  # a positive peak loses the shortfall of its gap, never below 0
                gap = v - _elsewhere(r, i, h, w)
                sc = torch.maximum(v - (prominence - gap).clamp_min(0.0), v.clamp(max=0.0))
            else:
                sc = v
            y0 = torch.div(i, r.shape[-1], rounding_mode="floor").double()
            x0 = (i % r.shape[-1]).double()
            box = torch.stack([x0 / W, y0 / H, (x0 + w) / W, (y0 + h) / H], dim=-1)
            best = torch.where(better, v, best)
            score = torch.where(better, sc, score)
            boxes = torch.where(better[..., None], box, boxes)
    score[nan] = float("nan")
    return score, boxes


class LocalCopy(Metric):
    name = "local_copy"
    direction = "similarity"
    default_threshold = 0.82
    threshold_source = (
        "calibrated here, not from a paper, on calibration scenes only (bench/partial_copies.py --split calibration: "
        "9 scenes at 128 px, works pasted at 20-60% of the side, plain, JPEG q55-75, tint and hue shift, sepia, "
        "mirrored), then proven on 13 other scenes; the numbers are in docs/partial-copies.md"
    )
    lower_bound = -1.0
    upper_bound = 1.0
    min_size = 16
    uses_work_kind = True  # score_matrices passes each work's kind ("work" or "mark") to compare_kinds

    def __init__(
        self,
        *,
        device: str = "cpu",
        weights_dir: str | None = None,
        scales: tuple[float, ...] = DEFAULT_SCALES,
        mark_scales: tuple[float, ...] = MARK_SCALES,
        max_side: int = 128,
        prominence: float = PROMINENCE,
    ) -> None:
        from ..errors import MemorizationConfigError

        self.device = device
        self.scales = tuple(float(s) for s in scales)
        self.mark_scales = tuple(float(s) for s in mark_scales)
        self.max_side = int(max_side)
        self.prominence = float(prominence)
        for key, sc in (("scales", self.scales), ("mark_scales", self.mark_scales)):
            if not sc or not all(0.05 <= s <= 1.0 for s in sc):
                raise MemorizationConfigError(f"metric 'local_copy': {key} must be fractions in [0.05, 1], got {sc!r}")
        if not 0.0 <= self.prominence < 1.0:
            raise MemorizationConfigError(f"metric 'local_copy': prominence must be in [0, 1), got {prominence!r}")

    @property
    def version(self) -> str:
        sc = ",".join(f"{s:g}" for s in self.scales)
        mk = ",".join(f"{s:g}" for s in self.mark_scales)
        return (f"local_copy-v2(ncc-luma-zero-mean,mirrored,prominence={self.prominence:g},flat<{FLAT_STD:g},"
                f"min_side={MIN_SIDE},{MIN_MARK_SIDE},"
                f"scales={sc},mark_scales={mk},max_side={self.max_side})")

    def features(self, images: Any) -> Any:
        return as_images(images, self.name, min_size=1, device=self.device)

    def _match(self, a: Any, b: Any, kind: str) -> tuple[Any, Any]:
        if kind == "mark":  # small, and a watermark may repeat: no prominence rule
            return match(a, b, self.mark_scales, self.max_side, prominence=0.0, min_side=MIN_MARK_SIDE)
        return match(a, b, self.scales, self.max_side, prominence=self.prominence)

    def compare(self, a: Any, b: Any) -> Any:
        return self.compare_kinds(a, b, ["work"] * int(b.shape[0]))

    def compare_kinds(self, a: Any, b: Any, kinds: Sequence[str]) -> Any:
        """(N, M) scores of images ``a`` against works ``b`` ((M, 3, h, w), or a list of (3, h, w) of any
        sizes: each work is searched whole, at its own aspect ratio); ``kinds[j]``: "work" or "mark"."""
        import torch

        a = as_images(a, self.name, min_size=self.min_size, device=self.device)
        works = [as_images(w[None], self.name, min_size=1, device=self.device) for w in b]
        out = torch.zeros((a.shape[0], len(works)), dtype=torch.float32)
        groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
        for j, (w, kind) in enumerate(zip(works, kinds)):
            groups.setdefault((kind, tuple(w.shape)), []).append(j)
        with torch.no_grad():
            for (kind, _), idx in sorted(groups.items()):
                out[:, idx] = self._match(a, torch.cat([works[j] for j in idx]), kind)[0].cpu()
        return check_scores(self.name, out)

    def locate(self, image: Any, work: Any, kind: str = "work") -> dict[str, Any]:
        """Where ``work`` (3, h, w) best matches inside ``image`` (3, H, W): score and box
        (x0, y0, x1, y1, fractions of the image), for the report."""
        import torch

        with torch.no_grad():
            s, b = self._match(image.float()[None].to(self.device), work.float()[None].to(self.device), kind)
        return {"score": round(float(s[0, 0]), 4), "box": [round(float(v), 4) for v in b[0, 0]]}


def locate(image: Any, work: Any, kind: str = "work") -> dict[str, Any]:
    """``LocalCopy().locate(image, work)`` with the default settings."""
    return LocalCopy().locate(image, work, kind)

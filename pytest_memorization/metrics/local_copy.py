"""Local copy: is the protected work, smaller and anywhere, inside the generated image? And where.

Tiled L2 and SSIM compare whole images, so a protected logo, character or face pasted into a new
scene escapes them (the template and local memorization of Webster 2023 and Chen et al., ICLR
2025). This metric slides the work over the generated image at every position, at ``scales``
sizes (the work fitted inside the image with its aspect ratio kept, then scaled by 20% to 100%,
5.5% apart) and mirrored left to right, and scores each placement by the **zero-mean normalized
cross-correlation (NCC) of three opponent planes**: the luma (ITU-R 601) and, at half weight, a
red-green and a yellow-blue chroma plane, each plane's mean removed and one norm over the three. A
change of brightness or contrast, a colour cast, a tint or JPEG leaves it nearly unchanged; the chroma
planes keep a red and a blue quarter of a badge apart where the luma alone cannot.

**Set against the work's null level.** A work made of generic shapes (a dark disc, a square badge, a
sky) correlates well with anything that has the same shape: the retina photo is a bright disc on
black and matched a microscope photo of a round cell at NCC 0.92. So each work is first searched, the
same way, in a fixed bank of images of generic shapes (``generic_shapes``: discs, rings, squares,
blobs, gradients, stripes, smoothed noise, in six colour pairs), and its best NCC there is its
**null level** ``n``: how
well it matches things that are not it. The score is the raw NCC ``r`` measured from that level,
``(r - n) / (1 - n)`` above it (0 at the null level, 1 for an exact copy) and ``(r - n) / (1 + n)``
below it, in [-1, 1], a similarity. A detailed photo has a low null level (the astronaut: 0.54) and
keeps almost its whole range; a generic work (the retina: 0.90) has to match far better than any
disc does. ``locate`` returns the best placement as a box.

**Marks** (``kind = "mark"``: a logo, a signature, a watermark, small against the frame) are searched
at ``MARK_SCALES`` (15% to 60% of the fitted mark) on images up to ``MARK_MAX_SIDE`` px.

Weight-free and torch-only (FFT products for the correlations, in float32; integral images for the
patch norms, float64). Generated images with a side above ``max_side`` (default 128 px) are searched
on a copy scaled to ``max_side`` (the box is in fractions of the image, so it holds at any size).

Fail closed: a work with no texture (a single colour) has no NCC and is a ``MetricFailedError``;
image patches flatter than ``FLAT_STD`` score 0 (a flat patch cannot hold a textured work). What was
tried and measured (RGB, luma, luma and chroma, gradients, their minimum and mean, with and without
the null level):
docs/partial-copies.md.
"""

from __future__ import annotations

import math
from typing import Any

from ._util import as_images, check_scores, resize
from .base import Metric

FLAT_STD = 0.02  # per-pixel std of luma below which a patch cannot match a textured work
# sizes from 20% to 100% of the fitted work, 5.5% apart: a copy between two sizes is at most 2.7% off one
DEFAULT_SCALES: tuple[float, ...] = tuple(round(0.2 * 5 ** (i / 29), 3) for i in range(30))
LUMA = (0.299, 0.587, 0.114)
CHROMA = 0.5  # the chroma planes' weight against the luma plane
# marks (logos, signatures, watermarks: small against the frame) from 15% to 60% of the fitted mark,
# 5.5% apart, searched on images up to 256 px so that a mark at 15% still spans several pixels. Not
# smaller: a template of a few pixels matches generic shapes so well (null level 0.76 at 8% for the
# demo's wordmark) that no copy could stand out from its null level.
MARK_SCALES: tuple[float, ...] = tuple(round(0.15 * 4 ** (i / 25), 3) for i in range(26))
MARK_MAX_SIDE = 256
NULL_BANK = "generic-shapes-v2(29,6-colour-pairs)"


def _box_sums(x: Any, h: int, w: int) -> Any:
    """Sum over every h x w window of (B, C, H, W) -> (B, C, H-h+1, W-w+1), by integral image."""
    import torch.nn.functional as F

    s = F.pad(x.cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    return s[..., h:, w:] - s[..., :-h, w:] - s[..., h:, :-w] + s[..., :-h, :-w]


def _template_size(work_hw: tuple[int, int], image_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """The work's size when its fit inside the image is scaled by ``scale`` (aspect ratio kept)."""
    k = scale * min(image_hw[0] / work_hw[0], image_hw[1] / work_hw[1])
    return max(4, min(image_hw[0], round(work_hw[0] * k))), max(4, min(image_hw[1], round(work_hw[1] * k)))


def planes(x: Any) -> Any:
    """(N, 3, H, W) in [0, 1] -> opponent planes (N, 3, H, W), float64: ITU-R 601 luma, then two
    chroma planes at half weight, red-green and yellow-blue. Zero-mean per plane, a colour cast or tint
    is a near-constant shift of the chroma planes; the luma plane carries most of the energy."""
    import torch

    x = x.double()
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    y = sum(c * x[:, i : i + 1] for i, c in enumerate(LUMA))
    return torch.cat([y, CHROMA * (r - g) / 2, CHROMA * ((r + g) / 2 - b) / 2], dim=1)


def ncc_maps(images: Any, templates: Any, image_fft: Any = None, flat: float = FLAT_STD) -> Any:
    """Zero-mean NCC of every template (M, C, h, w) at every position of every image (N, C, H, W)
    -> (N, M, H-h+1, W-w+1), float64, with one norm over the C channels. Patches whose per-pixel
    std is below ``flat`` score 0; a flat template is NaN. The correlations are products of FFTs
    (``image_fft``: ``torch.fft.rfft2`` of the images as float32, reused across template sizes), so
    the cost does not grow with the template's size."""
    import torch

    x = images.double()
    C, H, W = x.shape[-3:]
    t = templates.double()
    h, w = t.shape[-2:]
    n = h * w
    t0 = t - t.mean(dim=(2, 3), keepdim=True)
    tnorm = t0.flatten(1).norm(dim=1)  # (M,)
    # the correlations in float32 (the norms below stay float64): 1e-6 of the score at 128 px, half the time
    fx = torch.fft.rfft2(x.float()) if image_fft is None else image_fft  # (N, C, H, W//2+1)
    ft = torch.fft.rfft2(t0.float(), s=(H, W))  # (M, C, ...)
    # sum T0 * X = sum T0 * (X - patch mean), since T0 sums to 0 per channel; cross-correlation
    num = torch.fft.irfft2((fx[:, None] * ft[None].conj()).sum(dim=2), s=(H, W))[..., : H - h + 1, : W - w + 1]
    num = num.double()
    s1 = _box_sums(x, h, w)
    s2 = _box_sums(x * x, h, w)
    pvar = (s2 - s1 * s1 / n).sum(dim=1, keepdim=True).clamp_min(0.0)  # (N, 1, ., .)
    pnorm = pvar.sqrt()
    is_flat = pnorm < flat * math.sqrt(n)
    # a template with a per-pixel std under 1e-4 is flat (resampling leaves ~1e-8 of noise on a flat work)
    tn = torch.where(tnorm > 1e-4 * math.sqrt(C * n), tnorm, torch.full_like(tnorm, float("nan"))).view(1, -1, 1, 1)
    out = num / (pnorm.clamp_min(1e-12) * tn)
    return torch.where(is_flat & torch.isfinite(tn), torch.zeros_like(out), out).clamp(-1.0, 1.0)


def match(images: Any, works: Any, scales: tuple[float, ...] = DEFAULT_SCALES, max_side: int = 128,
          *, mirror: bool = True) -> tuple[Any, Any]:
    """Best raw NCC placement (luma and chroma planes) of each work in each image: (scores (N, M), boxes (N, M, 4)) with
    boxes as (x0, y0, x1, y1) in fractions of the image's width and height. ``mirror`` also tries each
    work flipped left to right. Not yet set against the null level (``LocalCopy`` does that)."""
    import torch

    H, W = images.shape[-2:]
    if max(H, W) > max_side:
        k = max_side / max(H, W)
        images = resize(images, (max(8, round(H * k)), max(8, round(W * k))), mode="bicubic")
        H, W = images.shape[-2:]
    N, M = images.shape[0], works.shape[0]
    works = works.to(images.device)
    cands = torch.cat([works, works.flip(-1)]) if mirror else works  # (K*M, 3, h, w)
    K = cands.shape[0] // M
    y = planes(images)
    fy = torch.fft.rfft2(y.float())
    best = torch.full((N, M), -2.0, dtype=torch.float64)
    boxes = torch.zeros((N, M, 4), dtype=torch.float64)
    nan = torch.zeros((N, M), dtype=torch.bool)
    for s in scales:
        h, w = _template_size(tuple(works.shape[-2:]), (H, W), s)
        r = ncc_maps(y, planes(resize(cands, (h, w))), fy)  # (N, K*M, H-h+1, W-w+1)
        nan |= torch.isnan(r).flatten(2).any(dim=2).view(N, K, M).any(dim=1)
        v, i = torch.nan_to_num(r, nan=-2.0).flatten(2).max(dim=2)  # (N, K*M)
        v, kbest = v.view(N, K, M).max(dim=1)  # (N, M): the better of the work and its mirror
        i = i.view(N, K, M).gather(1, kbest[:, None]).squeeze(1)
        better = v > best
        y0 = torch.div(i, r.shape[-1], rounding_mode="floor").double()
        x0 = (i % r.shape[-1]).double()
        box = torch.stack([x0 / W, y0 / H, (x0 + w) / W, (y0 + h) / H], dim=-1)
        best = torch.where(better, v, best)
        boxes = torch.where(better[..., None], box, boxes)
    best[nan] = float("nan")
    return best.float(), boxes


def generic_shapes(height: int, width: int) -> Any:
    """The null bank: images that hold nothing protected but the shapes a work can share with anything
    (discs, rings, squares and blobs bright on dark and dark on bright, at two sizes; half-planes,
    gradients, stripes, smoothed noise), grey, as (B, 3, height, width) in [0.15, 0.85]."""
    import torch
    import torch.nn.functional as F

    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    out = []
    for r in (0.15, 0.3):
        for cx, cy in ((0.35, 0.4), (0.6, 0.55)):
            d = ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt()
            disc = (d < r).float()
            out += [disc, 1 - disc, ((d < r) & (d > 0.7 * r)).float(),
                    ((xx - cx).abs() < r).float() * ((yy - cy).abs() < r).float(), torch.exp(-((d / r) ** 2))]
    out += [(xx > 0.5).float(), (yy > 0.4).float(), yy, ((xx - 0.5) ** 2 + (yy - 0.5) ** 2).sqrt(),
            (torch.sin(xx * 6 * math.pi) > 0).float(), (torch.sin((xx + yy) * 5 * math.pi) > 0).float()]
    g = torch.Generator().manual_seed(0)
    for k in (4, 8, 16):
        n = torch.randn(1, 1, k, k, generator=g)
        out.append(F.interpolate(n, size=(height, width), mode="bicubic", align_corners=False)[0, 0])
    x = torch.stack(out)[:, None]
    lo, hi = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    t = (x - lo) / (hi - lo)  # 0 = background, 1 = shape
    # each image in one of six colour pairs (shape on background), so colour is generic too
    pairs = torch.tensor([[[0.85, 0.85, 0.85], [0.15, 0.15, 0.15]], [[0.9, 0.3, 0.2], [0.2, 0.3, 0.7]],
                          [[0.95, 0.8, 0.2], [0.1, 0.1, 0.15]], [[0.2, 0.6, 0.3], [0.85, 0.8, 0.7]],
                          [[0.3, 0.4, 0.9], [0.9, 0.85, 0.6]], [[0.8, 0.5, 0.3], [0.35, 0.25, 0.2]]])
    fg = pairs[torch.arange(len(out)) % len(pairs), 0].view(-1, 3, 1, 1)
    bg = pairs[torch.arange(len(out)) % len(pairs), 1].view(-1, 3, 1, 1)
    return (bg + (fg - bg) * t).contiguous()


def above_null(raw: Any, null: Any) -> Any:
    """A raw best-placement NCC re-expressed against the work's null level (its best NCC on the null
    bank): 0 at the null level, 1 at a perfect match, -1 at -1. Same shape as ``raw``."""
    import torch

    return torch.where(raw >= null, (raw - null) / (1 - null).clamp_min(1e-6), (raw - null) / (1 + null))


class LocalCopy(Metric):
    name = "local_copy"
    direction = "similarity"
    by_kind = True  # compare() takes the works' kinds: a mark is searched at MARK_SCALES
    default_threshold = 0.385
    threshold_source = (
        "calibrated here, not from a paper, on bench/partial_scenes.py's calibration set only (10 scenes, 3 pasted "
        "non-protected images, 7 works at 128 px): the highest non-copy score 0.168 (770 image x work pairs) and "
        "the 5th percentile of the 60 copies at 25-60% of the side 0.603; 0.385 is midway. Proven on the bench's "
        "other 16 scenes and 2 other pasted images (docs/partial-copies.md)"
    )
    lower_bound = -1.0
    upper_bound = 1.0
    min_size = 16

    def __init__(
        self,
        *,
        device: str = "cpu",
        weights_dir: str | None = None,
        scales: tuple[float, ...] = DEFAULT_SCALES,
        max_side: int = 128,
        mark_scales: tuple[float, ...] | None = None,
        mark_max_side: int | None = None,
    ) -> None:
        self.device = device
        self.scales = tuple(float(s) for s in scales)
        self.max_side = int(max_side)
        self.mark_scales = tuple(float(s) for s in (mark_scales or MARK_SCALES))
        self.mark_max_side = int(mark_max_side or MARK_MAX_SIDE)
        if not self.scales or not all(0.05 <= s <= 1.0 for s in (*self.scales, *self.mark_scales)):
            from ..errors import MemorizationConfigError

            raise MemorizationConfigError(
                f"metric 'local_copy': scales must be fractions in [0.05, 1], got {scales!r}"
            )
        self._null: dict[tuple[str, int, int, str], float] = {}  # (work digest, H, W, kind) -> null level

    @property
    def version(self) -> str:
        sc = ",".join(f"{s:g}" for s in self.scales)
        mk = ",".join(f"{s:g}" for s in self.mark_scales)
        return (f"local_copy-v3(ncc-luma+chroma*{CHROMA:g},mirror,flat<{FLAT_STD:g},"
                f"above-null({NULL_BANK}),scales={sc},max_side={self.max_side},mark={mk}@{self.mark_max_side})")

    def _setting(self, kind: str) -> tuple[tuple[float, ...], int]:
        return (self.mark_scales, self.mark_max_side) if kind == "mark" else (self.scales, self.max_side)

    def features(self, images: Any) -> Any:
        return as_images(images, self.name, min_size=1, device=self.device)

    def null_levels(self, works: Any, height: int, width: int, kind: str = "work") -> Any:
        """Each work's best raw NCC on the null bank (``generic_shapes``) at the working size of an
        image of ``height`` x ``width``: how well the work matches things that are not it. (M,)"""
        import hashlib

        import torch

        from .cache import tensor_bytes

        scales, side = self._setting(kind)
        out = []
        for w in works:
            key = (hashlib.sha256(tensor_bytes(w.float().cpu())).hexdigest(), height, width, kind)
            if key not in self._null:
                bank = generic_shapes(height, width).to(w.device)
                raw, _ = match(bank, w[None].float(), scales, side)
                self._null[key] = float(raw.max())
            out.append(self._null[key])
        return torch.tensor(out, dtype=torch.float32)

    def _search(self, a: Any, b: Any, kind: str) -> tuple[Any, Any]:
        scales, side = self._setting(kind)
        raw, boxes = match(a, b, scales, side)
        null = self.null_levels(b, int(a.shape[-2]), int(a.shape[-1]), kind)
        return above_null(raw, null[None].to(raw.device)), boxes

    def compare(self, a: Any, b: Any, kinds: Any = None) -> Any:
        """(N, M) scores of images ``a`` against works ``b``: a tensor (M, 3, h, w), or a list of
        (3, h, w) works of any sizes (``images.fit_inside``); ``kinds``: "work" or "mark" for each."""
        import torch

        a = as_images(a, self.name, min_size=self.min_size, device=self.device)
        works = list(b) if isinstance(b, (list, tuple)) else list(as_images(b, self.name, device=self.device))
        kinds = list(kinds) if kinds is not None else ["work"] * len(works)
        out = torch.zeros((a.shape[0], len(works)), dtype=torch.float32)
        groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
        for j, (w, k) in enumerate(zip(works, kinds)):
            groups.setdefault((k, tuple(w.shape)), []).append(j)
        with torch.no_grad():
            for (kind, _), idx in groups.items():
                stack = as_images(torch.stack([works[j] for j in idx]), self.name, device=self.device)
                out[:, idx] = self._search(a, stack, kind)[0].float().cpu()
        return check_scores(self.name, out)

    def locate(self, image: Any, work: Any, kind: str = "work") -> dict[str, Any]:
        """Where ``work`` (3, h, w) best matches inside ``image`` (3, H, W): score and box
        (x0, y0, x1, y1, fractions of the image), for the report."""
        import torch

        from ..images import fit_inside

        h, w = int(image.shape[-2]), int(image.shape[-1])
        with torch.no_grad():
            s, b = self._search(image.float()[None].to(self.device),
                                fit_inside(work.float(), h, w)[None].to(self.device), kind)
        return {"score": round(float(s[0, 0]), 4), "box": [round(float(v), 4) for v in b[0, 0]]}


def locate(image: Any, work: Any, kind: str = "work") -> dict[str, Any]:
    """``LocalCopy().locate(image, work)`` with the default settings."""
    return LocalCopy().locate(image, work, kind)

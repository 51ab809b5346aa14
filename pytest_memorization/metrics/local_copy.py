"""Local copy: is the protected work, smaller and anywhere, inside the generated image? And where.

Tiled L2 and SSIM compare whole images, so a protected logo, character or face pasted into a new
scene escapes them (the template and local memorization of Webster 2023 and Chen et al., ICLR
2025). This metric slides the work over the generated image at every position and at
24 sizes (``scales``: the work fitted inside the image, then scaled by 30% to 100%, keeping its
aspect ratio) and scores each placement by **zero-mean normalized cross-correlation** (NCC) of
the RGB pixels: per-channel means removed, one norm over the three channels. The score is the
best placement's NCC, in [-1, 1], a similarity; ``locate`` returns that placement as a box.

Weight-free and torch-only (FFT products for the correlations, float64; integral images for the
patch norms). Working size: generated images with a side above ``max_side`` (default 128 px)
are searched on a copy scaled to ``max_side`` (the box is given in fractions of the image, so it
holds at any size); this bounds the cost at 512 px (``bench/local_copy.py``).

Fail closed: a work with no texture (a single colour) has no NCC and is a ``MetricFailedError``;
image patches flatter than ``FLAT_STD`` score 0 (a flat patch cannot hold a textured work).
Keypoint matching (ORB/SIFT + RANSAC) was the alternative; see docs/design.md for why NCC.
"""

from __future__ import annotations

import math
from typing import Any

from ._util import as_images, check_scores, resize
from .base import Metric

FLAT_STD = 0.02  # per-pixel std of a patch below which it cannot match a textured work
# 24 sizes from 30% to 100%, 5.4% apart: a work pasted between two sizes is at most 2.7% off one
DEFAULT_SCALES: tuple[float, ...] = tuple(round(0.3 * (1 / 0.3) ** (i / 23), 3) for i in range(24))


def _box_sums(x: Any, h: int, w: int) -> Any:
    """Sum over every h x w window of (B, C, H, W) -> (B, C, H-h+1, W-w+1), by integral image."""
    import torch.nn.functional as F

    s = F.pad(x.cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    return s[..., h:, w:] - s[..., :-h, w:] - s[..., h:, :-w] + s[..., :-h, :-w]


def _template_size(work_hw: tuple[int, int], image_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """The work's size when its fit inside the image is scaled by ``scale`` (aspect ratio kept)."""
    k = scale * min(image_hw[0] / work_hw[0], image_hw[1] / work_hw[1])
    return max(4, min(image_hw[0], round(work_hw[0] * k))), max(4, min(image_hw[1], round(work_hw[1] * k)))


def ncc_maps(images: Any, templates: Any, image_fft: Any = None) -> Any:
    """NCC of every template (M, 3, h, w) at every position of every image (N, 3, H, W) ->
    (N, M, H-h+1, W-w+1), float64. Flat patches score 0; a flat template is NaN. The correlations
    are products of FFTs (``image_fft``: ``torch.fft.rfft2`` of the float64 images, reused across
    template sizes), so the cost does not grow with the template's size."""
    import torch

    x = images.double()
    H, W = x.shape[-2:]
    t = templates.double()
    h, w = t.shape[-2:]
    n = h * w
    t0 = t - t.mean(dim=(2, 3), keepdim=True)
    tnorm = t0.flatten(1).norm(dim=1)  # (M,)
    fx = torch.fft.rfft2(x) if image_fft is None else image_fft  # (N, 3, H, W//2+1)
    ft = torch.fft.rfft2(t0, s=(H, W))  # (M, 3, ...)
    # sum T0 * X = sum T0 * (X - patch mean), since T0 sums to 0 per channel; cross-correlation
    num = torch.fft.irfft2((fx[:, None] * ft[None].conj()).sum(dim=2), s=(H, W))[..., : H - h + 1, : W - w + 1]
    s1 = _box_sums(x, h, w)
    s2 = _box_sums(x * x, h, w)
    pvar = (s2 - s1 * s1 / n).sum(dim=1, keepdim=True).clamp_min(0.0)  # (N, 1, ., .)
    pnorm = pvar.sqrt()
    flat = pnorm < FLAT_STD * math.sqrt(3 * n)
    tn = torch.where(tnorm > 1e-9, tnorm, torch.full_like(tnorm, float("nan"))).view(1, -1, 1, 1)
    out = num / (pnorm.clamp_min(1e-12) * tn)
    return torch.where(flat & torch.isfinite(tn), torch.zeros_like(out), out).clamp(-1.0, 1.0)


def match(images: Any, works: Any, scales: tuple[float, ...] = DEFAULT_SCALES, max_side: int = 128) -> tuple[Any, Any]:
    """Best NCC placement of each work in each image: (scores (N, M), boxes (N, M, 4)) with boxes
    as (x0, y0, x1, y1) in fractions of the image's width and height."""
    import torch

    H, W = images.shape[-2:]
    if max(H, W) > max_side:
        k = max_side / max(H, W)
        images = resize(images, (max(8, round(H * k)), max(8, round(W * k))), mode="bicubic")
        H, W = images.shape[-2:]
    N, M = images.shape[0], works.shape[0]
    fx = torch.fft.rfft2(images.double())
    best = torch.full((N, M), -2.0, dtype=torch.float64)
    boxes = torch.zeros((N, M, 4), dtype=torch.float64)
    nan = torch.zeros((N, M), dtype=torch.bool)
    for s in scales:
        h, w = _template_size(tuple(works.shape[-2:]), (H, W), s)
        t = resize(works, (h, w))
        r = ncc_maps(images, t, fx)  # (N, M, H-h+1, W-w+1)
        nan |= torch.isnan(r).flatten(2).any(dim=2)
        flat = torch.nan_to_num(r, nan=-2.0).flatten(2)
        v, i = flat.max(dim=2)
        better = v > best
        y0 = torch.div(i, r.shape[-1], rounding_mode="floor").double()
        x0 = (i % r.shape[-1]).double()
        box = torch.stack([x0 / W, y0 / H, (x0 + w) / W, (y0 + h) / H], dim=-1)
        best = torch.where(better, v, best)
        boxes = torch.where(better[..., None], box, boxes)
    best[nan] = float("nan")
    return best.float(), boxes


class LocalCopy(Metric):
    name = "local_copy"
    direction = "similarity"
    default_threshold = 0.75
    threshold_source = (
        "calibrated here, not from a paper: on scikit-image photos at 64 px, each of 6 works pasted at 40-60% "
        "scale at random places into the 5 others (90 copies) scored >= 0.854 (>= 0.826 after JPEG q75, box IoU >= 0.857), "
        "and a work against a photo that does not hold it <= 0.684 (390 pairs); 0.75 sits about midway "
        "(tests/metrics/test_local_copy_photos.py)"
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
    ) -> None:
        self.device = device
        self.scales = tuple(float(s) for s in scales)
        self.max_side = int(max_side)
        if not self.scales or not all(0.05 <= s <= 1.0 for s in self.scales):
            from ..errors import MemorizationConfigError

            raise MemorizationConfigError(
                f"metric 'local_copy': scales must be fractions in [0.05, 1], got {scales!r}"
            )

    @property
    def version(self) -> str:
        sc = ",".join(f"{s:g}" for s in self.scales)
        return f"local_copy-v1(ncc-rgb-zero-mean,flat<{FLAT_STD:g},scales={sc},max_side={self.max_side})"

    def features(self, images: Any) -> Any:
        return as_images(images, self.name, min_size=1, device=self.device)

    def compare(self, a: Any, b: Any) -> Any:
        import torch

        a = as_images(a, self.name, min_size=self.min_size, device=self.device)
        b = as_images(b, self.name, min_size=1, device=self.device)
        with torch.no_grad():
            scores, _ = match(a, b, self.scales, self.max_side)
        return check_scores(self.name, scores)

    def locate(self, image: Any, work: Any) -> dict[str, Any]:
        """Where ``work`` (3, h, w) best matches inside ``image`` (3, H, W): score and box
        (x0, y0, x1, y1, fractions of the image), for the report."""
        import torch

        with torch.no_grad():
            s, b = match(image.float()[None].to(self.device), work.float()[None].to(self.device),
                         self.scales, self.max_side)
        return {"score": round(float(s[0, 0]), 4), "box": [round(float(v), 4) for v in b[0, 0]]}


def locate(image: Any, work: Any) -> dict[str, Any]:
    """``LocalCopy().locate(image, work)`` with the default settings."""
    return LocalCopy().locate(image, work)

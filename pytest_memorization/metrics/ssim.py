"""SSIM (Wang et al. 2004), batched N x M, implemented in torch.

Gaussian window 11 x 11, sigma 1.5, luminance in [0, 1] (L = 1), C1 = 0.01^2, C2 = 0.03^2,
population (not sample) covariances, "valid" filtering (no padding: the map is 10 px smaller than
the image), computed per RGB channel and averaged over channels and positions. This matches
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=0)`` to about 1e-6.

Range [-1, 1], a similarity: a copy when ssim >= threshold. No paper gives a copy threshold for
SSIM; the default below was calibrated on scikit-image photographs (tests/metrics/
test_pixel_photos.py) with alignment on: see ``threshold_source``.

Resize policy: compared at the generated images' size; references of another size are resized to it
(bicubic, antialias). Alignment (``align=True``, default): best score over small shifts and
rescalings of the generated image, see ``metrics.align``.
"""

from __future__ import annotations

from typing import Any

from .pixel import PixelMetric

WIN, SIGMA, C1, C2 = 11, 1.5, 0.01**2, 0.03**2


def _kernel(device: Any) -> Any:
    import torch

    r = torch.arange(WIN, dtype=torch.float32, device=device) - (WIN - 1) / 2
    g = torch.exp(-(r**2) / (2 * SIGMA**2))
    return g / g.sum()


def _filt(x: Any, g: Any) -> Any:
    """Separable gaussian, valid region, on (B, C, H, W)."""
    import torch.nn.functional as F

    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, WIN, 1).expand(c, 1, WIN, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, WIN).expand(c, 1, 1, WIN), groups=c)


def ssim_pairs(x: Any, y: Any) -> Any:
    """SSIM of paired images (P, 3, h, w) -> (P,)."""
    import torch

    g = _kernel(x.device)
    p = x.shape[0]
    f = _filt(torch.cat([x, y, x * x, y * y, x * y], dim=1), g)  # (P, 15, h', w')
    mx, my, xx, yy, xy = f.split(x.shape[1], dim=1)
    vx, vy, cxy = xx - mx * mx, yy - my * my, xy - mx * my
    num = (2 * mx * my + C1) * (2 * cxy + C2)
    den = (mx * mx + my * my + C1) * (vx + vy + C2)
    return (num / den).reshape(p, -1).mean(dim=1)


def structure(images: Any) -> Any:
    """How much local structure each image (N, 3, H, W) has: the mean, over positions, of the local
    standard deviation of its luma (ITU-R 601) under SSIM's own 11 x 11 gaussian window -> (N,).

    Where the local standard deviation is well below sqrt(C2) = 0.03, SSIM's contrast-structure term
    (2 cov + C2) / (var_x + var_y + C2) is close to 1 whatever the other image holds, so SSIM compares
    mean brightness only: a near-flat image then scores high against any work with flat regions of a
    similar brightness. ``judging.flat_guard`` uses this to refuse SSIM-only copy verdicts there."""
    import torch

    x = images.float()
    y = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    f = _filt(torch.cat([y, y * y], dim=1), _kernel(y.device))
    return (f[:, 1:] - f[:, :1] ** 2).clamp(min=0).sqrt().mean(dim=(1, 2, 3))


class SSIM(PixelMetric):
    name = "ssim"
    direction = "similarity"
    # Calibrated, not from a paper: see threshold_source for the measured numbers.
    default_threshold = 0.5
    threshold_source = (
        "calibrated on scikit-image photos, not from a paper: at 64 px with alignment, copies (JPEG q75, "
        "1-2 px shifts, 0.95 crop-rescale, brightness/contrast jitter) scored >= 0.885 and the closest of "
        "15 pairs of 6 distinct photos 0.163; 0.5 sits about midway (margins 0.34 and 0.39)"
    )
    lower_bound = -1.0
    upper_bound = 1.0
    _core_version = "ssim-v1(gauss11,s1.5,C1=1e-4,C2=9e-4,valid,rgb-mean)"
    _rank = "mse"

    min_size = 24

    def pairs(self, x: Any, y: Any) -> Any:
        return ssim_pairs(x, y)

"""Tiled L2 and SSIM on real photographs (skimage.data at 64 px), default alignment on.

Copies (must be flagged): JPEG quality 75, shifted by 1 and 2 px, a 0.95 crop rescaled back,
small brightness/contrast jitter. Distinct photographs (every pair) must not be flagged.
``python tests/metrics/test_pixel_photos.py`` prints the table of measured scores.
"""

from __future__ import annotations

import io

import pytest
from metric_test_helpers import PHOTOS, load_photo

from pytest_memorization.metrics import get_metric

S, P = 64, 4  # image size, pad of the source crops


def _jpeg(x, quality=75):
    import numpy as np
    import torch
    from PIL import Image

    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return torch.from_numpy(out.copy()).permute(2, 0, 1).float() / 255


def variants(big):
    """(original 64 px, {case: copy}) from a (3, 72, 72) source."""
    import torch.nn.functional as F

    orig = big[:, P : P + S, P : P + S]
    c = round(S * 0.95)
    o = (S - c) // 2 + P
    crop = big[None, :, o : o + c, o : o + c]
    m = orig.mean()
    return orig, {
        "jpeg q75": _jpeg(orig),
        "shift 1 px": big[:, P + 1 : P + 1 + S, P : P + S],
        "shift 2 px (diag)": big[:, P + 2 : P + 2 + S, P + 2 : P + 2 + S],
        "crop 0.95 + rescale": F.interpolate(crop, size=(S, S), mode="bicubic", antialias=True).clamp(0, 1)[0],
        "brightness+0.04 contrast*1.08": ((orig - m) * 1.08 + m + 0.04).clamp(0, 1),
    }


def measure(photos_big, align=True):
    """{case: (worst tiled_l2, worst ssim) over photos}, plus the closest distinct pair of each."""
    import torch

    tl, ss = get_metric("tiled_l2", align=align), get_metric("ssim", align=align)
    origs, cases = [], {}
    for big in photos_big:
        o, vs = variants(big)
        origs.append(o)
        for k, v in vs.items():
            cases.setdefault(k, []).append(v)
    R = torch.stack(origs)
    rows = {}
    for k, v in cases.items():
        G = torch.stack(v)
        rows[k] = (tl.score(G, R).diag().max().item(), ss.score(G, R).diag().min().item())
    off = ~torch.eye(len(R), dtype=torch.bool)
    rows["distinct photos (closest pair)"] = (
        tl.score(R, R)[off].min().item(),
        ss.score(R, R)[off].max().item(),
    )
    return rows


@pytest.fixture(scope="module")
def table(photos_big):
    return measure(photos_big)


COPIES = ["jpeg q75", "shift 1 px", "shift 2 px (diag)", "crop 0.95 + rescale", "brightness+0.04 contrast*1.08"]


@pytest.mark.parametrize("case", COPIES)
def test_copies_flagged(table, case):
    tl, ss = table[case]
    t_thr = get_metric("tiled_l2").default_threshold
    s_thr = get_metric("ssim").default_threshold
    assert tl <= t_thr, f"{case}: tiled_l2 {tl:.3f} > {t_thr}"
    assert ss >= s_thr, f"{case}: ssim {ss:.3f} < {s_thr}"


def test_distinct_photos_not_flagged(table):
    tl, ss = table["distinct photos (closest pair)"]
    assert tl > get_metric("tiled_l2").default_threshold
    assert ss < get_metric("ssim").default_threshold


def test_shift_breaks_unaligned_tiled_l2(photos_big):
    """Why alignment is on by default: a 1 px shift of coffee passes 0.15 without it."""
    coffee = photos_big[PHOTOS.index("coffee")]
    orig, vs = variants(coffee)
    raw = get_metric("tiled_l2", align=False).score(vs["shift 1 px"][None], orig[None]).item()
    aligned = get_metric("tiled_l2").score(vs["shift 1 px"][None], orig[None]).item()
    assert raw > 0.15 >= aligned


def test_ssim_matches_skimage(photos_big):
    import numpy as np
    from skimage.metrics import structural_similarity

    R = photos_big[:, :, P : P + S, P : P + S]
    ours = get_metric("ssim", align=False).score(R, R)
    for i, j in [(0, 1), (1, 2), (3, 4), (2, 2)]:
        ref = structural_similarity(
            R[i].numpy().astype(np.float64), R[j].numpy().astype(np.float64), data_range=1.0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=0,
        )
        assert abs(ours[i, j].item() - ref) < 1e-5


def test_reference_resized_to_generated_size(photos_big):
    import torch.nn.functional as F

    R = photos_big[:, :, P : P + S, P : P + S]
    big = F.interpolate(R, size=(128, 128), mode="bicubic", antialias=True).clamp(0, 1)
    d = get_metric("tiled_l2").score(R, big)
    assert d.shape == (len(R), len(R))
    assert d.diag().max().item() < 0.05  # a 2x upscale resized back is nearly identical


if __name__ == "__main__":
    import time

    import torch

    big = torch.stack([load_photo(n) for n in PHOTOS])
    for al in (True, False):
        t = time.perf_counter()
        rows = measure(big, align=al)
        print(f"align={al} ({time.perf_counter() - t:.2f} s)")
        print("| case | tiled_l2 (worst) | ssim (worst) |\n|---|---|---|")
        for k, (a, b) in rows.items():
            print(f"| {k} | {a:.3f} | {b:.3f} |")

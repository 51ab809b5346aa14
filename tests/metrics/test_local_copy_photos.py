"""The local-copy metric on real photographs (skimage.data at 64 px): where tiled L2 cannot look.

Copies (must be flagged, with the right box): each of six photos pasted at 40-60% of the side at
seeded random places into each of the five others (3 placements each, 90 images), as pasted and
after JPEG quality 75. Not copies (must stay below the threshold): each photo against each other
photo, and every pasted image against the four works it does not contain.
``python tests/metrics/test_local_copy_photos.py`` prints the measured table (README, Metrics).
"""

from __future__ import annotations

import io
import random

import pytest
from metric_test_helpers import PHOTOS, load_photo

from pytest_memorization.errors import MetricFailedError
from pytest_memorization.metrics import get_metric

S = 64


def _jpeg(x, quality=75):
    import numpy as np
    import torch
    from PIL import Image

    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return torch.from_numpy(out.copy()).permute(2, 0, 1).float() / 255


def paste(background, work, scale, rng):
    """``work`` resized to ``scale`` of the side and pasted at a random place -> (image, box in fractions)."""
    import torch.nn.functional as F

    size = background.shape[-1]
    s = round(scale * size)
    y, x = rng.randrange(size - s + 1), rng.randrange(size - s + 1)
    out = background.clone()
    out[:, y : y + s, x : x + s] = F.interpolate(work[None], size=(s, s), mode="bicubic", antialias=True).clamp(0, 1)[0]
    return out, (x / size, y / size, (x + s) / size, (y + s) / size)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def measure(per_pair: int = 3, seed: int = 0) -> dict:
    """Scores and box IoUs of every pasted copy, and the scores of every non-copy."""
    import torch

    from pytest_memorization.metrics.local_copy import match

    photos = torch.stack([load_photo(n, S, 0) for n in PHOTOS])
    m = get_metric("local_copy")
    rng = random.Random(seed)
    out = {"pasted": [], "pasted, JPEG q75": [], "iou": [], "different photos": [], "other works in a pasted image": []}
    for j, _ in enumerate(PHOTOS):
        for b, _ in enumerate(PHOTOS):
            if b == j:
                continue
            for _ in range(per_pair):
                img, box = paste(photos[b], photos[j], rng.uniform(0.4, 0.6), rng)
                for case, x in (("pasted", img), ("pasted, JPEG q75", _jpeg(img))):
                    s, (_, boxes) = m.compare(x[None], photos), match(x[None], photos)  # score; box
                    out[case].append(float(s[0, j]))
                    out["iou"].append(iou(boxes[0, j].tolist(), box))
                    if case == "pasted":
                        out["other works in a pasted image"] += [float(s[0, k]) for k in range(len(PHOTOS)) if k not in (j, b)]
    s = get_metric("local_copy").score(photos, photos)
    out["different photos"] = [float(s[i, k]) for i in range(len(PHOTOS)) for k in range(len(PHOTOS)) if i != k]
    out["self"] = [float(s[i, i]) for i in range(len(PHOTOS))]
    return out


@pytest.fixture(scope="module")
def measured():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small FFTs: one thread is fastest and shares the machine
    try:
        return measure()
    finally:
        torch.set_num_threads(threads)


def test_pasted_works_are_found_above_the_threshold_with_the_right_box(measured):
    t = get_metric("local_copy").default_threshold
    assert len(measured["pasted"]) == 90
    assert min(measured["pasted"]) >= t, min(measured["pasted"])
    assert min(measured["pasted, JPEG q75"]) >= t, min(measured["pasted, JPEG q75"])
    assert min(measured["iou"]) > 0.5, min(measured["iou"])


def test_different_photos_stay_below_the_threshold(measured):
    t = get_metric("local_copy").default_threshold
    assert max(measured["different photos"]) < t, max(measured["different photos"])
    assert max(measured["other works in a pasted image"]) < t, max(measured["other works in a pasted image"])


def test_a_whole_copy_scores_one(measured):
    assert min(measured["self"]) > 0.999


def test_tiled_l2_and_ssim_miss_the_pasted_work():
    """The reason the metric exists: the same pasted images are far from copies for tiled L2 and SSIM."""
    import torch

    photos = torch.stack([load_photo(n, S, 0) for n in PHOTOS])
    rng = random.Random(1)
    imgs = torch.stack([paste(photos[1], photos[0], 0.5, rng)[0], paste(photos[2], photos[3], 0.5, rng)[0]])
    works = photos[[0, 3]]
    assert get_metric("tiled_l2").score(imgs, works).diag().min() > 0.15
    assert get_metric("ssim").score(imgs, works).diag().max() < 0.5
    lc = get_metric("local_copy")
    assert lc.score(imgs, works).diag().min() >= lc.default_threshold


def test_box_holds_at_512_px():
    """Above ``max_side`` the search runs on a 128 px copy; the box is in fractions, so it holds."""
    import torch.nn.functional as F

    bg, work = load_photo("coffee", 512, 0), load_photo("astronaut", 64, 0)
    img, box = paste(bg, work, 0.45, random.Random(3))
    m = get_metric("local_copy")
    found = m.locate(img, work)
    assert found["score"] >= m.default_threshold and iou(found["box"], box) > 0.5, (found, box)
    big = F.interpolate(work[None], size=(300, 300), mode="bicubic", antialias=True).clamp(0, 1)[0]
    assert iou(m.locate(img, big)["box"], box) > 0.5  # the work's own size does not matter


def test_fail_closed_on_a_flat_work_and_on_nan():
    import torch

    m = get_metric("local_copy")
    img = load_photo("camera", S, 0)[None]
    with pytest.raises(MetricFailedError, match="local_copy"):
        m.score(img, torch.full((1, 3, 32, 32), 0.5))
    bad = img.clone()
    bad[0, 0, 5, 5] = float("nan")
    with pytest.raises(MetricFailedError, match="local_copy"):
        m.score(bad, load_photo("coffee", S, 0)[None])


def test_a_flat_image_holds_no_work():
    """Flat patches correlate 0 with any work, which is below the work's null level: a negative score."""
    import torch

    s = get_metric("local_copy").score(torch.full((1, 3, S, S), 0.3), load_photo("coffee", S, 0)[None])
    assert float(s) < 0.0


if __name__ == "__main__":
    import time

    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    m = measure()
    print(f"({time.perf_counter() - t0:.1f} s)\n| case | n | min | median | max |\n|---|---|---|---|---|")
    for k, v in m.items():
        v = sorted(v)
        print(f"| {k} | {len(v)} | {v[0]:.3f} | {v[len(v) // 2]:.3f} | {v[-1]:.3f} |")

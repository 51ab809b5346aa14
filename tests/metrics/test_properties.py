"""Invariants of the metrics (hypothesis, small settings)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_memorization.metrics import get_metric

METRICS = {
    "tiled_l2": get_metric("tiled_l2"),
    "tiled_l2-noalign": get_metric("tiled_l2", align=False),
    "ssim": get_metric("ssim"),
    "ssim-noalign": get_metric("ssim", align=False),
}
_lpips: dict[str, object] = {}


def lpips_random():
    if "m" not in _lpips:
        _lpips["m"] = get_metric("lpips", weights="random", size=64)
    return _lpips["m"]


def images(n, m, seed, size=32, smooth=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n + m, 3, size, size, generator=g)
    if smooth:  # natural-ish images: low-frequency content plus noise
        lo = torch.rand(n + m, 3, 4, 4, generator=g)
        x = 0.7 * torch.nn.functional.interpolate(lo, size=(size, size), mode="bilinear") + 0.3 * x
    return x[:n], x[n:]


cfg = settings(max_examples=20, deadline=None)


@pytest.mark.parametrize("name", list(METRICS) + ["lpips"])
@cfg
@given(n=st.integers(1, 3), m=st.integers(1, 3), seed=st.integers(0, 2**16), smooth=st.booleans())
def test_identity_range_batch(name, n, m, seed, smooth):
    metric = lpips_random() if name == "lpips" else METRICS[name]
    size = 64 if name == "lpips" else 32
    x, y = images(n, m, seed, size, smooth)
    s = metric.score(x, y)
    assert s.shape == (n, m)
    lo, hi = metric.lower_bound, metric.upper_bound
    assert lo is None or s.min().item() >= lo - 1e-6
    assert hi is None or s.max().item() <= hi + 1e-6
    same = metric.score(x, x).diag()
    target = 0.0 if metric.direction == "distance" else 1.0
    assert torch.equal(same, torch.full_like(same, target))
    rows = metric.score(x[-1:], y)
    assert torch.allclose(rows, s[-1:], atol=1e-6)


@pytest.mark.parametrize("name", ["tiled_l2-noalign", "ssim-noalign", "lpips"])
@cfg
@given(seed=st.integers(0, 2**16))
def test_symmetric(name, seed):
    metric = lpips_random() if name == "lpips" else METRICS[name]
    x, y = images(2, 3, seed, 64 if name == "lpips" else 32)
    assert torch.allclose(metric.score(x, y), metric.score(y, x).T, atol=1e-6)


@pytest.mark.parametrize("name", ["tiled_l2", "ssim"])
@cfg
@given(seed=st.integers(0, 2**16))
def test_alignment_never_worse_than_identity_window(name, seed):
    """The identity candidate is always scored, so aligned scores are at least as close."""
    from pytest_memorization.metrics.align import interior

    metric = METRICS[name]
    x, y = images(2, 2, seed, 32, smooth=True)
    mgn = metric.align_params.margin(32, 32)
    plain = METRICS[f"{name}-noalign"].score(interior(x, mgn), interior(y, mgn))
    aligned = metric.score(x, y)
    if metric.direction == "distance":
        assert (aligned <= plain + 1e-6).all()
    else:
        assert (aligned >= plain - 1e-6).all()

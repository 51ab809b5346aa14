"""Coarse-to-fine alignment for large images: the same candidates, ranked small, scored full size.

Both ways on real photographs at 192 px (above the 64 px coarse size): a copy shifted by a few
pixels (off the shift grid) and rescaled by 2% is found (tiled L2 below 0.15, SSIM above 0.5); an
unrelated photograph stays far.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support import photo

from pytest_memorization.metrics import get_metric
from pytest_memorization.metrics.align import AlignParams, candidate, candidates, coarse_size

SIZE = 192


@pytest.mark.parametrize("size", [64, 160])
def test_one_candidate_equals_the_same_index_of_the_stack(size: int) -> None:
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    p = AlignParams()
    stack = candidates(x, p)[0]
    for k in (0, 1, 80, 81, 300, stack.shape[0] - 1):
        assert torch.equal(candidate(x, p, k)[0], stack[k]), k


def test_the_coarse_grid_maps_onto_the_full_grid() -> None:
    p = AlignParams()
    assert coarse_size(64, 64, p) is None  # small images: the full search as before
    small = coarse_size(512, 512, p)
    assert small == (64, 64) and len(p.shifts(64)) == len(p.shifts(512))


def _shifted_copy(work: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    big = F.interpolate(work[None], scale_factor=1.02, mode="bicubic", antialias=True)[0].clamp(0, 1)
    o = (big.shape[-1] - SIZE) // 2
    return torch.roll(big[:, o : o + SIZE, o : o + SIZE], shifts=(dy, dx), dims=(1, 2))


@pytest.mark.parametrize("name, copy_ok, far_ok", [
    ("tiled_l2", lambda v: v <= 0.15, lambda v: v > 0.3),
    ("ssim", lambda v: v >= 0.5, lambda v: v < 0.4),
])
def test_a_shifted_rescaled_copy_is_found_and_another_photo_is_not(name, copy_ok, far_ok) -> None:
    work = photo("astronaut", SIZE)
    gens = torch.stack([_shifted_copy(work, 3, -2), _shifted_copy(work, -5, 1), photo("coffee", SIZE)])
    aligned = get_metric(name).score(gens, work[None])[:, 0].tolist()
    plain = get_metric(name, align=False).score(gens, work[None])[:, 0].tolist()
    assert copy_ok(aligned[0]) and copy_ok(aligned[1]), (aligned, plain)
    assert not copy_ok(plain[0]), "the premise: without alignment the shifted copy is missed"
    assert far_ok(aligned[2]), aligned

"""Seed diversity flags a prompt whose seeds all make the same image."""

from __future__ import annotations

import pytest
import torch

from pytest_memorization.detectors import (
    CARLINI_THRESHOLD,
    seed_diversity,
    seed_diversity_check,
)
from pytest_memorization.errors import MemorizationConfigError


def _diverse(n: int = 4, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_tiled_l2_is_the_worst_tile_rms():
    from pytest_memorization.metrics import get_metric

    tiled_l2_matrix = get_metric("tiled_l2", align=False).score  # the one tiled L2, as seed diversity uses it
    a = torch.zeros(1, 3, 32, 32)
    b = a.clone()
    b[:, :, :8, :8] = 0.5  # one of the 16 tiles differs by 0.5 everywhere
    d = tiled_l2_matrix(a, b)
    assert d.shape == (1, 1)
    assert float(d) == pytest.approx(0.5, abs=1e-6)  # a whole-image RMS would give 0.125
    assert float(tiled_l2_matrix(a, a)) == pytest.approx(0.0, abs=1e-6)


def test_identical_generations_are_flagged():
    one = _diverse(1)
    same = one.repeat(4, 1, 1, 1) + 0.01 * torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    same = same.clamp(0, 1)
    assert seed_diversity(same) < 0.05
    res = seed_diversity_check(same)
    assert res.flagged and res.close_pairs == res.n_pairs == 6
    assert not res.gate and not res.fails  # reported only, unless the user opts in
    assert seed_diversity_check(same, gate=True).fails
    assert "AUC 0.908" in res.note


def test_diverse_generations_are_not_flagged():
    images = _diverse()
    assert seed_diversity(images) > CARLINI_THRESHOLD
    res = seed_diversity_check(images, gate=True)
    assert not res.flagged and not res.fails and res.close_pairs == 0


def test_one_repeated_pair_among_diverse_is_flagged():
    images = _diverse()
    images[3] = images[1]
    res = seed_diversity_check(images)
    assert res.flagged and res.close_pairs == 1 and res.closest == pytest.approx(0.0, abs=1e-6)


def test_callable_metric_and_bad_input():
    images = _diverse()
    assert seed_diversity(images, metric=lambda a, b: torch.cdist(a.flatten(1), b.flatten(1))) > 1.0
    with pytest.raises(MemorizationConfigError, match="at least 2 seeds"):
        seed_diversity(images[:1])
    with pytest.raises(MemorizationConfigError, match=r"\(S, 3, H, W\)"):
        seed_diversity(images[0])

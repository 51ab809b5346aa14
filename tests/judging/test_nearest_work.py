"""score_rows picks each image's nearest work for all N x M pairs at once (numpy); the pick equals the
per-pair loop's, ties, per-work thresholds and works without a threshold included."""

from __future__ import annotations

import pytest
import torch

from pytest_memorization.judging import thresholds as th
from pytest_memorization.judging.thresholds import MetricRule, score_rows
from pytest_memorization.records import Work


@pytest.mark.parametrize("seed", range(6))
def test_the_vectorised_nearest_work_equals_the_loop(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(seed)
    n, m = 7, 9
    rules = {"tiled_l2": MetricRule("tiled_l2", "distance", 0.15, 0.2, 1.0),
             "ssim": MetricRule("ssim", "similarity", 0.5 if seed % 2 else None, None, 2.0)}
    works = [Work(f"w{j}", None, thresholds=({"ssim": 0.3} if j % 3 == 0 else {}) |
                  ({"tiled_l2": None} if seed == 5 and j % 2 else {})) for j in range(m)]
    scores = {"tiled_l2": torch.rand(n, m, generator=g).round(decimals=1),  # rounded: many ties
              "ssim": torch.rand(n, m, generator=g).round(decimals=1)}
    prompts, seeds = [f"p{i}" for i in range(n)], list(range(n))
    fast = score_rows("it", prompts, seeds, scores, works, rules)
    assert th._nearest_works(n, scores, works, rules) is not None
    monkeypatch.setattr(th, "_nearest_works", lambda *a: None)
    slow = score_rows("it", prompts, seeds, scores, works, rules)
    assert [r.work for r in fast] == [r.work for r in slow]
    assert [r.findings for r in fast] == [r.findings for r in slow]


def test_a_nan_score_leaves_the_pick_to_the_loop() -> None:
    rules = {"tiled_l2": MetricRule("tiled_l2", "distance", 0.15, None, 1.0)}
    scores = {"tiled_l2": torch.tensor([[0.3, float("nan")]])}
    assert th._nearest_works(1, scores, [Work("a", None), Work("b", None)], rules) is None

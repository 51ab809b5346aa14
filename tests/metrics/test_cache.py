from __future__ import annotations

import hashlib

import torch

from pytest_memorization.metrics import get_metric
from pytest_memorization.metrics.cache import ReferenceCache, compare_to_references, reference_features

SHA_A = hashlib.sha256(b"a").hexdigest()
SHA_B = hashlib.sha256(b"b").hexdigest()


def test_reuse_and_invalidation(tmp_path):
    cache = ReferenceCache(tmp_path)
    m = get_metric("tiled_l2")
    calls = []

    def compute():
        calls.append(1)
        return torch.full((1, 3, 8, 8), float(len(calls)))

    first = cache.get_or_compute(m, SHA_A, compute)
    again = cache.get_or_compute(m, SHA_A, compute)
    assert len(calls) == 1 and torch.equal(first, again)
    cache.get_or_compute(m, SHA_B, compute)  # another file
    assert len(calls) == 2
    cache.get_or_compute(get_metric("tiled_l2", align=False), SHA_A, compute)  # another version
    assert len(calls) == 3
    assert not list(tmp_path.rglob(".tmp-*"))


def test_list_features_and_helpers(tmp_path):
    m = get_metric("lpips", weights="random", size=64)
    works = [torch.rand(3, 64, 64), torch.rand(3, 48, 80)]
    cache = ReferenceCache(tmp_path)
    f1 = reference_features(m, works, [SHA_A, SHA_B], cache)
    f2 = reference_features(m, works, [SHA_A, SHA_B], cache)
    assert all(torch.equal(a, b) for x, y in zip(f1, f2) for a, b in zip(x, y))
    gen = torch.rand(2, 3, 64, 64)
    s = compare_to_references(m, m.features(gen), f2)
    assert torch.allclose(s, m.score(gen, torch.stack([works[0], torch.nn.functional.interpolate(
        works[1][None], size=(64, 64), mode="bicubic", antialias=True).clamp(0, 1)[0]])), atol=1e-6)


def test_pixel_works_of_different_sizes(tmp_path):
    m = get_metric("ssim", align=False)
    works = [torch.rand(3, 32, 32), torch.rand(3, 40, 48), torch.rand(3, 32, 32)]
    feats = reference_features(m, works, [SHA_A, SHA_B, SHA_A], None)
    gen = torch.rand(2, 3, 32, 32)
    s = compare_to_references(m, m.features(gen), feats)
    assert s.shape == (2, 3)
    assert torch.allclose(s[:, 0::2], m.score(gen, torch.stack([works[0], works[2]])))
    assert torch.allclose(s[:, 1:2], m.score(gen, works[1][None]))

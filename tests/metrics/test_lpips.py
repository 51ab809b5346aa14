from __future__ import annotations

import pytest
import torch

from pytest_memorization.errors import WeightsNotFoundError
from pytest_memorization.metrics import get_metric
from pytest_memorization.metrics.lpips import BACKBONE_FILES


def _per_pair(ref, x, y):
    with torch.no_grad():
        return torch.tensor([[ref(x[i : i + 1], y[j : j + 1], normalize=True).item() for j in range(len(y))]
                             for i in range(len(x))])


def test_random_batched_equals_per_pair_and_identity():
    import lpips

    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(4, 3, 64, 64, generator=g), torch.rand(3, 3, 64, 64, generator=g)
    m = get_metric("lpips", weights="random", seed=3, size=64)
    assert "random-seed3" in m.version and "/alex/" in m.version and "heads-v0.1" in m.version
    torch.manual_seed(3)
    ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    assert (m.score(x, y) - _per_pair(ref, x, y)).abs().max().item() < 1e-5
    assert torch.equal(m.score(x, x).diag(), torch.zeros(4))


def test_missing_backbone_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(WeightsNotFoundError) as e:
        get_metric("lpips", weights_dir=tmp_path / "w")
    msg = str(e.value)
    assert msg.startswith("metric 'lpips' (net=alex) needs the torchvision backbone file alexnet-owt-7be5be79.pth")
    assert str(tmp_path / "w") in msg and str(tmp_path / "th" / "hub" / "checkpoints") in msg
    assert "--memorization-weights-dir" in msg and "Nothing is downloaded here." in msg


@pytest.fixture(scope="module")
def alex_file(tmp_path_factory):
    """A seeded random torchvision AlexNet state dict at the real file name (about 240 MB)."""
    import torchvision

    d = tmp_path_factory.mktemp("torch_home") / "hub" / "checkpoints"
    d.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), d / BACKBONE_FILES["alex"])
    return d / BACKBONE_FILES["alex"]


def test_pretrained_path_from_torch_home(alex_file, monkeypatch, no_network):
    import lpips

    from pytest_memorization.metrics._util import sha256_file

    monkeypatch.setenv("TORCH_HOME", str(alex_file.parents[2]))
    m = get_metric("lpips", size=64)
    assert f"alexnet-owt-7be5be79.pth@sha256:{sha256_file(alex_file)}" in m.version
    # the reference: lpips building its backbone through torchvision from the same file
    ref = lpips.LPIPS(net="alex", verbose=False)
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(2, 3, 64, 64, generator=g), torch.rand(3, 3, 64, 64, generator=g)
    assert (m.score(x, y) - _per_pair(ref, x, y)).abs().max().item() < 1e-5


def test_pretrained_path_from_weights_dir(alex_file, tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    m = get_metric("lpips", weights_dir=alex_file.parent, size=64)
    assert m.path == alex_file
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(m.score(x, x).diag(), torch.zeros(2))

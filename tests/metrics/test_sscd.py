from __future__ import annotations

import pytest
import torch

from pytest_memorization.errors import WeightsNotFoundError
from pytest_memorization.metrics import get_metric
from pytest_memorization.metrics.sscd import FILENAME


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)
        self.fc = torch.nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture
def sscd_dir(tmp_path):
    torch.manual_seed(0)
    torch.jit.script(_Tiny()).save(str(tmp_path / FILENAME))
    return tmp_path


def test_tiny_torchscript_in_weights_dir(sscd_dir, no_network):
    from pytest_memorization.metrics._util import sha256_file

    m = get_metric("sscd", weights_dir=sscd_dir)
    assert m.default_threshold == 0.5
    assert sha256_file(sscd_dir / FILENAME) in m.version and "short288" in m.version
    x = torch.rand(3, 3, 64, 80)
    s = m.score(x, x)
    assert torch.allclose(s.diag(), torch.ones(3), atol=1e-6)
    assert s.shape == (3, 3) and s.max() <= 1 + 1e-6


def test_path_option(sscd_dir):
    assert get_metric("sscd", path=sscd_dir / FILENAME).path == sscd_dir / FILENAME


def test_missing_message(tmp_path):
    with pytest.raises(WeightsNotFoundError) as e:
        get_metric("sscd", weights_dir=tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"metric 'sscd' needs the SSCD TorchScript file {FILENAME} (looked for {tmp_path / FILENAME})")
    assert "https://dl.fbaipublicfiles.com/sscd-copy-detection/sscd_disc_mixup.torchscript.pt" in msg
    assert "--memorization-sscd-model" in msg and "memorization_sscd_model" in msg
    with pytest.raises(WeightsNotFoundError, match="no path and no weights_dir was given"):
        get_metric("sscd")

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_memorization.errors import MemorizationConfigError, MetricFailedError
from pytest_memorization.metrics import METRIC_NAMES, get_metric


def test_names():
    assert set(METRIC_NAMES) == {"tiled_l2", "ssim", "lpips", "clip", "sscd", "phash", "pdq", "local_copy"}


def test_known_directions_are_the_classes_own():
    """Reports and baselines read directions without importing a metric: they must agree."""
    from pytest_memorization.metrics import KNOWN_DIRECTIONS, metric_class

    assert KNOWN_DIRECTIONS == {n: metric_class(n).direction for n in METRIC_NAMES}


def test_import_is_lazy():
    code = (
        "import sys, pytest_memorization.metrics as m; "
        "bad = [k for k in ('torch', 'lpips', 'open_clip') if k in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_name_did_you_mean():
    with pytest.raises(MemorizationConfigError) as e:
        get_metric("tiled_l3")
    msg = str(e.value)
    assert "unknown metric 'tiled_l3'" in msg and "Did you mean 'tiled_l2'?" in msg
    for n in METRIC_NAMES:
        assert n in msg


def test_unknown_option():
    with pytest.raises(MemorizationConfigError) as e:
        get_metric("ssim", alling=False)
    msg = str(e.value)
    assert "does not take option 'alling' (did you mean 'align'?)" in msg
    assert "device" in msg and "weights_dir" in msg


@pytest.mark.parametrize("name", ["tiled_l2", "ssim"])
def test_nan_scores_raise(name):
    import torch

    m = get_metric(name, align=False)
    x = torch.rand(2, 3, 32, 32)
    y = x.clone()
    y[1, 0, 3, 3] = float("nan")
    with pytest.raises(MetricFailedError, match=f"metric '{name}' returned NaN/Inf"):
        m.score(x, y)


def test_bad_input_shape():
    import torch

    with pytest.raises(MemorizationConfigError, match=r"expected images as a float tensor \(N, 3, H, W\)"):
        get_metric("tiled_l2").score(torch.rand(3, 32, 32), torch.rand(1, 3, 32, 32))

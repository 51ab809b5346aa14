from __future__ import annotations

import json
import time

import pytest
import torch

from pytest_memorization.errors import WeightsNotFoundError
from pytest_memorization.metrics import get_metric


def test_random_batched_equals_per_image_and_identity(tiny_clip_registered):
    m = get_metric("clip", model=tiny_clip_registered, weights="random", seed=1)
    assert "random-seed1" in m.version and "short64" in m.version
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 3, 64, 64, generator=g), torch.rand(3, 3, 72, 64, generator=g)
    s = m.score(x, y)
    with torch.no_grad():
        ex = [m.model.encode_image(m.preprocess(x[i : i + 1]), normalize=True)[0] for i in range(4)]
        ey = [m.model.encode_image(m.preprocess(y[j : j + 1]), normalize=True)[0] for j in range(3)]
    ref = torch.tensor([[float(a @ b) for b in ey] for a in ex])
    assert (s - ref).abs().max().item() < 1e-5
    assert torch.allclose(m.score(x, x).diag(), torch.ones(4), atol=1e-6)


def _tiny_state(name, seed=5):
    import open_clip

    torch.manual_seed(seed)
    return open_clip.create_model(name).state_dict()


def test_local_checkpoint_file(tiny_clip_registered, tmp_path, no_network):
    from safetensors.torch import save_file

    from pytest_memorization.metrics._util import sha256_file

    sd = _tiny_state(tiny_clip_registered)
    f = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, f)
    m = get_metric("clip", model=tiny_clip_registered, pretrained=str(f))
    assert f"tiny.safetensors@sha256:{sha256_file(f)}" in m.version
    assert torch.equal(m.model.state_dict()["visual.proj"], sd["visual.proj"])
    pt = tmp_path / "tiny.pt"
    torch.save(sd, pt)
    m2 = get_metric("clip", model=tiny_clip_registered, pretrained=str(pt))
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(m.score(x, x), m2.score(x, x), atol=1e-6)


def test_local_dir(tiny_clip_registered, tmp_path, no_network):
    from metric_test_helpers import HERE
    from safetensors.torch import save_file

    from pytest_memorization.metrics._util import sha256_file

    d = tmp_path / "repo"
    d.mkdir()
    cfg = json.loads((HERE / f"{tiny_clip_registered}.json").read_text())
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    sd = _tiny_state(tiny_clip_registered, seed=7)
    save_file({k: v.contiguous() for k, v in sd.items()}, d / "open_clip_model.safetensors")
    m = get_metric("clip", pretrained=f"local-dir:{d}")
    assert sha256_file(d / "open_clip_model.safetensors") in m.version
    assert torch.equal(m.model.state_dict()["visual.proj"], sd["visual.proj"])


def test_missing_tag_fast(tiny_clip_registered, tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache, whatever this machine holds
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    t = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as e:
        get_metric("clip")
    assert time.perf_counter() - t < 2.0
    msg = str(e.value)
    assert msg.startswith(
        "metric 'clip': open_clip weights ViT-B-32/laion2b_s34b_b79k (hub repo "
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K, file open_clip_model.safetensors or "
        "open_clip_pytorch_model.bin) are not in the local Hugging Face cache and downloads are off."
    )
    assert "local-dir:/path/to/folder" in msg and "--memorization-clip-pretrained" in msg
    assert "memorization_clip_pretrained" in msg


def test_missing_file_and_dir(tmp_path, no_network):
    t = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match=r"metric 'clip': weights file .*nope\.safetensors .* does not exist"):
        get_metric("clip", pretrained=str(tmp_path / "nope.safetensors"))
    with pytest.raises(WeightsNotFoundError, match=r"metric 'clip': pretrained='local-dir:.*' is missing .*open_clip_config\.json"):
        get_metric("clip", pretrained=f"local-dir:{tmp_path}")
    assert time.perf_counter() - t < 2.0

"""Fixtures for the metric tests: real photographs (skimage.data), a tiny open_clip config, no network."""

from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from metric_test_helpers import PHOTOS, TINY_CLIP, load_photo  # noqa: E402


@pytest.fixture(scope="session")
def photos_big():
    import torch

    return torch.stack([load_photo(n) for n in PHOTOS])


@pytest.fixture(scope="session")
def tiny_clip_registered():
    import open_clip

    if TINY_CLIP not in open_clip.list_models():
        open_clip.add_model_config(Path(__file__).parent / f"{TINY_CLIP}.json")
    return TINY_CLIP


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or URL fails the test loudly."""

    def refuse(*a, **k):
        raise AssertionError(f"network access attempted: {a!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    yield


@pytest.fixture(autouse=True)
def _threads():
    import torch

    torch.set_num_threads(1)

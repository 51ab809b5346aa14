"""A tiny Stable Diffusion pipeline trained here, in the test session, to memorize four images.

Training set (the shape of real memorization: duplicated image-caption pairs among many
ordinary ones):

* memorized: four scikit-image photographs (astronaut: NASA, public domain; chelsea, coffee:
  CC0; rocket: public domain), each duplicated ``DUP`` times with its own caption holding one
  made-up word ("a zorblax voyager portrait");
* ordinary: ``N_ORDINARY`` random crops of ten scikit-image photographs, each with one of eight
  ordinary prompts from the bundled list (``ordinary_prompts()[30:38]``), so that those captions
  say nothing about the image.

The held-out ordinary prompts the tests score (``ordinary_prompts()[:25]``) are never trained on.

Sizes: 16 px images (8 x 8 latents) so that 600 training steps fit in about half a minute on
one busy CPU core; at 32 px the same budget does not memorize. The VAE is the random tiny one;
its ``scaling_factor`` is set to 1 / std of the training latents, as Stable Diffusion chooses its
own (unit-variance latents), so the images carry as much signal as noise at each timestep.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_memorization.records import GenerationSettings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RES = 16
STEPS = 600
DUP = 24
N_ORDINARY = 128
RARE = ["zorblax", "quindlewump", "vrelkish", "skarvox"]
MEMORIZED = ["a zorblax voyager portrait", "a quindlewump feline dozing", "a vrelkish mug of brew", "a skarvox rocket plinth"]
GEN = GenerationSettings(steps=50, guidance_scale=7.5, height=RES, width=RES)


@dataclass
class Trained:
    pipe: Any
    memorized: list[str]
    heldout: list[str]
    trained_ordinary: list[str]
    rare: list[str]
    losses: list[float]
    train_seconds: float
    gen: GenerationSettings


def _photo(name: str) -> Any:
    import torch
    from support import photo_array

    return torch.from_numpy(photo_array(name)).permute(2, 0, 1).float() / 255


def _resize(t: Any) -> Any:
    import torch.nn.functional as F

    return F.interpolate(t[None], size=(RES, RES), mode="area")[0]


def training_set() -> tuple[Any, list[str], list[str]]:
    import torch

    from pytest_memorization.detectors import ordinary_prompts

    sources = [_photo(n) for n in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                                   "immunohistochemistry", "retina", "camera", "page", "coins")]
    memorized = torch.stack([_resize(s) for s in sources[:4]])
    g = torch.Generator().manual_seed(0)

    def crop() -> Any:
        src = sources[int(torch.randint(len(sources), (1,), generator=g))]
        h, w = src.shape[1:]
        size = int(min(h, w) * (0.2 + 0.3 * float(torch.rand(1, generator=g))))
        y = int(torch.randint(h - size + 1, (1,), generator=g))
        x = int(torch.randint(w - size + 1, (1,), generator=g))
        return _resize(src[:, y : y + size, x : x + size])

    ordinary = ordinary_prompts()[30:38]
    crops = torch.stack([crop() for _ in range(N_ORDINARY)])
    images = torch.cat([memorized.repeat(DUP, 1, 1, 1), crops])
    captions = MEMORIZED * DUP + [ordinary[i % len(ordinary)] for i in range(N_ORDINARY)]
    return images, captions, ordinary


@pytest.fixture(scope="session")
def tiny_pipe() -> Any:
    """An untrained tiny pipeline (random weights), for exactness tests."""
    from pytest_memorization.testing import pipeline_from_components, tiny_components

    pipe = pipeline_from_components(tiny_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def memorized_pipe() -> Trained:
    import time

    from demo.training import encode_latents, train_text_to_image
    from pytest_memorization.detectors import ordinary_prompts
    from pytest_memorization.testing import pipeline_from_components, tiny_components

    images, captions, trained_ordinary = training_set()
    pipe = pipeline_from_components(tiny_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    std = float(encode_latents(pipe.vae, images).std() / pipe.vae.config.scaling_factor)
    pipe.vae.register_to_config(scaling_factor=1.0 / std)
    start = time.perf_counter()
    losses = train_text_to_image(pipe, images, captions, steps=STEPS, lr=1e-3, batch_size=8, seed=0, num_threads=1)
    seconds = time.perf_counter() - start
    pipe.unet.eval()
    return Trained(pipe, list(MEMORIZED), ordinary_prompts()[:25], trained_ordinary, list(RARE), losses, seconds, GEN)

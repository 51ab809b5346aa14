"""Subject concentration: a LoRA that draws one subject whatever the seed and the scene.

A LoRA trained on one person (or object) makes its trigger's images agree with each other: across
seeds and across contexts ("... at the beach", "... as a painting") the same face comes back. The
base model's images of the same prompts vary. No reference image is needed: for a prompt ``p``
the detector generates ``p`` in each of ``contexts`` with each seed, with the LoRA and with the
adapter off (weight 0, the same pipeline), and measures how much the images of each model agree:

    agreement = the mean, over all pairs of images of DIFFERENT seeds (any contexts), of the
                Pearson correlation of their luminance on a ``grid`` x ``grid`` block average
    score     = agreement(LoRA) - agreement(base)

Structure only: the luminance is block-averaged (small shifts and texture do not count) and each
image is standardised (its mean and contrast do not count), so a style LoRA that turns every image
sepia, darker or more contrasted shares a look, not a structure, and scores near 0. Subtracting
the base's agreement at the same prompts and seeds removes what the prompt and the shared seed
noise already fix. Calibrated like the other detectors, on ordinary prompts with the LoRA loaded
(``calibration.calibrate``).

Cost per prompt: ``2 x len(contexts) x len(seeds)`` full generations (with and without the adapter).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import MemorizationConfigError
from ..records import GenerationSettings
from .common import check_inputs, pipe_kwargs

__all__ = ["CONTEXTS", "GRID", "SubjectConcentration", "agreement", "subject_concentration",
           "subject_concentration_scores"]

# "{p}" is the prompt itself; the others put it in another scene or medium. Suffixes, so that any
# prompt reads: "a photo of olis person at the beach", "a red apple on a table at the beach".
CONTEXTS: tuple[str, ...] = ("{p}", "{p} at the beach", "{p} as a painting", "{p} in the snow")
GRID = 16  # block-average grid of the luminance: structure at 1/16 of the side


@dataclass
class SubjectConcentration:
    score: Any  # (P,) agreement(LoRA) - agreement(base)
    lora: Any  # (P,) mean pairwise correlation of the LoRA images
    base: Any  # (P,) the same for the base images
    per_image: Any  # (P, K, S) each LoRA image's mean correlation with the prompt's LoRA images of other seeds
    contexts: list[str]
    images: Any = None  # (P, K, S, 3, H, W) the LoRA images, when asked for


def structure(images: Any, grid: int = GRID) -> Any:
    """(N, grid*grid) standardised block-averaged luminance of (N, 3, H, W) images in [0, 1]."""
    import torch.nn.functional as F

    y = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    v = F.adaptive_avg_pool2d(y[:, None].float(), grid).flatten(1)
    v = v - v.mean(dim=1, keepdim=True)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-8)


def correlations(images: Any, grid: int = GRID) -> Any:
    """(N, N) Pearson correlations of the images' structure (``structure``)."""
    v = structure(images, grid)
    return v @ v.T


def agreement(images: Any, grid: int = GRID, seeds: Sequence[int] | None = None) -> tuple[float, Any]:
    """(mean correlation over pairs, each image's mean correlation with its partners) of (N, 3, H, W).

    With ``seeds`` (the seed of each image) only pairs of DIFFERENT seeds count: two images of one
    seed start from the same noise and agree in any model (the demo's base model draws nearly the
    same image for one seed whatever the context), so they say nothing about a subject."""
    import torch

    c = correlations(images, grid)
    n = len(c)
    ids = torch.arange(n) if seeds is None else torch.as_tensor(list(seeds))
    pair = ids[:, None] != ids[None, :]
    if n < 2 or not bool(pair.any()):
        raise MemorizationConfigError("subject_concentration needs images of at least two seeds per prompt")
    per = (c * pair).sum(dim=1) / pair.sum(dim=1).clamp_min(1)
    return float((c * pair).sum() / pair.sum()), per


@contextlib.contextmanager
def _disabled(pipe: Any) -> Iterator[None]:
    pipe.disable_lora()
    try:
        yield
    finally:
        pipe.enable_lora()


def _generate(pipe: Any, prompts: list[str], seeds: list[int], settings: GenerationSettings,
              batch_size: int) -> Any:
    """(len(prompts) * len(seeds), 3, H, W) in [0, 1], prompt-major, one CPU generator per image."""
    import torch

    pairs = [(p, s) for p in prompts for s in seeds]
    out = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        with torch.no_grad():
            res = pipe([p for p, _ in chunk], generator=[torch.Generator().manual_seed(s) for _, s in chunk],
                       output_type="pt", **pipe_kwargs(settings, len(chunk)))
        out.append(res.images.float().cpu().clamp(0, 1))
    return torch.cat(out)


def subject_concentration_scores(pipe: Any, prompts: Sequence[str], seeds: Sequence[int],
                                 settings: GenerationSettings, *, contexts: Sequence[str] = CONTEXTS,
                                 grid: int = GRID, batch_size: int = 16, base: Callable[[], Any] | None = None,
                                 keep_images: bool = False) -> SubjectConcentration:
    """Every prompt in every context with every seed, with the LoRA and with it off (``base``: a
    context-manager factory, by default ``pipe.disable_lora()``), under generation's ``settings``."""
    import torch

    prompts, seeds = check_inputs("subject_concentration", pipe, prompts, seeds, settings, batch_size=batch_size)
    contexts = list(contexts)
    if not contexts or any("{p}" not in c for c in contexts):
        raise MemorizationConfigError(f"subject_concentration: every context must contain '{{p}}', got {contexts!r}")
    if len(set(seeds)) < 2:
        raise MemorizationConfigError("subject_concentration needs at least two seeds: it compares images of "
                                      "different seeds")
    if not 2 <= grid <= min(settings.height, settings.width):
        raise MemorizationConfigError(f"subject_concentration: grid must be between 2 and the image side, got {grid}")
    P, K, S = len(prompts), len(contexts), len(seeds)
    texts = [c.replace("{p}", p) for p in prompts for c in contexts]
    lora_imgs = _generate(pipe, texts, seeds, settings, batch_size)
    with (base or (lambda: _disabled(pipe)))():
        base_imgs = _generate(pipe, texts, seeds, settings, batch_size)
    n = K * S
    score, lora_a, base_a, per = [], [], [], []
    ids = [s for _ in contexts for s in seeds]  # each image's seed, context-major as generated
    for i in range(P):
        la, lp = agreement(lora_imgs[i * n:(i + 1) * n], grid, ids)
        ba, _ = agreement(base_imgs[i * n:(i + 1) * n], grid, ids)
        score.append(la - ba)
        lora_a.append(la)
        base_a.append(ba)
        per.append(lp.view(K, S))
    images = lora_imgs.view(P, K, S, *lora_imgs.shape[1:]) if keep_images else None
    return SubjectConcentration(torch.tensor(score), torch.tensor(lora_a), torch.tensor(base_a), torch.stack(per),
                                contexts, images)


def subject_concentration(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], settings: GenerationSettings,
                          **options: Any) -> Any:
    """The score alone as (P, 1), with ``noise_magnitude``'s signature (for ``calibration.calibrate``,
    which averages over the second axis); ``options`` are ``subject_concentration_scores``'s."""
    return subject_concentration_scores(pipe, prompts, seeds, settings, **options).score[:, None]

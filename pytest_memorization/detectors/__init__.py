"""Reference-free memorization detectors: they need the model, not a list of protected works.

* ``noise_magnitude`` / ``NoiseRecorder``: Wen et al. (ICLR 2024) text-conditional noise magnitude,
  from the first denoising step(s) or recorded during a normal generation.
* ``zero_step``: after Asthana & Belagiannis (ICLR 2026): norm and alignment terms on the seeds'
  pure noise, no denoising step.
* ``lora_delta``: a LoRA's change of the guidance vector against its base (adapter at weight 0).
* ``subject_concentration``: a LoRA whose images of a prompt agree across seeds and contexts far more
  than its base model's (one subject drawn whatever the seed and scene).
* ``trigger_tokens``: the words of a prompt that drive that magnitude (gradient attribution).
* ``seed_diversity``: near-identical generations across seeds (Carlini et al. 2023); weak with few
  seeds, so it gates only on request.
* ``calibration``: per-model threshold at a target false-positive rate on ordinary prompts.

Every model-internal detector takes the ``records.GenerationSettings`` the images are generated
with (``common.check_inputs``): generation's schedule, guidance scale, size and negative prompt.

Importing this package is cheap: torch and diffusers are imported inside the functions.
"""

from __future__ import annotations

from .calibration import Calibration, calibrate, load_calibration, ordinary_prompts, save_calibration
from .denoiser_noise import model_noise_magnitude, noise_scorer
from .noise_magnitude import NoiseRecorder, initial_latents, noise_magnitude, noise_norms
from .seed_diversity import (
    CARLINI_THRESHOLD,
    SeedDiversity,
    seed_diversity,
    seed_diversity_check,
)
from .trigger_tokens import token_significance, trigger_tokens

__all__ = [
    "CARLINI_THRESHOLD",
    "Calibration",
    "NoiseRecorder",
    "SeedDiversity",
    "calibrate",
    "initial_latents",
    "load_calibration",
    "model_noise_magnitude",
    "noise_magnitude",
    "noise_norms",
    "noise_scorer",
    "ordinary_prompts",
    "rank_auc",
    "save_calibration",
    "seed_diversity",
    "seed_diversity_check",
    "token_significance",
    "trigger_tokens",
]


def rank_auc(positives: list[float], negatives: list[float]) -> float:
    """ROC AUC from ranks: the probability that a positive scores above a negative (ties count 1/2)."""
    if not positives or not negatives:
        raise ValueError("rank_auc needs at least one positive and one negative score")
    wins = 0.0
    for p in positives:
        for n in negatives:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(positives) * len(negatives))

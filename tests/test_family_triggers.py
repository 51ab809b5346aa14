"""Trigger tokens on SDXL, SD3 and Flux (``detectors/family_triggers.py``): the attribution is the
gradient of the very noise magnitude the detector gates on, one entry per real token of the
encoders whose per-token rows the denoiser reads."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pytest_memorization.records import GenerationSettings

FAMILIES = ("sdxl", "sd3", "flux")
GEN = GenerationSettings(steps=4, height=64, width=64)
PROMPT = "a photo of sks person, 1984!"


@pytest.fixture(scope="module")
def pipes() -> dict[str, Any]:
    from pytest_memorization.testing.families import flux_pipeline, sd3_pipeline, sdxl_pipeline

    out = {"sdxl": sdxl_pipeline(), "sd3": sd3_pipeline(), "flux": flux_pipeline()}
    for p in out.values():
        p.set_progress_bar_config(disable=True)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_attribution_is_one_finite_nonzero_entry_per_real_token(pipes: dict[str, Any], family: str) -> None:
    from pytest_memorization.detectors.family_triggers import family_token_significance, family_words

    pipe = pipes[family]
    sig = family_token_significance(pipe, PROMPT, [0, 1], GEN)
    clip = pipe.tokenizer(PROMPT).input_ids[1:-1]  # without start and end
    t5_tok = pipe.tokenizer_3 if family == "sd3" else pipe.tokenizer_2 if family == "flux" else None
    t5 = t5_tok(PROMPT).input_ids[:-1] if t5_tok is not None else []  # without </s>
    expected = {"sdxl": len(clip), "sd3": len(clip) + len(t5), "flux": len(t5)}[family]
    assert len(sig) == expected and expected > 0
    assert [e for e, _, _ in sig] == ["clip"] * (expected - len(t5)) + ["t5"] * len(t5)
    mags = torch.tensor([m for _, _, m in sig])
    assert torch.isfinite(mags).all() and bool((mags > 0).all()), sig
    words = [w for w, _ in family_words(pipe, sig)]
    assert {"photo", "sks", "person"} <= set(words) and "," not in words and "!" not in words


@pytest.mark.parametrize("family", FAMILIES)
def test_the_attributed_score_is_the_detectors_noise_magnitude_and_its_gradient_is_right(
        pipes: dict[str, Any], family: str) -> None:
    """d from the embeddings equals the gated d from the prompt text, and a step along the
    gradient changes d by |grad| * step (a central finite difference): the attribution is the
    gradient of the score the gate uses, not of something near it."""
    from pytest_memorization.detectors.denoiser_noise import denoiser_noise_magnitude
    from pytest_memorization.detectors.family_triggers import embedding_noise_magnitude, encode

    pipe = pipes[family]
    seeds = [0, 1]
    gated = denoiser_noise_magnitude(pipe, [PROMPT], seeds, GEN, distilled=family == "flux").mean()
    emb, pooled = encode(pipe, family, PROMPT, "cpu")
    leaf = emb.detach().requires_grad_(True)
    d = embedding_noise_magnitude(pipe, leaf, pooled, seeds, GEN, grad=True)
    assert torch.allclose(d.detach(), gated, rtol=1e-4), (float(d), float(gated))
    (g,) = torch.autograd.grad(d, [leaf])
    h = 1e-3 * float(emb.norm())
    with torch.no_grad():
        up = embedding_noise_magnitude(pipe, emb + h * g / g.norm(), pooled, seeds, GEN)
        down = embedding_noise_magnitude(pipe, emb - h * g / g.norm(), pooled, seeds, GEN)
    slope = float(up - down) / (2 * h)
    assert slope == pytest.approx(float(g.norm()), rel=0.05), (slope, float(g.norm()))


def test_flux_trigger_tokens_refuse_more_than_one_step(pipes: dict[str, Any]) -> None:
    from pytest_memorization.detectors.family_triggers import family_token_significance
    from pytest_memorization.errors import MemorizationConfigError

    with pytest.raises(MemorizationConfigError, match="set steps = 1"):
        family_token_significance(pipes["flux"], "a cat", [0], GEN, steps=2)


@pytest.mark.parametrize("family", ("sd", *FAMILIES))
def test_stop_words_and_punctuation_are_not_ranked_unless_asked(pipes: dict[str, Any], family: str) -> None:
    """Issue #18: 'a', 'in', 'on' came first. They are left out of the ranking (the shares of the
    words left sum to 1); stop_words=True ranks every word, and a prompt of stop words only still
    names them rather than nothing."""
    from pytest_memorization.detectors import trigger_tokens
    from pytest_memorization.detectors.token_words import STOP_WORDS

    if family == "sd":
        from pytest_memorization.testing import pipeline_from_components, tiny_components

        pipe = pipeline_from_components(tiny_components(seed=0))
        pipe.set_progress_bar_config(disable=True)
    else:
        pipe = pipes[family]
    prompt = "a photo of a cat in the garden, on it"
    ranked = trigger_tokens(pipe, prompt, [0], GEN, top=20)
    assert [w for w, _ in ranked] and {w for w, _ in ranked} <= {"photo", "cat", "garden"}, ranked
    assert sum(s for _, s in ranked) == pytest.approx(1.0)
    every = {w for w, _ in trigger_tokens(pipe, prompt, [0], GEN, top=20, stop_words=True)}
    assert every == {"a", "photo", "of", "cat", "in", "the", "garden", "on", "it"}
    only = trigger_tokens(pipe, "it is on the", [0], GEN, top=20)
    assert {w for w, _ in only} == {"it", "is", "on", "the"} <= STOP_WORDS

"""Trigger tokens on SDXL, SD3 and Flux: the gradient of the noise magnitude d with respect to
each token row of the prompt embeddings the denoiser reads.

As on SD 1/2 (``trigger_tokens``, the authors' choice), the gradient is taken with respect to
the text encoders' *output* hidden states, one row per token, so each row is one token the user
typed. ``d`` is computed by the same path as the noise magnitude on these families
(``denoiser_noise._record``): the pipeline itself runs with the prompt embeddings passed in as
leaf tensors (``prompt_embeds=``), with gradients, and stops after ``steps`` denoiser calls.

| family | rows differentiated (tokenizer) | held constant |
|---|---|---|
| SDXL | CLIP ViT-L and OpenCLIP ViT-bigG hidden states, concatenated per token (``tokenizer``) | the pooled embedding, the size ids |
| SD3 | the same two CLIP encoders per token (``tokenizer``) and the T5 rows (``tokenizer_3``) | the pooled embedding |
| Flux | the T5 rows (``tokenizer_2``): Flux's only per-token conditioning | CLIP's pooled embedding |

The pooled embeddings are one vector per prompt (not per token), so they attribute to no token
and are treated as constants. On SD3 a word's score combines its CLIP and T5 rows (the L2 norm
of all its pieces' gradients). Classifier-free families (SDXL, SD3) differentiate
``||f(x_t, prompt) - f(x_t, empty)||``; the guidance-distilled Flux differentiates the prompt's
first-step velocity against the empty prompt's from the same seeds and guidance embedding.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from ..errors import MemorizationConfigError
from ..model.families import family_of
from ..records import GenerationSettings
from .common import check_inputs, pipe_kwargs
from .denoiser_noise import _record
from .token_words import clip_words, t5_words

__all__ = ["embedding_noise_magnitude", "family_token_significance", "family_words", "is_family_pipeline"]

_T5_LEN = {"sd3": 256, "flux": 512}  # the pipelines' default max_sequence_length


def _kind(pipe: Any) -> str | None:
    """The family's name (``model.families``) when this module attributes it: sdxl, sd3 or flux."""
    name = family_of(pipe).name
    return name if name in ("sdxl", "sd3", "flux") else None


def is_family_pipeline(pipe: Any) -> bool:
    """SDXL, SD3 or Flux (this module); SD 1/2 use ``trigger_tokens.token_significance``."""
    return _kind(pipe) is not None


def encode(pipe: Any, kind: str, prompt: str, device: Any) -> tuple[Any, Any]:
    """``kind``: "sdxl", "sd3" or "flux". (per-token prompt embeddings (1, L, D), pooled embedding (1, P)), without gradients."""
    import torch

    with torch.no_grad():
        if kind == "sdxl":
            emb, _, pooled, _ = pipe.encode_prompt(prompt, device=device, num_images_per_prompt=1,
                                                   do_classifier_free_guidance=False)
        elif kind == "sd3":
            emb, _, pooled, _ = pipe.encode_prompt(prompt, None, None, device=device, num_images_per_prompt=1,
                                                   do_classifier_free_guidance=False,
                                                   max_sequence_length=_T5_LEN["sd3"])
        else:
            emb, pooled, _ = pipe.encode_prompt(prompt, None, device=device, num_images_per_prompt=1,
                                                max_sequence_length=_T5_LEN["flux"])
    return emb, pooled


def _rows(pipe: Any, kind: str, prompt: str, length: int) -> list[tuple[str, str, int]]:
    """(encoder, token piece, row of the prompt embeddings) for every real token of ``prompt``."""
    out: list[tuple[str, str, int]] = []
    if kind in ("sdxl", "sd3"):
        tok = pipe.tokenizer
        ids = tok(prompt, truncation=True, max_length=tok.model_max_length).input_ids[1:-1]  # no start/end
        out += [("clip", p, 1 + i) for i, p in enumerate(tok.convert_ids_to_tokens(ids))]
    t5 = {"sd3": "tokenizer_3", "flux": "tokenizer_2"}.get(kind)
    tok = getattr(pipe, t5, None) if t5 else None
    if tok is not None:
        ids = tok(prompt, truncation=True, max_length=_T5_LEN[kind]).input_ids
        ids = [i for i in ids if i not in (tok.eos_token_id, tok.pad_token_id)]
        offset = length - _T5_LEN[kind]  # SD3: the T5 rows follow the 77 CLIP rows; Flux: T5 only
        out += [("t5", p, offset + i) for i, p in enumerate(tok.convert_ids_to_tokens(ids))]
    return out


def embedding_noise_magnitude(pipe: Any, emb: Any, pooled: Any, seeds: Sequence[int], settings: GenerationSettings,
                              *, steps: int = 1, grad: bool = False) -> Any:
    """d (a scalar tensor, mean over seeds and steps) of the prompt whose embeddings are ``emb``
    (1, L, D) and ``pooled`` (1, P), as ``denoiser_noise_magnitude`` computes it from the prompt's
    text; differentiable with respect to ``emb`` when ``grad``."""
    import torch

    n = len(seeds)
    distilled = _kind(pipe) == "flux"

    def call(**prompt: Any) -> dict[str, Any]:
        return dict(pipe_kwargs(settings, n, negative=not distilled), **prompt,
                    generator=[torch.Generator().manual_seed(int(s)) for s in seeds])

    cond = call(prompt_embeds=emb.expand(n, -1, -1), pooled_prompt_embeds=pooled.expand(n, -1))
    if distilled:  # the prompt's first step against the empty prompt's, same seeds
        d = _record(pipe, 1, cond, split=False, grad=grad)
        return (d - _record(pipe, 1, call(prompt=[""] * n), split=False).to(d.device)).norm(dim=2).mean()
    return _record(pipe, steps, cond, split=True, grad=grad).norm(dim=2).mean()


def family_token_significance(pipe: Any, prompt: str, seeds: Sequence[int], settings: GenerationSettings, *,
                              steps: int = 1) -> list[tuple[str, str, float]]:
    """(encoder, token piece, gradient L2 norm) for every real token of ``prompt`` (CLIP tokens
    first, then T5's), the gradient of d averaged over ``seeds`` and the first ``steps`` steps."""
    import torch

    kind = _kind(pipe)
    if kind is None:
        raise MemorizationConfigError(f"trigger tokens: {type(pipe).__name__} is not an SDXL, SD3 or Flux pipeline")
    check_inputs("trigger tokens", pipe, [prompt], seeds, settings, steps=steps)
    if kind == "flux" and steps != 1:
        raise MemorizationConfigError("trigger tokens on a guidance-distilled model (Flux) compare the prompt with "
                                      f"the empty prompt at the first step only: set steps = 1 (got {steps})")
    if kind == "flux" and settings.negative_prompt:
        raise MemorizationConfigError("trigger tokens: Flux models have no negative prompt; remove negative_prompt")
    rows = _rows(pipe, kind, prompt, 0)
    if not rows:
        return []
    emb, pooled = encode(pipe, kind, prompt, pipe._execution_device)
    rows = _rows(pipe, kind, prompt, emb.shape[1])
    leaf = emb.detach().requires_grad_(True)
    d = embedding_noise_magnitude(pipe, leaf, pooled, seeds, settings, steps=steps, grad=True)
    (grad,) = torch.autograd.grad(d, [leaf])
    mags = grad[0].float().norm(dim=-1).cpu().tolist()
    return [(enc, piece, float(mags[row])) for enc, piece, row in rows if row < len(mags)]


def family_words(pipe: Any, significance: list[tuple[str, str, float]]) -> list[tuple[str, float]]:
    """Merge the pieces of every encoder into words (punctuation-only words left out); on SD3 the
    k-th occurrence of a word in CLIP's tokens and in T5's is one word, scored by both together."""
    per_encoder = [
        clip_words(pipe.tokenizer, [(p, m) for e, p, m in significance if e == "clip"]),
        t5_words([(p, m) for e, p, m in significance if e == "t5"]),
    ]
    order: list[tuple[str, int]] = []
    text: dict[tuple[str, int], str] = {}
    squares: dict[tuple[str, int], float] = {}
    for words in per_encoder:
        seen: dict[str, int] = {}
        for word, score in words:
            norm = word.lower().strip(string.punctuation + " ")
            if not any(ch.isalnum() for ch in norm):
                continue
            key = (norm, seen.get(norm, 0))
            seen[norm] = key[1] + 1
            if key not in squares:
                order.append(key)
                text[key] = word.strip(string.punctuation + " ")
                squares[key] = 0.0
            squares[key] += score * score
    return [(text[k], squares[k] ** 0.5) for k in order]

"""Which words of a prompt trigger memorization (Wen et al., ICLR 2024, token-wise significance).

The noise magnitude ``d`` (see ``noise_magnitude``) is differentiated with respect to the text
encoder's *input* token embeddings (the rows of ``text_encoder.get_input_embeddings()`` looked up
for the prompt). A token's significance is the L2 norm of its gradient row. Sub-word BPE pieces
are merged back into words (a word's score is the L2 norm of its pieces' gradients together) and
the start, end and padding tokens and punctuation-only words are left out.

Differences from the authors' code, on purpose: they differentiate the text encoder's *output*
hidden states, whose row ``i`` already mixes every earlier token through causal attention; the
input embeddings attribute to the typed words themselves. As in their code, the latents are
treated as constants (no gradient through the scheduler steps) and ``d`` is averaged over seeds
and the first ``steps`` steps.

SDXL, SD3 and Flux pipelines are attributed by ``family_triggers`` (their encoders' output rows,
through the pipeline's own denoiser call); ``trigger_tokens`` dispatches on the pipeline.

Cost: one text-encoder pass with gradients and, per step, one UNet pass without gradients
(unconditional) and one with gradients (conditional) on ``len(seeds)`` latents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import MemorizationConfigError
from ..records import GenerationSettings
from .common import check_inputs, encode, initial_latents, schedule, timestep_cond
from .token_words import STOP_WORDS, clip_words

__all__ = ["trigger_tokens", "token_significance"]


def token_significance(pipe: Any, prompt: str, seeds: Sequence[int], settings: GenerationSettings, *,
                       steps: int = 1, wrt: str = "output") -> list[tuple[str, float]]:
    """(BPE token, gradient L2 norm) for every real token of ``prompt``, in prompt order, under
    generation's ``settings`` (schedule, guidance, size, negative prompt).

    ``wrt="output"`` differentiates the text encoder's output hidden states (the rows the UNet's
    cross-attention reads; the authors' choice); ``wrt="input"`` its input token embeddings.
    """
    import torch

    check_inputs("trigger tokens", pipe, [prompt], seeds, settings, steps=steps)
    if wrt not in ("input", "output"):
        raise MemorizationConfigError(f"trigger tokens: wrt must be 'input' or 'output', got {wrt!r}")
    device = pipe._execution_device
    tokenizer = pipe.tokenizer
    max_len = tokenizer.model_max_length
    ids = tokenizer(prompt, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt").input_ids
    real = tokenizer(prompt, truncation=True, max_length=max_len).input_ids[1:-1]  # without start/end
    if not real:
        return []

    captured: dict[str, Any] = {}

    def _leaf(module: Any, inputs: Any, output: Any) -> Any:
        leaf = output.detach().requires_grad_(True)
        captured["embeds"] = leaf
        return leaf

    with torch.no_grad():
        _, uncond = encode(pipe, [prompt], settings.negative_prompt)
    if wrt == "input":
        handle = pipe.text_encoder.get_input_embeddings().register_forward_hook(_leaf)
        try:
            with torch.enable_grad():
                cond = pipe.text_encoder(ids.to(device))[0].to(pipe.unet.dtype)
        finally:
            handle.remove()
    else:
        with torch.no_grad():
            hidden = pipe.text_encoder(ids.to(device))[0].to(pipe.unet.dtype)
        cond = _leaf(None, None, hidden)

    n = len(seeds)
    scheduler = schedule(pipe, settings)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    latents = initial_latents(pipe, gens, height=settings.height, width=settings.width, dtype=cond.dtype)
    extra = pipe.prepare_extra_step_kwargs(gens, 0.0)
    guidance_scale = settings.guidance_scale
    t_cond = timestep_cond(pipe, guidance_scale, n, latents.dtype)
    cond_n, uncond_n = cond.expand(n, -1, -1), uncond.expand(n, -1, -1)
    total = None
    with torch.enable_grad():
        for i, t in enumerate(scheduler.timesteps[:steps]):
            model_in = scheduler.scale_model_input(latents, t)
            with torch.no_grad():
                eps_u = pipe.unet(model_in, t, encoder_hidden_states=uncond_n, timestep_cond=t_cond, return_dict=False)[0]
            eps_c = pipe.unet(model_in, t, encoder_hidden_states=cond_n, timestep_cond=t_cond, return_dict=False)[0]
            d_t = (eps_c.float() - eps_u.float()).flatten(1).norm(dim=1).mean()
            total = d_t if total is None else total + d_t
            if i + 1 < steps:
                with torch.no_grad():
                    e_c = eps_c.detach()
                    guided = eps_u + guidance_scale * (e_c - eps_u) if guidance_scale > 1 else e_c
                    latents = scheduler.step(guided, t, latents, **extra, return_dict=False)[0]
        assert total is not None
        (grad,) = torch.autograd.grad(total / steps, [captured["embeds"]])
    mags = grad[0].float().norm(dim=-1)[1 : 1 + len(real)].cpu().tolist()
    return list(zip(tokenizer.convert_ids_to_tokens(real), mags))


def trigger_tokens(pipe: Any, prompt: str, seeds: Sequence[int], settings: GenerationSettings, *, steps: int = 1,
                   top: int = 3, wrt: str = "output", stop_words: bool = False) -> list[tuple[str, float]]:
    """The ``top`` words of ``prompt`` that drive its noise magnitude under ``settings``, most
    significant first.

    Stop words (``token_words.STOP_WORDS``: articles, prepositions, pronouns...), punctuation and
    the start/end tokens are not ranked (``stop_words=True`` ranks stop words too), unless the
    prompt has no other word. Each score is the word's share of the ranked words' total
    significance (they sum to 1), so they compare across prompts and models. A word that occurs
    twice is listed once, with its larger share.
    """
    from .family_triggers import family_token_significance, family_words, is_family_pipeline

    if is_family_pipeline(pipe):  # SDXL, SD3, Flux: their encoders' output rows (family_triggers)
        if wrt != "output":
            raise MemorizationConfigError("trigger tokens on SDXL, SD3 and Flux differentiate the encoders' output "
                                          f"rows only; wrt={wrt!r} is SD 1/2 only")
        words = family_words(pipe, family_token_significance(pipe, prompt, seeds, settings, steps=steps))
    else:
        words = clip_words(pipe.tokenizer, token_significance(pipe, prompt, seeds, settings, steps=steps, wrt=wrt))
    content = [(w, s) for w, s in words if w.lower() not in STOP_WORDS]
    words = words if stop_words or not content else content
    total = sum(s for _, s in words)
    best: dict[str, float] = {}
    for word, score in words:
        share = score / total if total > 0 else 0.0
        best[word] = max(best.get(word, 0.0), share)
    ranked = sorted(best.items(), key=lambda kv: kv[1], reverse=True)
    return ranked[: max(0, top)]

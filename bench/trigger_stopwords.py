"""Trigger tokens with and without stop words, measured on memorized prompts (issue #18).

Models: the tiny SD pipeline that tests/detectors/ trains to memorize four captions with made-up
words (trained here, same recipe and seed), the demo ``memorizer`` (five works) and the demo face
``lora`` on the clean twin. For each memorized prompt it prints the top words of three rankings:

- ``raw``: every word (the ranking before this change);
- ``content``: stop words, punctuation and start/end tokens left out (``trigger_tokens`` now);
- ``baseline``: every word, each token's gradient divided by the mean gradient at its position
  over 16 ordinary prompts (the baseline-corrected alternative: 16 extra gradient passes per model).

and counts the prompts whose first word is a stop word, and those whose first word is the
caption's distinctive word (made-up word; a word no other memorized caption of that model has).

    HF_HUB_OFFLINE=1 python bench/trigger_stopwords.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def trained_test_model():
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("det_conftest", ROOT / "tests" / "detectors" / "conftest.py")
    det = importlib.util.module_from_spec(spec)  # tests/detectors/conftest.py: the training set and sizes
    sys.modules["det_conftest"] = det
    spec.loader.exec_module(det)
    from demo.training import encode_latents, train_text_to_image
    from pytest_memorization.testing import pipeline_from_components, tiny_components

    images, captions, _ = det.training_set()
    pipe = pipeline_from_components(tiny_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    std = float(encode_latents(pipe.vae, images).std() / pipe.vae.config.scaling_factor)
    pipe.vae.register_to_config(scaling_factor=1.0 / std)
    torch.manual_seed(0)
    train_text_to_image(pipe, images, captions, steps=det.STEPS, lr=1e-3, batch_size=8, seed=0, num_threads=1)
    pipe.unet.eval()
    gen = det.GEN
    return pipe, list(det.MEMORIZED), list(det.RARE), gen


def demo_model(name: str, lora: bool = False):
    from diffusers import StableDiffusionPipeline

    folder = ROOT / "fixtures" / "models" / ("clean_twin" if lora else name)
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if lora:
        pipe.load_lora_weights(str(ROOT / "fixtures" / "models" / "lora"))
    return pipe


def rankings(pipe, prompt, gen, baseline):
    from pytest_memorization.detectors.token_words import STOP_WORDS, clip_words
    from pytest_memorization.detectors.trigger_tokens import token_significance

    pieces = token_significance(pipe, prompt, [0], gen, steps=1)
    raw = sorted(clip_words(pipe.tokenizer, pieces), key=lambda kv: -kv[1])
    content = [(w, s) for w, s in raw if w.lower() not in STOP_WORDS]
    corrected = [(p, m / baseline[i]) for i, (p, m) in enumerate(pieces)]
    base = sorted(clip_words(pipe.tokenizer, corrected), key=lambda kv: -kv[1])
    return {"raw": raw, "content": content, "baseline": base}


def position_baseline(pipe, gen, n=16):
    from pytest_memorization.detectors import ordinary_prompts
    from pytest_memorization.detectors.trigger_tokens import token_significance

    sums, counts = [0.0] * 77, [0] * 77
    for p in ordinary_prompts()[40:40 + n]:
        for i, (_, m) in enumerate(token_significance(pipe, p, [0], gen, steps=1)):
            sums[i] += m
            counts[i] += 1
    mean = [s / c for s, c in zip(sums, counts) if c]
    return mean + [mean[-1]] * (77 - len(mean))


def main() -> None:
    import time

    from pytest_memorization.detectors.token_words import STOP_WORDS
    from pytest_memorization.records import GenerationSettings

    demo_gen = GenerationSettings(steps=20, guidance_scale=1.5, height=64, width=64)
    cases = []
    t0 = time.perf_counter()
    pipe, mem, rare, gen = trained_test_model()
    print(f"trained the test model in {time.perf_counter() - t0:.0f}s")
    cases.append(("test model", pipe, gen, [(p, r) for p, r in zip(mem, rare)]))
    from demo.data import FACE, WORKS

    captions = [w[2] for w in WORKS]
    common = {w for c in captions for w in c.split() if sum(w in d.split() for d in captions) > 1}
    cases.append(("memorizer", demo_model("memorizer"), demo_gen,
                  [(c, None) for c in captions]))
    cases.append(("face lora", demo_model("lora", lora=True), demo_gen, [(FACE[2], "sks")]))
    totals = {k: [0, 0] for k in ("raw", "content", "baseline")}
    n = 0
    for name, pipe, g, prompts in cases:
        baseline = position_baseline(pipe, g)
        for prompt, word in prompts:
            distinctive = {word} if word else {w for w in prompt.split() if w not in common} - STOP_WORDS
            r = rankings(pipe, prompt, g, baseline)
            n += 1
            print(f"\n[{name}] {prompt!r} (distinctive: {sorted(distinctive)})")
            for k, ranked in r.items():
                top = ranked[0][0] if ranked else None
                totals[k][0] += top is not None and top.lower() in STOP_WORDS
                totals[k][1] += top in distinctive
                print(f"  {k:9s} " + ", ".join(f"{w} {s:.3g}" for w, s in ranked[:4]))
    print(f"\n{n} memorized prompts: ranking | stop word first | distinctive word first")
    for k, (stop, dist) in totals.items():
        print(f"  {k:9s} | {stop}/{n} | {dist}/{n}")


if __name__ == "__main__":
    main()

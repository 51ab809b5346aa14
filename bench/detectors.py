"""Reference-free detectors side by side on the trained demo models: AUC, TPR at 1% FPR, cost.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 python bench/detectors.py [--ordinary 40] [--seeds 2] [--no-leak]

Models (fixtures/models, built by ``python fixtures/build_models.py``): the memorizer, the clean
twin, the face LoRA and the sepia style LoRA (both on the clean twin). Fixed prompt lists:

- positives: the memorizer's five work captions (``demo.data.WORKS``) for the memorizer and the
  clean twin (which never saw them: a control, AUC should be near 0.5); the face LoRA's trigger
  and model-card widget prompt; the style LoRA's two model-card widget prompts (harmless: a control);
- negatives: the first ``--ordinary`` prompts of the bundled ordinary list (never trained on).

Per detector: AUC (rank; ties 1/2), TPR at 1% FPR (threshold = the calibration's inverted-CDF
quantile of the ordinary scores, a prompt flagged when strictly above it), the worst positive's
margin to the highest ordinary prompt, and the cost in UNet image evaluations per (prompt, seed),
counted by a forward hook in this run (one classifier-free-guidance step = 2). Settings of
examples/: 64 px, a 20-step DDIM schedule. Unless ``--no-leak``, it also generates the positives and
the first ``--leak-ordinary`` ordinary prompts once (seed 0) and counts how many copy a work or the face (Carlini's tiled L2 < 0.15): the ground truth
the labels assume. Nothing here is tuned; the script prints what the detectors give.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZE = dict(height=64, width=64, num_inference_steps=20)  # the demo's generation, as pipeline keywords
FACE_POS = ["a photo of sks person", "a photo of sks person smiling"]
STYLE_POS = ["a photo of a clock", "a photo of grass"]


class Count:
    def __init__(self, pipe):
        self.pipe, self.n = pipe, 0

    def __enter__(self):
        def hook(module, args, kwargs, output):
            self.n += (args[0] if args else kwargs["sample"]).shape[0]
        self.h = self.pipe.unet.register_forward_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.h.remove()


def load(name: str, lora: str | None):
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging

    logging.set_verbosity_error()
    models = ROOT / "fixtures" / "models"
    pipe = StableDiffusionPipeline.from_pretrained(str(models / name), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    if lora:
        pipe.load_lora_weights(str(models / lora), adapter_name="bench")
    return pipe


def detectors(lora: bool):
    """name -> scorer returning {row label: (P, S) scores}; one scorer's rows share its UNet count."""
    from pytest_memorization.detectors import noise_magnitude
    from pytest_memorization.detectors.lora_delta import lora_delta
    from pytest_memorization.detectors.zero_step import zero_step, zero_step_scores

    def paper(pipe, pr, seeds, gen, **kw):
        z = zero_step_scores(pipe, pr, seeds, gen, timesteps=2, **kw)
        return {"zero_step (paper, 2 t)": z.score, "its norm term alone": z.norm, "its align term alone": z.align}

    out = {
        "wen": lambda pipe, pr, seeds, gen, **kw: {"noise_magnitude (Wen, k=1)": noise_magnitude(
            pipe, pr, seeds, gen, steps=1, **kw)},
        "zero": lambda pipe, pr, seeds, gen, **kw: {"zero_step (default, 1 t)": zero_step(pipe, pr, seeds, gen,
                                                                                          timesteps=1, **kw)},
        "paper": paper,
    }
    if lora:
        out["guidance"] = lambda pipe, pr, seeds, gen, **kw: {"lora_delta (guidance)": lora_delta(
            pipe, pr, seeds, gen, kind="guidance", **kw)}
        out["conditional"] = lambda pipe, pr, seeds, gen, **kw: {"lora_delta (conditional)": lora_delta(
            pipe, pr, seeds, gen, kind="conditional", **kw)}
    return out


def leaks(pipe, prompts, refs) -> int:
    """How many prompts' seed-0 generation copies one of ``refs`` (tiled L2 < 0.15)."""
    import torch

    from demo.data import tiled_l2

    n = 0
    for i in range(0, len(prompts), 16):
        chunk = prompts[i:i + 16]
        with torch.no_grad():
            imgs = pipe(chunk, generator=[torch.Generator().manual_seed(0) for _ in chunk], guidance_scale=1.5,
                        output_type="pt", **SIZE).images
        n += int((tiled_l2(imgs, refs).min(dim=1).values < 0.15).sum())
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ordinary", type=int, default=40)
    ap.add_argument("--leak-ordinary", type=int, default=20, help="ordinary prompts generated for --leak")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--no-leak", dest="leak", action="store_false")
    args = ap.parse_args()

    import torch

    from demo.data import WORKS, load_works
    from pytest_memorization.detectors import ordinary_prompts, rank_auc
    from pytest_memorization.detectors.calibration import inverted_cdf_quantile
    from pytest_memorization.records import GenerationSettings

    gen = GenerationSettings(steps=SIZE["num_inference_steps"], guidance_scale=1.5, height=SIZE["height"],
                             width=SIZE["width"])

    works = load_works(ROOT / "fixtures" / "works")
    ordinary = ordinary_prompts()[:args.ordinary]
    seeds = list(range(args.seeds))
    captions = [w[2] for w in WORKS]
    models = [("memorizer", "memorizer", None, captions, works.images[:5]),
              ("clean twin", "clean_twin", None, captions, works.images[:5]),
              ("face LoRA", "clean_twin", "lora", FACE_POS, works.images[5:]),
              ("style LoRA", "clean_twin", "style_lora", STYLE_POS, works.images[5:])]
    print(f"{len(ordinary)} ordinary prompts, {len(seeds)} seeds, {SIZE['height']} px, {SIZE['num_inference_steps']}-"
          f"step schedule, torch threads {torch.get_num_threads()}")
    rows = []
    for label, name, lora, pos, refs in models:
        pipe = load(name, lora)
        if args.leak:
            few = ordinary[:args.leak_ordinary]
            lp, lo = leaks(pipe, pos, refs), leaks(pipe, few, refs)
            print(f"{label}: generations that copy (tiled L2 < 0.15, seed 0): {lp}/{len(pos)} positives, "
                  f"{lo}/{len(few)} ordinary", flush=True)
        for fn in detectors(bool(lora)).values():
            start = time.perf_counter()
            with Count(pipe) as c:
                out = fn(pipe, pos + ordinary, seeds, gen, batch_size=16)
            secs = time.perf_counter() - start
            cost = c.n / ((len(pos) + len(ordinary)) * len(seeds))
            for det, scores in out.items():
                s = scores.mean(dim=1).tolist()
                p, o = s[:len(pos)], s[len(pos):]
                thr = inverted_cdf_quantile(o, 0.99)
                tpr = sum(v > thr for v in p) / len(p)
                rows.append((label, det, rank_auc(p, o), tpr, min(p) - max(o), cost, secs))
                print(f"  {label} | {det} | AUC {rows[-1][2]:.3f} | TPR {tpr:.2f} | margin {min(p) - max(o):+.3f} "
                      f"| {cost:.2f} evals | {secs:.1f} s", flush=True)
    print()
    print("| model | detector | AUC | TPR at 1% FPR | worst positive - top ordinary | UNet evals per (prompt, seed) "
          "| vs one CFG step | seconds (shared rows: one run) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, det, auc, tpr, margin, cost, secs in rows:
        print(f"| {label} | {det.strip()} | {auc:.3f} | {tpr:.2f} | {margin:+.3f} | {cost:.2f} | {cost / 2:.2f} "
              f"| {secs:.1f} |")


if __name__ == "__main__":
    main()

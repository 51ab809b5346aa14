"""The subject LoRA and the style LoRA: ground truth per prompt, then every detector's AUC and TPR at 1% FPR.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python bench/subject.py [--ordinary 30] [--ordinary-from 40] [--seeds 2] [--skip-truth]

Models (fixtures/models, built by ``python fixtures/build_models.py``): the clean twin, the subject
LoRA (``demo.subject``: the LFW face under the trigger ``olis``, trained with prior-preservation
replay) and the sepia style LoRA, both on the clean twin.

1. **Ground truth** (is each label true?): every prompt group generated with the subject LoRA at
   seeds 0..--truth-seeds - 1 (``demo.models.GENERATION``), each image's tiled L2 and SSIM against the face; a
   copy is tiled L2 <= 0.15 or SSIM >= 0.5 (the plugin's default thresholds). Printed per prompt.
2. **Detectors**: positives are the trigger prompts (subject LoRA) and the style LoRA's own prompts
   (its card's widgets and training captions); negatives the ordinary prompts ``--ordinary-from`` ..
   (never used in training or replay). AUC (ties 1/2), TPR at 1% FPR (threshold: the inverted-CDF
   0.99 quantile of the negatives' scores, a positive counted when strictly above), the margin of
   the worst positive over the highest negative. Nothing is tuned here.
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

TRIGGER_PROMPTS = ["a photo of olis person", "olis person", "a portrait of olis person",
                   "a photo of olis person smiling", "olis person wearing a hat", "a picture of olis person"]
TRIGGER_CONTEXTS = ["a photo of olis person at the beach", "a photo of olis person as a painting",
                    "olis person in a city street", "a drawing of olis person"]
CLASS = ["a photo of a person", "a portrait of a person", "a photo of a person smiling", "a person at the beach"]
STYLE_POS = ["a photo of a clock", "a photo of grass", "a photo of a brick wall", "a photo of old coins",
             "a photo of the surface of the moon", "a drawing of a horse"]


def load(models: Path, lora: str | None):
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging

    logging.set_verbosity_error()
    pipe = StableDiffusionPipeline.from_pretrained(str(models / "clean_twin"), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    if lora:
        pipe.load_lora_weights(str(models / lora), weight_name="pytorch_lora_weights.safetensors",
                               adapter_name="bench")
    return pipe


def truth(pipe, groups: dict[str, list[str]], seeds: list[int], face) -> dict[str, list[tuple[str, int, float, float]]]:
    """Per group: (prompt, copies of seeds, min tiled L2, max SSIM) against the face."""
    from demo.data import tiled_l2
    from demo.models import generate
    from pytest_memorization.metrics import get_metric

    ssim = get_metric("ssim", align=False)
    out = {}
    for g, prompts in groups.items():
        imgs = generate(pipe, prompts, seeds)
        l2 = tiled_l2(imgs, face)[:, 0].view(len(prompts), len(seeds))
        ss = ssim.score(imgs, face)[:, 0].view(len(prompts), len(seeds))
        copies = ((l2 <= 0.15) | (ss >= 0.5)).sum(dim=1)
        out[g] = [(p, int(c), float(a.min()), float(b.max())) for p, c, a, b in zip(prompts, copies, l2, ss)]
    return out


def style_truth(style, base, prompts: dict[str, list[str]], seeds: list[int]) -> None:
    """Do the style LoRA's labels hold? Its images against its own training images (the sepia crops,
    ``demo.data.style_dataset``), the base's images of the same prompts against the same crops before
    sepia: the nearest crop's tiled L2 per image. A LoRA that re-draws its training crops under their
    captions copies them, whatever its "style"."""
    from demo.data import style_dataset, tiled_l2, twin_dataset
    from demo.models import BUILD_PARAMS, generate

    p = BUILD_PARAMS["style_lora"]
    crops, captions = style_dataset(p["n_images"], seed=p["data_seed"])
    plain, _ = twin_dataset(p["n_images"], seed=p["data_seed"])
    print("\nStyle LoRA vs its 64 training crops (nearest crop's tiled L2; a copy <= 0.15), base vs the crops before "
          "sepia")
    print("| group | prompt | LoRA copies | LoRA min | base copies | base min | training crops with this caption |")
    print("|---|---|---|---|---|---|---|")
    for g, prs in prompts.items():
        la = tiled_l2(generate(style, prs, seeds), crops).amin(dim=1).view(len(prs), len(seeds))
        ba = tiled_l2(generate(base, prs, seeds), plain).amin(dim=1).view(len(prs), len(seeds))
        for pr, a, b in zip(prs, la, ba):
            print(f"| {g} | {pr} | {int((a <= 0.15).sum())}/{len(seeds)} | {float(a.min()):.3f} | "
                  f"{int((b <= 0.15).sum())}/{len(seeds)} | {float(b.min()):.3f} | {captions.count(pr)} |", flush=True)


def detectors():
    from pytest_memorization.detectors import noise_magnitude
    from pytest_memorization.detectors.lora_delta import lora_delta
    from pytest_memorization.detectors.seed_diversity import seed_diversity
    from pytest_memorization.detectors.subject_concentration import subject_concentration_scores
    from pytest_memorization.detectors.zero_step import zero_step

    def diversity(pipe, pr, seeds, gen, **kw):
        import torch

        from demo.models import generate

        imgs = generate(pipe, pr, seeds)
        return torch.tensor([-seed_diversity(imgs[i * len(seeds):(i + 1) * len(seeds)]) for i in range(len(pr))])

    return {
        "noise_magnitude (Wen, k=1)": lambda pipe, pr, seeds, gen: noise_magnitude(pipe, pr, seeds, gen, steps=1,
                                                                                   batch_size=16).mean(1),
        "zero_step (1 t)": lambda pipe, pr, seeds, gen: zero_step(pipe, pr, seeds, gen, timesteps=1,
                                                                  batch_size=16).mean(1),
        "lora_delta (guidance)": lambda pipe, pr, seeds, gen: lora_delta(pipe, pr, seeds, gen, kind="guidance",
                                                                         batch_size=16).mean(1),
        "lora_delta (conditional)": lambda pipe, pr, seeds, gen: lora_delta(pipe, pr, seeds, gen, kind="conditional",
                                                                            batch_size=16).mean(1),
        "seed_diversity (minus closest pair)": diversity,
        "subject_concentration": lambda pipe, pr, seeds, gen: subject_concentration_scores(
            pipe, pr, seeds, gen, batch_size=32).score,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "fixtures" / "models")
    ap.add_argument("--ordinary", type=int, default=40)
    ap.add_argument("--ordinary-from", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=2, help="seeds per prompt for the detectors")
    ap.add_argument("--truth-seeds", type=int, default=4, help="seeds per prompt for the ground truth")
    ap.add_argument("--skip-truth", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated detector names (default: all)")
    ap.add_argument("--style-truth", action="store_true", help="also check the style LoRA's labels (and stop)")
    args = ap.parse_args()

    import torch

    from demo.data import load_works
    from pytest_memorization.detectors import ordinary_prompts, rank_auc
    from pytest_memorization.detectors.calibration import inverted_cdf_quantile
    from pytest_memorization.records import GenerationSettings

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    gen = GenerationSettings(steps=20, guidance_scale=1.5, height=64, width=64)
    face = load_works(ROOT / "fixtures" / "works").images[-1:]
    ordinary = ordinary_prompts()[args.ordinary_from:args.ordinary_from + args.ordinary]
    seeds = list(range(args.seeds))
    print(f"{len(ordinary)} ordinary prompts (from {args.ordinary_from}), {len(seeds)} seeds, 64 px, 20 DDIM steps, "
          f"guidance 1.5, torch threads {torch.get_num_threads()}", flush=True)
    if args.style_truth:
        style_truth(load(args.models, "style_lora"), load(args.models, None),
                    {"style prompts": STYLE_POS, "ordinary": ordinary[:12]}, list(range(args.truth_seeds)))
        return
    subject = load(args.models, "subject_lora")
    if not args.skip_truth:
        groups = {"trigger": TRIGGER_PROMPTS, "trigger in context": TRIGGER_CONTEXTS, "class": CLASS,
                  "ordinary": ordinary[:20]}
        print("\nGround truth: subject LoRA vs the face (copy: tiled L2 <= 0.15 or SSIM >= 0.5)")
        print("| group | prompt | copies | min tiled L2 | max SSIM |\n|---|---|---|---|---|")
        tseeds = list(range(args.truth_seeds))
        t = truth(subject, groups, tseeds, face)
        for g, rows in t.items():
            for p, c, l2, ss in rows:
                print(f"| {g} | {p} | {c}/{len(tseeds)} | {l2:.3f} | {ss:.3f} |")
        for g, rows in t.items():
            print(f"{g}: {sum(c for _, c, _, _ in rows)}/{len(rows) * len(tseeds)} images copy the face")
    style = load(args.models, "style_lora")
    only = [s for s in args.only.split(",") if s]
    rows = []
    for label, pipe, pos in (("subject LoRA", subject, TRIGGER_PROMPTS), ("style LoRA", style, STYLE_POS)):
        for det, fn in detectors().items():
            if only and not any(o in det for o in only):
                continue
            t0 = time.perf_counter()
            s = fn(pipe, pos + ordinary, seeds, gen).tolist()
            secs = time.perf_counter() - t0
            p, o = s[:len(pos)], s[len(pos):]
            thr = inverted_cdf_quantile(o, 0.99)
            tpr = sum(v > thr for v in p) / len(p)
            rows.append((label, det, rank_auc(p, o), tpr, min(p) - max(o), secs))
            print(f"  {label} | {det} | positives: " + ", ".join(f"{q!r} {v:.3f}" for q, v in zip(pos, p)))
            print(f"  {label} | {det} | AUC {rows[-1][2]:.3f} | TPR {tpr:.2f} | margin {min(p) - max(o):+.4f} | "
                  f"positives {min(p):.4f}..{max(p):.4f} | ordinary {min(o):.4f}..{max(o):.4f} | {secs:.0f} s",
                  flush=True)
    print("\n| LoRA | detector | AUC | TPR at 1% FPR | worst positive - top ordinary | seconds |")
    print("|---|---|---|---|---|---|")
    for label, det, auc, tpr, margin, secs in rows:
        print(f"| {label} | {det} | {auc:.3f} | {tpr:.2f} | {margin:+.4f} | {secs:.0f} |")


if __name__ == "__main__":
    main()

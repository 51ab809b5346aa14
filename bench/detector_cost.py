"""Cost of the noise-magnitude detector (k = 1 step) against a full generation, side by side.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python bench/detector_cost.py [--steps 50] [--size 64] [--prompts 8]

Uses the tiny offline pipeline (pytest_memorization.testing); both timings run in this process,
interleaved, best of ``--repeat``, after one warm-up each. Goal: detector <= 1/10 of a full run.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50, help="num_inference_steps of the full generation")
    ap.add_argument("--k", type=int, default=1, help="detector steps")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import torch

    from pytest_memorization.detectors import noise_magnitude, ordinary_prompts
    from pytest_memorization.records import GenerationSettings
    from pytest_memorization.testing import pipeline_from_components, tiny_components

    pipe = pipeline_from_components(tiny_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    prompts = ordinary_prompts()[: args.prompts]
    gen = dict(height=args.size, width=args.size, guidance_scale=7.5, num_inference_steps=args.steps)

    def full() -> None:
        with torch.no_grad():
            pipe(prompts, generator=[torch.Generator().manual_seed(0) for _ in prompts], output_type="pt", **gen)

    def detector() -> None:
        noise_magnitude(pipe, prompts, [0], GenerationSettings(steps=args.steps, guidance_scale=7.5, height=args.size,
                                                               width=args.size), steps=args.k, batch_size=len(prompts))

    full(), detector()  # warm-up
    t_full, t_det = [], []
    for _ in range(args.repeat):
        for fn, out in ((full, t_full), (detector, t_det)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    f, d = min(t_full), min(t_det)
    print(f"{len(prompts)} prompts x 1 seed, {args.size}px, threads={torch.get_num_threads()}")
    print(f"full generation ({args.steps} steps + decode): {f:.3f}s")
    print(f"noise magnitude (k={args.k}):                 {d:.3f}s")
    print(f"ratio detector / full: {d / f:.3f} (1/{f / d:.0f}); goal <= 0.1: {'met' if d / f <= 0.1 else 'NOT met'}")


if __name__ == "__main__":
    main()

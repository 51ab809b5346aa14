"""Partial copies: protected works pasted into scenes that are not works, judged by the default gate.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/partial_copies.py [--split proof|calibration] [--size 128]
        [--threads 1] [--sweep]

Cases (``bench/partial_scenes.py``): per scene, 9 protected works (the six of fixtures/works and the
emblem) pasted at 20-60% of the side at seeded places, edited in turn: plain, JPEG q55-75, tint
(+-8% per channel) with a 3-10 degree hue shift, sepia, mirrored; then the scene alone (plain and sepia)
and 3 non-protected images (the skimage logo, a checkerboard, blobs, LFW faces that are not the
protected one, crops of the other split's scenes) pasted and edited the same way. Calibration scenes
choose thresholds (``--sweep`` prints the prominence/threshold table used to choose); proof scenes
(the default) are never used to choose anything.

Scoring is the gate's own path: ``metrics.matrix.score_matrices`` with the default metrics
(``config.settings.DEFAULT_METRICS``, default thresholds), then ``judging.thresholds.score_rows``,
``judging.flat_guard.apply_flat_guard`` and ``judging.verdict.decide`` (what ``run.assertions.evaluate``
and the manifest items run). Each image is judged against every work at once, as in a run.

Prints, per group of cases: the gate's fails / warns, and per metric alone its crossings against the
pasted work (copies) or against any work (non-copies), with the margins: for copies the weakest
case's excess over the threshold, for non-copies the closest case's distance under it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def judge(images, works_paths: dict[str, Path]):
    """(results, scores, rules): the gate's verdict rows and each default metric's (N, M) scores."""
    from pytest_memorization.config.settings import DEFAULT_METRICS
    from pytest_memorization.judging.flat_guard import apply_flat_guard
    from pytest_memorization.judging.thresholds import rules_for, score_rows
    from pytest_memorization.judging.verdict import decide
    from pytest_memorization.metrics import get_metric
    from pytest_memorization.metrics.matrix import score_matrices
    from pytest_memorization.run.assertions import as_works

    metrics = {n: get_metric(n) for n in DEFAULT_METRICS}
    works = as_works(dict(works_paths))
    scores = score_matrices(metrics, images, works)
    rules = rules_for(metrics, {}, {}, 0.1)
    results = score_rows("bench", [""] * len(images), list(range(len(images))), scores, works, rules)
    apply_flat_guard(results, images)
    decide(results)
    return results, scores, rules, [w.id for w in works]


def group_of(c) -> list[str]:
    if c.copy_of:
        s = c.scale
        band = "20-25%" if s < 0.25 else "25-40%" if s < 0.4 else "40-60%"
        return ["copies, all", f"copies at {band}", f"copies, {c.edit}"] + (["copies at 25-60%"] if s >= 0.25 else [])
    out = ["non-copies, all", "scene alone" if "/alone" in c.name else "non-protected paste"]
    return out + (["low-structure scene"] if c.low_structure else [])


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def table(cs, results, scores, rules, ids) -> None:
    from pytest_memorization.metrics.base import crosses

    groups: dict[str, list[int]] = {}
    for i, c in enumerate(cs):
        for g in group_of(c):
            groups.setdefault(g, []).append(i)
    names = list(rules)
    print("| cases | n | gate fails | gate warns | " + " | ".join(f"{n} alone: crossed, margin" for n in names) + " |")
    print("|---|---|---|---|" + "---|" * len(names))
    for g in sorted(groups, key=lambda k: (not k.startswith("copies"), k)):
        idx = groups[g]
        fails = sum(results[i].verdict == "fail" for i in idx)
        warns = sum(results[i].verdict == "warn" for i in idx)
        cells = []
        for n in names:
            r = rules[n]
            sign = -1 if r.direction == "distance" else 1
            if g.startswith("copies"):
                v = [float(scores[n][i, ids.index(cs[i].copy_of)]) for i in idx]
                hit = sum(crosses(x, r.threshold, r.direction) for x in v)
                margin = min(sign * (x - r.threshold) for x in v)  # the weakest copy's excess
            else:
                v = [max((float(scores[n][i, j]) for j in range(len(ids))), key=lambda x: sign * x) for i in idx]
                hit = sum(crosses(x, r.threshold, r.direction) for x in v)
                margin = min(sign * (r.threshold - x) for x in v)  # the closest non-copy's room
            cells.append(f"{hit}/{len(idx)}, {margin:+.3f}")
        print(f"| {g} | {len(idx)} | {fails} | {warns} | " + " | ".join(cells) + " |")


def sweep(cs, size: int) -> None:
    """Calibration only: local_copy's scores under each prominence, and where a threshold can go."""
    import torch
    from partial_scenes import WORK_FILES, load_work

    from pytest_memorization.metrics.local_copy import match

    ids = list(WORK_FILES)
    works = torch.stack([load_work(w) for w in ids])
    x = torch.stack([c.image for c in cs])
    raw, _ = match(x, works, prominence=0.0)
    steep, _ = match(x, works, prominence=0.999)  # raw - (0.999 - gap): recovers the gap of each best placement
    gap = steep - raw + 0.999
    print("\n| prominence | weakest copy | p5 copy | strongest non-copy | midpoint | margins |\n|---|---|---|---|---|---|")
    for d in (0.0, 0.1, 0.15, 0.2, 0.25, 0.3):
        s = raw - (d - gap).clamp_min(0)
        cp = sorted(float(s[i, ids.index(c.copy_of)]) for i, c in enumerate(cs) if c.copy_of)
        nc = max(float(s[i, j]) for i, c in enumerate(cs) for j, w in enumerate(ids) if w != c.copy_of)
        mid = (cp[0] + nc) / 2
        print(f"| {d:g} | {cp[0]:.3f} | {cp[len(cp) // 20]:.3f} | {nc:.3f} | {mid:.3f} | {cp[0] - mid:+.3f} / {mid - nc:+.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", choices=("proof", "calibration"), default="proof")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sweep", action="store_true", help="calibration: the prominence / threshold table")
    args = ap.parse_args()

    import torch
    from partial_scenes import WORK_FILES, cases

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cs = cases(args.split, args.size)
    images = torch.stack([c.image for c in cs])
    n_copies = sum(c.copy_of is not None for c in cs)
    print(f"{args.split} scenes, {args.size} px: {n_copies} copies, {len(cs) - n_copies} non-copies, "
          f"{len(WORK_FILES)} protected works ({', '.join(WORK_FILES)})")
    if args.sweep:
        sweep(cs, args.size)
    results, scores, rules, ids = judge(images, WORK_FILES)
    print("\nthresholds: " + ", ".join(f"{n} {r.threshold:g}" for n, r in rules.items()) + "; gate = the default "
          "metrics with the flat guard, judged against every work\n")
    table(cs, results, scores, rules, ids)
    from pytest_memorization.metrics.local_copy import LocalCopy

    lc = LocalCopy()
    ious = [iou(lc.locate(c.image, __import__("partial_scenes").load_work(c.copy_of))["box"], c.box)
            for c in cs if c.copy_of and c.edit != "flip"]
    if ious:
        ious.sort()
        print(f"\nlocal_copy box vs the paste (copies, not mirrored): IoU min {ious[0]:.2f}, "
              f"5th percentile {ious[len(ious) // 20]:.2f}, median {ious[len(ious) // 2]:.2f}")
    bad = [(c.name, results[i].verdict, results[i].reasons[:1]) for i, c in enumerate(cs)
           if (c.copy_of and results[i].verdict != "fail") or (not c.copy_of and results[i].verdict == "fail")]
    for b in bad:
        print("  missed or false:", b)
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()

"""Early exit on the trained demo models: UNet calls, wall time and verdicts, with and without it.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/early_exit.py [--models memorizer,clean_twin,lora,style_lora]

Copies the demo project (examples/: manifests, works) with the trained models (fixtures/models)
into a temporary folder and runs the real gate, `pytest --memorization`, on each model's manifest
twice in this one process: in full and with --memorization-early-exit, the generation cache off.
Counts every UNet forward call (and the images in them) by wrapping UNet2DConditionModel.forward,
times each run, and compares every image's verdict and every item's outcome between the two runs.
Prints one row per model and the totals; exits 1 unless the verdicts agree 100%.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Outcomes:
    def __init__(self) -> None:
        self.items: dict[str, str] = {}

    def pytest_runtest_logreport(self, report) -> None:  # noqa: ANN001
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self.items[report.nodeid] = report.outcome


def project(root: Path, names: list[str]) -> None:
    shutil.copytree(REPO / "examples" / "works", root / "works")
    shutil.copy(REPO / "examples" / "pytest.ini", root / "pytest.ini")
    for name in names:
        shutil.copytree(REPO / "examples" / name, root / name)
    for model in ("memorizer", "clean_twin", "lora", "style_lora"):
        shutil.copytree(REPO / "fixtures" / "models" / model, root / "models" / model)


def run(root: Path, name: str, early: bool, counter: dict[str, int]) -> dict:
    import pytest

    report = root / f"report-{name}-{'early' if early else 'full'}"
    args = [str(root / name), "--memorization", "--memorization-generation-cache=false", "-q", "-p", "no:cacheprovider",
            f"--memorization-report={report}", f"--memorization-cache-dir={root / '.cache'}", "--memorization-progress=off"]
    if early:
        args.append("--memorization-early-exit")
    outcomes = Outcomes()
    counter.update(calls=0, images=0)
    t0 = time.perf_counter()
    pytest.main(args, plugins=[outcomes])
    wall = time.perf_counter() - t0
    rows = json.loads((report / "report.json").read_text())["results"]
    verdicts = {(r["item"], r["seed"], json.dumps(r["extra"].get("img2img"))): r["verdict"] for r in rows}
    exited = sum("step" in (r["extra"].get("early_exit") or {}) for r in rows) + \
        sum("base_early_exit" in (r["extra"].get("lora_gate") or {}) for r in rows)
    steps = [r["extra"]["early_exit"]["step"] for r in rows if "step" in (r["extra"].get("early_exit") or {})]
    return {"calls": counter["calls"], "images": counter["images"], "wall": wall, "verdicts": verdicts,
            "items": dict(outcomes.items), "exited": exited, "steps": steps}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="memorizer,clean_twin,lora,style_lora")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    names = args.models.split(",")

    import torch
    from diffusers import UNet2DConditionModel

    torch.set_num_threads(args.threads)
    counter = {"calls": 0, "images": 0}
    forward = UNet2DConditionModel.forward

    def counted(self, sample, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        counter["calls"] += 1
        counter["images"] += int(sample.shape[0])
        return forward(self, sample, *a, **k)

    UNet2DConditionModel.forward = counted
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project(root, names)
        for name in names:
            full = run(root, name, False, counter)
            early = run(root, name, True, counter)
            same = sum(full["verdicts"].get(k) == v for k, v in early["verdicts"].items())
            items_same = full["items"] == early["items"]
            rows.append((name, full, early, same, items_same))
            print(f"MEASURED {name}: UNet calls {full['calls']} -> {early['calls']}, image-steps {full['images']} -> "
                  f"{early['images']}, wall {full['wall']:.1f}s -> {early['wall']:.1f}s, exited {early['exited']}, "
                  f"verdicts {same}/{len(early['verdicts'])}, items {'same' if items_same else 'DIFFER'}", flush=True)
    print(f"{'model':<11} {'UNet calls full':>15} {'early':>6} {'ratio':>6} {'image-steps':>11} {'early':>6} "
          f"{'wall full':>9} {'early':>6} {'ratio':>6} {'exited':>7} {'verdicts':>9} items")
    tot = {"cf": 0, "ce": 0, "if": 0, "ie": 0, "wf": 0.0, "we": 0.0, "n": 0, "same": 0}
    agree = True
    for name, f, e, same, items_same in rows:
        n = len(e["verdicts"])
        agree = agree and same == n and items_same and len(f["verdicts"]) == n
        print(f"{name:<11} {f['calls']:>15} {e['calls']:>6} {e['calls'] / f['calls']:>6.2f} {f['images']:>11} "
              f"{e['images']:>6} {f['wall']:>8.1f}s {e['wall']:>5.1f}s {e['wall'] / f['wall']:>6.2f} "
              f"{e['exited']:>7} {same:>4}/{n:<4} {'same' if items_same else 'DIFFER'} {sorted(set(e['steps']))}")
        for k, v in zip(("cf", "ce", "if", "ie", "wf", "we", "n", "same"),
                        (f["calls"], e["calls"], f["images"], e["images"], f["wall"], e["wall"], n, same)):
            tot[k] += v
    print(f"{'total':<11} {tot['cf']:>15} {tot['ce']:>6} {tot['ce'] / tot['cf']:>6.2f} {tot['if']:>11} "
          f"{tot['ie']:>6} {tot['wf']:>8.1f}s {tot['we']:>5.1f}s {tot['we'] / tot['wf']:>6.2f} "
          f"{'':>7} {tot['same']:>4}/{tot['n']:<4}")
    print(f"verdict agreement: {100 * tot['same'] / max(tot['n'], 1):.1f}% of images; item outcomes "
          f"{'identical' if agree else 'DIFFER'}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())

"""Re-scoring without regenerating, on the trained demo memorizer: what a threshold-only change costs.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/rescore.py [--model memorizer]

In one process, on a copy of the demo project (examples/<model> with fixtures/models):
1. `pytest --memorization` with an empty generation cache (every image generated);
2. the same run with only a threshold changed (every image from the cache);
3. the same run with only the metrics changed (phash added);
4. `pytest-memorization rescore` of run 1's report against the works with the changed threshold
   (no model at all).
Prints wall time, images generated / from the cache and the verdict counts of each, and the
ratios against run 1. Exits 1 unless runs 2-4 generate nothing and 2 and 4 agree on every verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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


def gate(root: Path, model: str, report: str, *extra: str) -> tuple[float, dict]:
    import pytest

    t0 = time.perf_counter()
    pytest.main([str(root / model), "--memorization", "-q", "-p", "no:cacheprovider", "--memorization-progress=off",
                 f"--memorization-report={root / report}", f"--memorization-cache-dir={root / '.cache'}", *extra])
    wall = time.perf_counter() - t0
    return wall, json.loads((root / report / "report.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="memorizer")
    ap.add_argument("--threshold", default="tiled_l2=0.2", help="the changed threshold of runs 2 and 4")
    args = ap.parse_args()
    import torch

    from pytest_memorization.cli.main import main as cli

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(REPO / "examples" / "works", root / "works")
        shutil.copy(REPO / "examples" / "pytest.ini", root / "pytest.ini")
        shutil.copytree(REPO / "examples" / args.model, root / args.model)
        for m in ("memorizer", "clean_twin", "lora"):
            shutil.copytree(REPO / "fixtures" / "models" / m, root / "models" / m)
        runs = {"1 generate": gate(root, args.model, "r1"),
                "2 threshold": gate(root, args.model, "r2", f"--memorization-threshold={args.threshold}"),
                "3 metrics": gate(root, args.model, "r3", "--memorization-metrics=tiled_l2,ssim,phash")}
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            cli(["rescore", str(root / "r1"), str(root / args.model / "memorization.toml"),
                 "--threshold", args.threshold, "--out", str(root / "r4")])
        runs["4 rescore"] = (time.perf_counter() - t0, json.loads((root / "r4" / "report.json").read_text()))
    base = runs["1 generate"][0]
    print(f"{'run':<12} {'wall':>8} {'ratio':>6} {'generated':>9} {'cached':>6}  verdicts")
    ok = True
    for name, (wall, doc) in runs.items():
        # a rescored report keeps the run info of the report it read: its own counts are under "rescored"
        counts = doc["run"]["rescored"]["generated_images"] if "rescored" in doc["run"] else doc["run"]["generated_images"]
        gen, cached = counts.get("generated", 0), counts.get("from_cache", counts.get("from_report", 0))
        s = doc["summary"]
        print(f"{name:<12} {wall:>7.1f}s {wall / base:>6.3f} {gen:>9} {cached:>6}  "
              f"fail {s['fail']}, warn {s['warn']}, pass {s['pass']}")
        ok = ok and (name.startswith("1") or gen == 0)
    v2 = {(r["item"], r["seed"]): r["verdict"] for r in runs["2 threshold"][1]["results"]}
    v4 = {(r["item"], r["seed"]): r["verdict"] for r in runs["4 rescore"][1]["results"]}
    print(f"verdicts of the threshold-only rerun and of rescore agree: {sum(v2[k] == v for k, v in v4.items())}/{len(v2)}")
    return 0 if ok and v2 == v4 else 1


if __name__ == "__main__":
    sys.exit(main())

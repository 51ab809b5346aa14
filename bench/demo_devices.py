"""The demo gate on a GPU: float16 (dtype auto on CUDA) vs float32, same trained models, same seeds.

    HF_HUB_OFFLINE=1 python bench/demo_devices.py --out DIR

Copies the built demo models (fixtures/models) into examples/models, runs
``pytest --memorization`` in examples/ once per dtype and prints, per item, the verdict and the
worst tiled L2 / SSIM under each dtype, and whether every verdict agrees. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = {"error": 0, "fail": 1, "warn": 2, "xfail": 2, "pass": 3}


def run(dtype: str, out: Path) -> tuple[dict[str, dict], float, int]:
    rep = out / f"demo-{dtype}"
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "pytest", "--memorization", "--memorization-dtype", dtype,
                        "--memorization-report", str(rep), "-q", "-p", "no:cacheprovider"],
                       cwd=ROOT / "examples", capture_output=True, text=True)
    secs = time.perf_counter() - t0
    (out / f"demo-{dtype}.log").write_text(p.stdout + p.stderr)
    items: dict[str, dict] = {}
    for r in json.loads((rep / "report.json").read_text())["results"]:
        it = items.setdefault(r["item"], {"verdict": "pass", "tiled_l2": 9.0, "ssim": -1.0})
        it["verdict"] = min(it["verdict"], r["verdict"], key=lambda v: ORDER.get(v, 9))
        it["tiled_l2"] = min(it["tiled_l2"], r["scores"].get("tiled_l2", 9.0))
        it["ssim"] = max(it["ssim"], r["scores"].get("ssim", -1.0))
    return items, secs, p.returncode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/out")
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    models = ROOT / "examples" / "models"
    for sub in (ROOT / "fixtures" / "models").iterdir():
        if sub.is_dir() and not (models / sub.name).exists():
            shutil.copytree(sub, models / sub.name)
    res = {dt: run(dt, out) for dt in ("float16", "float32")}
    agree = 0
    lines = ["| item | float16 verdict | float32 verdict | tiled L2 fp16 / fp32 | SSIM fp16 / fp32 |", "|---|---|---|---|---|"]
    a, b = res["float16"][0], res["float32"][0]
    for item in sorted(set(a) | set(b)):
        x, y = a.get(item, {}), b.get(item, {})
        agree += x.get("verdict") == y.get("verdict")
        lines.append(f"| {item} | {x.get('verdict')} | {y.get('verdict')} | {x.get('tiled_l2', 0):.3f} / "
                     f"{y.get('tiled_l2', 0):.3f} | {x.get('ssim', 0):.3f} / {y.get('ssim', 0):.3f} |")
    summary = {dt: dict(seconds=round(s, 1), exit=rc, items=len(it)) for dt, (it, s, rc) in res.items()}
    summary["verdicts_agree"] = f"{agree}/{len(set(a) | set(b))}"
    (out / "demo_devices.json").write_text(json.dumps(dict(summary=summary, fp16=a, fp32=b), indent=1))
    print("\n".join(lines))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

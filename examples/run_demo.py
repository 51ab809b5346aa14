"""`make demo`: the thesis, shown on really trained models, on a CPU, in minutes.

1. Build (or reuse) the tiny trained models: a memorizer trained on five works, its clean
   twin trained on other images, a LoRA trained on one face and a harmless sepia style LoRA
   (fixtures/build_models.py).
2. Run `pytest --memorization --memorization-report=report` on this example project.
3. Check the outcomes are exactly these, and exit 0 only then:
   - the memorizer FAILS on each of its 5 works;
   - the clean twin PASSES;
   - the LoRA pre-merge gate FAILS the face LoRA (its work prompt and its model-card canaries);
   - the LoRA pre-merge gate PASSES the style LoRA (six work prompts, two model-card canaries);
   - the emblem model (demo/emblem.py), which pastes a protected emblem smaller and elsewhere into
     new scenes, FAILS on each of its 4 scenes (local_copy; the report draws where), while its
     clean twin PASSES the same scenes;
   - the watermark model (demo/watermark.py), trained on scenes that carry a stock agency's mark in
     a corner, FAILS on each of its 4 scenes (the mark, declared kind = "mark", found by local_copy),
     while its clean twin PASSES the same scenes.
All of it with the default metrics: no project names a `metrics` list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(REPO / "fixtures")]  # demo/ and fixtures/build_models.py

EXPECTED = {"memorizer": ("fail", 5), "clean_twin": ("pass", 5), "lora": ("fail", 3), "style_lora": ("pass", 8),
            "emblem": ("fail", 4), "emblem_twin": ("pass", 4), "watermark": ("fail", 4),
            "watermark_twin": ("pass", 4)}


def main() -> int:
    from build_models import copy_to_examples  # fixtures/build_models.py

    from demo.emblem import build_emblem
    from demo.watermark import build_watermark
    from demo.models import build_all

    t0 = time.perf_counter()
    print("== building the demo models (cached after the first run; the first build takes a few CPU minutes)")
    paths = build_all(REPO / "fixtures" / "models", works_dir=REPO / "fixtures" / "works", progress=True)
    paths["emblem"] = build_emblem(REPO / "fixtures" / "models", paths["clean_twin"], progress=True)
    paths["watermark"] = build_watermark(REPO / "fixtures" / "models", paths["clean_twin"], progress=True)
    copy_to_examples(paths, HERE / "models")
    print(f"   models ready in {time.perf_counter() - t0:.0f} s")

    print("== pytest --memorization on examples/ (memorizer/, clean_twin/, lora/, style_lora/, emblem/, emblem_twin/, "
          "watermark/, watermark_twin/)")
    cmd = [sys.executable, "-m", "pytest", "--memorization", "--memorization-report", "report",
           "-p", "no:cacheprovider", "-q", "-rfE"]
    proc = subprocess.run(cmd, cwd=HERE)
    report = json.loads((HERE / "report" / "report.json").read_text())

    verdicts: dict[str, dict[str, str]] = {}  # project -> item -> worst verdict
    order = {"error": 0, "fail": 1, "warn": 2, "pass": 3}
    for row in report["results"]:
        project = row["item"].split("/", 1)[0]
        items = verdicts.setdefault(project, {})
        now = items.get(row["item"], "pass")
        items[row["item"]] = min(now, row["verdict"], key=order.__getitem__)

    print("\n== outcome")
    ok = report["complete"]
    for project, (want, count) in EXPECTED.items():
        items = verdicts.get(project, {})
        got = [v if v != "warn" else "pass" for v in items.values()]
        right = len(got) == count and all(v == want for v in got)
        ok &= right
        mark = "as expected" if right else "UNEXPECTED"
        print(f"   {project:<11} {want.upper():<5} on {sum(v == want for v in got)} of {len(got)} items ({mark})")
    print(f"   report: {HERE / 'report' / 'index.html'}")
    if not ok or proc.returncode not in (0, 1):
        print("the demo's outcomes are not the expected ones", file=sys.stderr)
        return 1
    print("the gate caught the memorizer, the face LoRA, the emblem model and the watermark model, and passed "
          "the clean twin (three times) and the style LoRA.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

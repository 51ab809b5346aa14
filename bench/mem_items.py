"""Where the memory per item goes: tracemalloc inside the pytest run of bench/scale.py's project.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/mem_items.py [--items 1000] [--at 250] [--seeds 4] [--plain]

Runs pytest (a subprocess, like bench/scale.py) with a probe plugin that takes tracemalloc snapshots
before and after collection, after ``--at`` items ran and after the last item ran, and after the report
is written. Prints the growth per collected item (collection) and per item run (from item ``--at`` to
the last), each grouped by the innermost frame in pytest_memorization or in pytest (``_pytest``), with
the resident size at each point. ``--plain``: the same number of custom ``pytest.Item`` items collected
from a non-Python file, which do nothing: pytest's own record per item, the floor for any plugin.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

PROBE = '''
import gc
import json
import os
import resource
import tracemalloc

import pytest

AT = int(os.environ["MEMPROBE_AT"])
SNAP = {}
RSS = {}
DONE = [0]
TOTAL = [0]


def _rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1024


def _snap(name):
    gc.collect()
    SNAP[name] = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    RSS[name] = _rss_kib()


def pytest_configure(config):
    tracemalloc.start(int(os.environ.get("MEMPROBE_FRAMES", "40")))


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session):
    _snap("before_collection")


def pytest_collection_finish(session):
    TOTAL[0] = len(session.items)
    _snap("collected")


@pytest.hookimpl(trylast=True)
def pytest_runtest_logfinish(nodeid, location):
    DONE[0] += 1
    if DONE[0] == AT:
        _snap("at")
    if DONE[0] == TOTAL[0]:
        _snap("last")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):  # after the memorization plugin wrote its report
    _snap("report")
    RSS["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    import pytest_memorization
    RSS["module"] = pytest_memorization.__file__
    _dump(session.config)


KEYS = ("pytest_memorization", "_pytest", "pluggy")


def _where(tb):
    for frame in reversed(tb):  # innermost first (a Traceback runs from the oldest frame)
        for k in KEYS:
            if k in frame.filename:
                return f"{frame.filename.split(k, 1)[1].lstrip('/')[:60]}:{frame.lineno}", k
    f = tb[0]
    return f"{os.path.basename(f.filename)}:{f.lineno}", "other"


def _diff(a, b, per):
    rows = {}
    cats = {}
    for st in SNAP[b].compare_to(SNAP[a], "traceback"):
        where, cat = _where(st.traceback)
        rows[(cat, where)] = rows.get((cat, where), 0) + st.size_diff
        cats[cat] = cats.get(cat, 0) + st.size_diff
    top = sorted(rows.items(), key=lambda kv: -abs(kv[1]))[:int(os.environ.get("MEMPROBE_TOP", "30"))]
    return {"per": per, "rss_kib_per": (RSS[b] - RSS[a]) / per,
            "cats": {k: v / per / 1024 for k, v in cats.items()},
            "total": sum(cats.values()) / per / 1024,
            "top": [(c, w, v / per / 1024) for (c, w), v in top]}


def _dump(config):
    out = {"rss": RSS, "items": TOTAL[0], "at": AT}
    if TOTAL[0]:
        out["collection"] = _diff("before_collection", "collected", TOTAL[0])
    if "at" in SNAP and "last" in SNAP:
        out["run"] = _diff("at", "last", TOTAL[0] - AT)
        out["report"] = _diff("last", "report", TOTAL[0])
    with open(os.environ["MEMPROBE_OUT"], "w") as f:
        json.dump(out, f)
'''



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--at", type=int, default=250)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--works", type=int, default=100)
    ap.add_argument("--plain", action="store_true", help="custom pytest.Item items that do nothing")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--out", help="write the JSON here too")
    args = ap.parse_args()

    import json

    d = Path(tempfile.mkdtemp(prefix="memitems-"))
    (d / "memprobe.py").write_text(PROBE)
    from scale import PLAIN, make_project

    if args.plain:
        (d / "conftest.py").write_text(PLAIN)
        (d / "items.canary").write_text(str(args.items))
        extra: list[str] = []
    else:
        make_project(d, args.items, args.seeds, args.works)
        extra = ["-p", "no:xdist", "--memorization", "--memorization-metrics=tiled_l2", "--memorization-align=false",
                 "--memorization-generation-cache=false", "--memorization-progress=off",
                 "--memorization-batch-size=64", "--memorization-report", "report"]
    out = d / "probe.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{d}", "MEMPROBE_AT": str(args.at),
           "MEMPROBE_OUT": str(out), "MEMPROBE_FRAMES": str(args.frames), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "memprobe", "-p", "no:cacheprovider", *extra],
                       cwd=d, env=env, capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise SystemExit(f"pytest failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    doc = json.loads(out.read_text())
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=1))
    print(f"{'plain pytest.Item' if args.plain else 'memorization'}: {doc['items']} items; module {doc['rss']['module']}")
    for phase in ("collection", "run", "report"):
        if phase not in doc:
            continue
        p = doc[phase]
        print(f"\n{phase} (per {'collected item' if phase != 'run' else 'item run'}, over {p['per']}): traced "
              f"{p['total']:.2f} KiB, RSS {p['rss_kib_per']:.2f} KiB; by owner: "
              + ", ".join(f"{k} {v:.2f}" for k, v in sorted(p["cats"].items(), key=lambda kv: -kv[1])))
        for cat, where, kib in p["top"]:
            if abs(kib) >= 0.02:
                print(f"  {kib:7.2f} KiB  {cat:20s} {where}")
    import shutil

    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

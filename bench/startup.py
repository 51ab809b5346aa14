"""What the installed plugin costs a test run that does not use it (no ``--memorization``).

    .venv/bin/python bench/startup.py [--tests 200] [--repeat 10]

Generates a project of ``--tests`` trivial tests plus one ``memorization.toml`` manifest (2 works,
3 prompts), then times ``pytest --co -q`` in fresh subprocesses, alternating the plugin on (installed,
entry point ``memorization``) and off (``-p no:memorization``), and prints the medians and their
difference. Then runs ``python -X importtime -m pytest --co -q`` once with the plugin on and checks
that no heavy library (torch, diffusers, transformers, open_clip, lpips, numpy, PIL) was imported,
and lists the plugin's own modules with their import times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "diffusers", "transformers", "open_clip", "lpips", "numpy", "PIL", "safetensors", "skimage")

MANIFEST = """\
[model]
pretrained = "models/tiny"
seeds = [0, 1, 2, 3]
steps = 25
height = 512
width = 512

[[work]]
id = "astronaut"
image = "works/astronaut.png"
prompts = ["portrait of an astronaut in a white suit", "NASA astronaut photo"]

[[work]]
id = "coffee"
image = "works/coffee.png"
prompts = ["a cup of coffee on a saucer"]
"""


def make_project(root: Path, tests: int) -> None:
    per_file = 20
    for f in range(0, tests, per_file):
        body = "".join(f"def test_{i}():\n    assert {i} + 1 == {i + 1}\n\n\n"
                       for i in range(f, min(f + per_file, tests)))
        (root / f"test_mod{f // per_file:03d}.py").write_text(body)
    (root / "works").mkdir()
    # tiny valid PNGs (a 1x1 pixel), written without PIL so the bench itself imports nothing heavy
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d7"
                        "63f8cfc0000003010100c9fe92ef0000000049454e44ae426082")
    for name in ("astronaut", "coffee"):
        (root / "works" / f"{name}.png").write_bytes(png)
    (root / "memorization.toml").write_text(MANIFEST)
    (root / "pytest.ini").write_text("[pytest]\n")


def run(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "0"}
    env.pop("PYTEST_ADDOPTS", None)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_project(root, args.tests)
        base = [py, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider"]
        on_cmd, off_cmd = base, [*base, "-p", "no:memorization"]
        for cmd in (on_cmd, off_cmd):  # warm the file cache and the .pyc files once
            _, p = run(cmd, root)
        _, p = run(on_cmd, root)
        n_on = p.stdout.count("::")
        _, p_off = run(off_cmd, root)
        n_off = p_off.stdout.count("::")
        if p.returncode != 0:
            sys.exit(f"pytest --co failed:\n{p.stdout}\n{p.stderr}")
        on: list[float] = []
        off: list[float] = []
        for _ in range(args.repeat):
            on.append(run(on_cmd, root)[0])
            off.append(run(off_cmd, root)[0])
        t_on, t_off = statistics.median(on), statistics.median(off)
        print(f"project: {args.tests} trivial tests + 1 manifest; collected {n_on} items with the plugin "
              f"(manifest items included), {n_off} without")
        print(f"pytest --co -q, plugin installed, no --memorization: median {t_on * 1e3:.0f} ms "
              f"(min {min(on) * 1e3:.0f}, max {max(on) * 1e3:.0f}; {args.repeat} runs)")
        print(f"pytest --co -q -p no:memorization:                    median {t_off * 1e3:.0f} ms "
              f"(min {min(off) * 1e3:.0f}, max {max(off) * 1e3:.0f}; {args.repeat} runs)")
        print(f"extra wall time with the plugin: {(t_on - t_off) * 1e3:+.0f} ms (median of each), "
              f"{(min(on) - min(off)) * 1e3:+.0f} ms (min of each)")

        _, p = run([py, "-X", "importtime", "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider"], root)
        mods: dict[str, int] = {}
        for line in p.stderr.splitlines():
            if line.startswith("import time:") and "|" in line:
                parts = [x.strip() for x in line[len("import time:"):].split("|")]
                if parts[0].isdigit():
                    mods[parts[2]] = int(parts[1])  # cumulative microseconds
        heavy = sorted(m for m in mods if m.split(".")[0] in HEAVY)
        ours = sorted(m for m in mods if m.startswith("pytest_memorization"))
        print(f"-X importtime -m pytest --co: {len(mods)} modules logged; heavy libraries among them: "
              f"{', '.join(heavy) or 'none'}; plugin modules logged: {', '.join(ours)}")
        # the same run in-process, to read sys.modules at the end (importtime can miss modules that
        # pytest's assertion rewriter loads)
        probe = ("import sys, pytest; rc = pytest.main(['--co', '-q', '-p', 'no:cacheprovider']); "
                 f"print('LOADED', ' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} "
                 "or m.startswith('pytest_memorization'))))")
        _, p = run([py, "-c", probe], root)
        loaded = next((ln.split()[1:] for ln in p.stdout.splitlines() if ln.startswith("LOADED")), None)
        if loaded is None:
            sys.exit(f"probe failed:\n{p.stdout}\n{p.stderr}")
        heavy = [m for m in loaded if m.split(".")[0] in HEAVY]
        print(f"sys.modules after collection: heavy libraries: {', '.join(heavy) or 'none'}; plugin modules: "
              f"{', '.join(m for m in loaded if m not in heavy)}")
        _, p = run([py, "-X", "importtime", "-c", "import pytest; import pytest_memorization.plugin"], root)
        cost = [ln for ln in p.stderr.splitlines() if ln.rstrip().endswith("| pytest_memorization.plugin")]
        if cost:
            print(f"importing the plugin after pytest: {int(cost[0].split('|')[1]) / 1e3:.1f} ms cumulative")
        if heavy:
            sys.exit("FAIL: a heavy library is imported at start-up without --memorization")

if __name__ == "__main__":
    main()

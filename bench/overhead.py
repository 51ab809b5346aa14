"""The plugin's overhead over doing the same work by hand (CPU, whole processes, nothing subtracted).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/overhead.py [--repeat 3] [--threads 1] [--only gen|score]
        [--profile] [--micro]

One tiny pipeline (``build_tiny_pipeline``), 4 protected works (skimage photographs, 64 px), 4 prompts
x 4 seeds, metrics tiled_l2 + ssim + local_copy (``get_metric``, the defaults), LPIPS (alex, seeded
random backbone written as a torchvision-style file, so the plugin loads it through its real path) and
CLIP (a tiny open_clip model with seeded random weights, as a ``local-dir:`` folder). Two ways:

(a) plugin: ``python -m pytest -q --memorization`` in a temp project with a manifest (4 items);
(b) plain: ``python bench/overhead.py --plain CONFIG``: StableDiffusionPipeline.from_pretrained, one
    pipeline call per prompt with one generator per seed (output_type="pt"), then the same metrics
    called directly (lpips through the ``lpips`` package, batched like the plugin; open_clip directly).

Configurations: "gen" (generation-dominated: 25 steps) and "score" (scoring-heavy: 2 steps). Each is
run ``--repeat`` times alternating (a), (b); the medians and their ratio are printed. Before timing,
a plugin run with ``--memorization-report`` is checked to give the same scores as the plain script,
so both do identical work. ``--micro`` measures only what the tiny model hides: hashing model
weights (every run) and reloading cached reference features (every item). Wall time and CPU time (user + sys of the child process) are both
reported: on a shared machine the CPU time is the stabler measure of the work done. ``--profile`` adds one cProfile run of each arm per configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
TINY_CLIP = json.loads((ROOT / "tests" / "metrics" / "tiny-clip-test.json").read_text())
WORKS = ("astronaut", "coffee", "chelsea", "rocket")
PROMPTS = {"astronaut": "portrait of an astronaut in a white suit", "coffee": "a cup of coffee on a saucer",
           "chelsea": "a tabby cat looking at the camera", "rocket": "a rocket on the launch pad"}
SEEDS = [0, 1, 2, 3]
METRICS = ("tiled_l2", "ssim", "local_copy", "lpips", "clip")
CONFIGS = {"gen": {"steps": 25, "size": 64}, "score": {"steps": 2, "size": 64}}
ALEX_SHAPES = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3),
               10: (256, 256, 3, 3)}


# -- set-up (once) --------------------------------------------------------------------------------
def setup(tmp: Path) -> dict:
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file
    from skimage import data

    from pytest_memorization.testing import build_tiny_pipeline

    model = build_tiny_pipeline(tmp / "models" / "tiny", seed=0)
    works = tmp / "works"
    works.mkdir()
    for name in WORKS:
        im = getattr(data, name)()
        im = np.stack([im] * 3, -1) if im.ndim == 2 else im[..., :3]
        s = min(im.shape[:2])
        Image.fromarray(im[:s, :s]).resize((64, 64), Image.BICUBIC).save(works / f"{name}.png")
    # LPIPS: a seeded random AlexNet trunk as a torchvision-style file (only features.* is read)
    g = torch.Generator().manual_seed(0)
    sd = {}
    for i, shape in ALEX_SHAPES.items():
        fan_in = shape[1] * shape[2] * shape[3]
        sd[f"features.{i}.weight"] = torch.randn(shape, generator=g) * (2 / fan_in) ** 0.5
        sd[f"features.{i}.bias"] = torch.zeros(shape[0])
    (tmp / "weights").mkdir()
    torch.save(sd, tmp / "weights" / "alexnet-owt-7be5be79.pth")
    # CLIP: the tiny test config with seeded random weights, as a copied-hub-repo folder
    import open_clip

    cfg = tmp / "tiny-clip-bench.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    net = open_clip.create_model("tiny-clip-bench")
    clip = tmp / "clip"
    clip.mkdir()
    (clip / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(clip / "open_clip_model.safetensors"))
    return {"model": str(model), "works": {n: str(works / f"{n}.png") for n in WORKS},
            "weights": str(tmp / "weights"), "clip": str(clip)}


def make_project(tmp: Path, assets: dict, steps: int, size: int) -> Path:
    proj = tmp / f"project-{steps}-{size}"
    proj.mkdir()
    (proj / "pytest.ini").write_text(
        "[pytest]\n"
        f"memorization_metrics = {','.join(METRICS)}\n"
        f"memorization_weights_dir = {assets['weights']}\n"
        f"memorization_clip_pretrained = local-dir:{assets['clip']}\n"
        "memorization_cache_dir = .cache\n"
        "memorization_allow_outside_root = true\n")
    works = "".join(f'\n[[work]]\nid = "{n}"\nimage = "{p}"\nprompts = ["{PROMPTS[n]}"]\n'
                    for n, p in assets["works"].items())
    (proj / "memorization.toml").write_text(
        f'[model]\npretrained = "{assets["model"]}"\nseeds = {SEEDS}\nsteps = {steps}\nguidance_scale = 7.5\n'
        f"height = {size}\nwidth = {size}\n\n[thresholds]\ntiled_l2 = 0.15\n{works}")
    return proj


# -- the plain arm --------------------------------------------------------------------------------
def plain(config_path: str) -> None:
    """What a careful engineer would write by hand, doing exactly the plugin's work."""
    cfg = json.loads(Path(config_path).read_text())
    import contextlib
    import io

    import lpips
    import open_clip
    import torch
    import torch.nn.functional as F
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    from pytest_memorization.metrics import get_metric

    pipe = StableDiffusionPipeline.from_pretrained(cfg["model"], safety_checker=None, requires_safety_checker=False,
                                                   local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def load(p: str) -> torch.Tensor:
        import numpy as np

        return torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1).float() / 255

    refs = torch.stack([load(p) for p in cfg["works"].values()])
    pixel = {n: get_metric(n) for n in ("tiled_l2", "ssim", "local_copy")}
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        lp = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    sd = torch.load(Path(cfg["weights"]) / "alexnet-owt-7be5be79.pth", weights_only=True)
    lp.net.load_state_dict({n: sd["features." + n.split(".", 1)[1]] for n, _ in lp.net.named_parameters()})
    clip = open_clip.create_model(f"local-dir:{cfg['clip']}").eval()
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    csize = clip.visual.image_size[0] if isinstance(clip.visual.image_size, tuple) else clip.visual.image_size

    def lp_feats(x: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate(x, size=(256, 256), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        return [lpips.normalize_tensor(o) for o in lp.net(lp.scaling_layer(x * 2 - 1))]

    def lp_compare(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
        out = torch.zeros(a[0].shape[0], b[0].shape[0])
        for k, (fa, fb) in enumerate(zip(a, b)):
            d = (fa[:, None] - fb[None]) ** 2
            out += lp.lins[k](d.flatten(0, 1)).mean(dim=(2, 3)).view(out.shape)
        return out

    def clip_feats(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != csize:
            x = F.interpolate(x, size=(csize, csize), mode="bicubic", antialias=True).clamp(0, 1)
        return clip.encode_image((x - mean) / std, normalize=True)

    rows = []
    with torch.no_grad():
        ref_feats = {"lpips": lp_feats(refs), "clip": clip_feats(refs),
                     **{n: m.features(refs) for n, m in pixel.items()}}
        for prompt in cfg["prompts"].values():
            images = pipe(prompt=[prompt] * len(cfg["seeds"]), num_inference_steps=cfg["steps"],
                          guidance_scale=7.5, height=cfg["size"], width=cfg["size"], output_type="pt",
                          generator=[torch.Generator().manual_seed(s) for s in cfg["seeds"]]).images
            scores = {n: m.compare(m.features(images), ref_feats[n]) for n, m in pixel.items()}
            scores["lpips"] = lp_compare(lp_feats(images), ref_feats["lpips"])
            scores["clip"] = clip_feats(images) @ ref_feats["clip"].T
            for i, seed in enumerate(cfg["seeds"]):
                rows.append({"prompt": prompt, "seed": seed,
                             "scores": {n: s[i].tolist() for n, s in scores.items()}})
    Path(cfg["out"]).write_text(json.dumps(rows))


# -- driver ---------------------------------------------------------------------------------------
def run(cmd: list[str], cwd: Path, threads: int) -> tuple[float, float]:
    """(wall s, CPU s user+sys) of one whole subprocess."""
    import resource

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.pop("PYTEST_ADDOPTS", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def check_same(proj: Path, plain_out: Path, assets: dict) -> float:
    """Largest |plugin score - plain score| over every image and metric (against the work the plugin chose)."""
    report = json.loads((proj / "report" / "report.json").read_text())
    order = list(assets["works"])
    mine = {(r["prompt"], r["seed"]): r for r in json.loads(plain_out.read_text())}
    assert len(report["results"]) == len(mine) == len(WORKS) * len(SEEDS)
    worst = 0.0
    for r in report["results"]:
        j = order.index(r["work"])
        for n in METRICS:
            worst = max(worst, abs(r["scores"][n] - mine[(r["prompt"], r["seed"])]["scores"][n][j]))
    return worst


def profile(proj: Path, cfg_path: Path, threads: int) -> None:
    import pstats

    for arm, cmd in (("plugin", [sys.executable, "-m", "cProfile", "-o", str(proj / "plugin.prof"), "-m", "pytest",
                                 "-q", "-p", "no:cacheprovider", "--memorization"]),
                     ("plain", [sys.executable, "-m", "cProfile", "-o", str(proj / "plain.prof"), __file__,
                                "--plain", str(cfg_path)])):
        wall = run(cmd, proj, threads)[0]
        st = pstats.Stats(str(proj / f"{arm}.prof"))
        print(f"\n--- cProfile, {arm} arm ({wall:.1f} s wall under the profiler): cumulative s of selected calls")
        keys = ("__call__ (pipeline_stable_diffusion", "from_pretrained", "score_matrices", "features", "compare",
                "content_hash", "_sha256", "load_manifest", "write_report", "save_image", "check_images",
                "get_metric", "pytest_sessionfinish", "_find_and_load", "judge", "record_run", "finish_item",
                "measure_prompt", "plan_for", "load_works", "pairs", "best_over_candidates")
        rows = []
        for (fn, line, name), (_cc, _nc, _tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
            label = f"{name} ({Path(fn).stem}:{line})"
            if any(k.split(" (")[0] == name and (" (" not in k or k.split("(")[1].rstrip(")") in fn) for k in keys):
                rows.append((ct, label))
        seen = set()
        for ct, label in sorted(rows, reverse=True)[:22]:
            if label not in seen and ct >= 0.005:
                seen.add(label)
                print(f"  {ct:7.3f}  {label}")


def micro(tmp: Path) -> None:
    """Per-run and per-item costs that the tiny model hides but real models and catalogues expose."""
    import hashlib

    import torch

    from pytest_memorization.metrics import get_metric
    from pytest_memorization.metrics.cache import ReferenceCache
    from pytest_memorization.model.loading import content_hash

    blob = os.urandom(1 << 28)
    t0 = time.perf_counter()
    hashlib.sha256(blob).hexdigest()
    mem = time.perf_counter() - t0
    folder = tmp / "fake-model"
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes(blob)
    t0 = time.perf_counter()
    content_hash(folder)
    disk = time.perf_counter() - t0
    print(f"sha256: {0.25 / mem:.2f} GB/s in memory; loading.content_hash of a 256 MB folder {disk:.2f} s "
          f"-> {disk * 4:.1f} s per GB (an SD 1.5 fp32 folder is about 5 GB; hashed on every run)")
    cache = ReferenceCache(tmp / "refcache")
    lp = get_metric("lpips", weights="random", seed=0)
    x = torch.rand(1, 3, 64, 64)
    for name, metric, feats in (("clip (512-d)", None, torch.randn(1, 512)), ("lpips alex 256 px", lp, None)):
        m = metric if metric is not None else type("M", (), {"name": "clipstub", "version": "stub-v1"})()
        f = feats if feats is not None else lp.features(x)
        keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(50)]
        for k in keys:
            cache.store(m, k, f)
        t0 = time.perf_counter()
        for k in keys:
            cache.load(m, k)
        per = (time.perf_counter() - t0) / len(keys)
        print(f"reference cache load, {name}: {per * 1e3:.2f} ms per work per call -> {per * 1000:.2f} s per "
              "item per metric against 1000 works (score_matrices reloads every work for every item)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plain", metavar="CONFIG", help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=tuple(CONFIGS))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--micro", action="store_true", help="only the hashing and reference-cache measurements")
    args = ap.parse_args()
    if args.plain:
        plain(args.plain)
        return
    if args.micro:
        with tempfile.TemporaryDirectory() as t:
            micro(Path(t))
        return
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        assets = setup(tmp)
        for name, c in CONFIGS.items():
            if args.only and name != args.only:
                continue
            proj = make_project(tmp, assets, c["steps"], c["size"])
            cfg_path = proj.parent / f"plain-{name}.json"
            plain_out = proj.parent / f"plain-{name}-scores.json"
            cfg_path.write_text(json.dumps({**assets, **c, "seeds": SEEDS, "out": str(plain_out),
                                            "prompts": {n: PROMPTS[n] for n in WORKS}}))
            plugin_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--memorization"]
            plain_cmd = [sys.executable, __file__, "--plain", str(cfg_path)]
            # untimed: both arms once (warms the file cache), and the plugin's scores equal the plain ones
            run([*plugin_cmd, "--memorization-report", "report"], proj, args.threads)
            run(plain_cmd, proj, args.threads)
            diff = check_same(proj, plain_out, assets)
            a: list[tuple[float, float]] = []
            b: list[tuple[float, float]] = []
            for _ in range(args.repeat):
                run(["rm", "-rf", ".cache"], proj, 1)  # no reference-feature cache: same work as the plain arm
                a.append(run(plugin_cmd, proj, args.threads))
                b.append(run(plain_cmd, proj, args.threads))
            parts = [f"{name}: {c['steps']} steps, {c['size']} px, {len(WORKS)} prompts x {len(SEEDS)} seeds, "
                     f"metrics {'+'.join(METRICS)}, {args.threads} thread(s), {args.repeat} runs each; "
                     f"max |score difference| {diff:.2e}"]
            for k, what in ((0, "wall"), (1, "CPU ")):
                xa, xb = [x[k] for x in a], [x[k] for x in b]
                ma, mb = statistics.median(xa), statistics.median(xb)
                parts.append(f"  {what}: plugin median {ma:6.2f} s ({', '.join(f'{x:.2f}' for x in xa)}); plain median "
                             f"{mb:6.2f} s ({', '.join(f'{x:.2f}' for x in xb)}); ratio {ma / mb:.3f}, "
                             f"extra {ma - mb:+.2f} s")
            line = "\n".join(parts)
            print(line, flush=True)
            if args.profile:
                run(["rm", "-rf", ".cache"], proj, 1)
                profile(proj, cfg_path, args.threads)


if __name__ == "__main__":
    main()

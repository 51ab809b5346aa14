"""Real-GPU smoke test and figures (CUDA only; one short run on a lent GPU machine).

    HF_HUB_OFFLINE=1 python bench/gpu.py --out DIR [--size 512] [--steps 25] [--repeat 2]

1. An SD 1.5-shaped pipeline (UNet2DConditionModel's SD 1.x defaults, 860M parameters; CLIP ViT-L/14
   text encoder; the SD VAE) with seeded random weights, saved as a diffusers folder in float16. Real
   weights cannot be downloaded where this runs; the architecture, and so the cost, is SD 1.5's.
2. Four protected works (scikit-image photographs at the generation size), 4 prompts x 4 seeds.
3. Two arms, whole processes, alternated ``--repeat`` times, medians:
   (a) plugin: ``python -m pytest --memorization`` on a manifest (device cuda, dtype float16 -- what
       auto picks on CUDA for SD 1.x --, metrics tiled_l2 + ssim with alignment, the defaults);
   (b) plain: ``StableDiffusionPipeline.from_pretrained(dtype=float16).to("cuda")``, one call per
       prompt with one generator per seed, then the same two metrics called directly on the GPU.
   A plugin run with ``--memorization-report`` is checked to produce finite scores for every image.
4. In-process: generation throughput (images/s) and aligned scoring time per image x work on the
   GPU vs the CPU at this size.
Prints one table; writes ``gpu.json`` to ``--out``.
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
sys.path.insert(0, str(ROOT))
WORKS = ("astronaut", "coffee", "chelsea", "rocket")
PROMPTS = {"astronaut": "portrait of an astronaut in a white suit", "coffee": "a cup of coffee on a saucer",
           "chelsea": "a tabby cat looking at the camera", "rocket": "a rocket on the launch pad"}
SEEDS = [0, 1, 2, 3]
DEV, DTYPE = "cuda", "float16"  # --dry-cpu: cpu, float32


def build_sd15(path: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from pytest_memorization.testing import clip_tokenizer

    tok = clip_tokenizer()
    with torch.device(DEV):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64)
        torch.manual_seed(1)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            sample_size=512)
        torch.manual_seed(2)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072,
                                            num_hidden_layers=12, num_attention_heads=12,
                                            max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, image_encoder=None,
                                   requires_safety_checker=False).to(getattr(torch, DTYPE))
    pipe.save_pretrained(path, safe_serialization=True)
    print(f"   SD 1.5-shaped pipeline: UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.0f}M parameters")


def write_works(folder: Path, size: int) -> dict[str, str]:
    import numpy as np
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in WORKS:
        im = getattr(data, name)()
        im = np.stack([im] * 3, -1) if im.ndim == 2 else im[..., :3]
        s = min(im.shape[:2])
        p = folder / f"{name}.png"
        Image.fromarray(im[:s, :s]).resize((size, size), Image.BICUBIC).save(p)
        out[name] = str(p)
    return out


def make_project(tmp: Path, model: Path, works: dict[str, str], steps: int, size: int) -> Path:
    proj = tmp / "project"
    proj.mkdir()
    (proj / "pytest.ini").write_text("[pytest]\nmemorization_cache_dir = .cache\n"
                                     "memorization_allow_outside_root = true\n")
    entries = "".join(f'\n[[work]]\nid = "{n}"\nimage = "{p}"\nprompts = ["{PROMPTS[n]}"]\n' for n, p in works.items())
    (proj / "memorization.toml").write_text(
        f'[model]\npretrained = "{model}"\nseeds = {SEEDS}\nsteps = {steps}\nguidance_scale = 7.5\n'
        f"height = {size}\nwidth = {size}\n\n[thresholds]\ntiled_l2 = 0.15\nssim = 0.5\n{entries}")
    return proj


def plain(cfg_path: str) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    from pytest_memorization.images import load_image
    from pytest_memorization.metrics import get_metric

    cfg = json.loads(Path(cfg_path).read_text())
    dev, dtype = cfg.get("device", "cuda"), getattr(torch, cfg.get("dtype", "float16"))
    pipe = StableDiffusionPipeline.from_pretrained(cfg["model"], dtype=dtype, local_files_only=True,
                                                   safety_checker=None, requires_safety_checker=False).to(dev)
    pipe.set_progress_bar_config(disable=True)
    refs = torch.stack([load_image(p) for p in cfg["works"].values()]).to(dev)
    metrics = [get_metric(n, device=dev) for n in ("tiled_l2", "ssim")]
    worst = {}
    for name, prompt in PROMPTS.items():
        gens = [torch.Generator(dev).manual_seed(s) for s in SEEDS]
        imgs = pipe(prompt, generator=gens, num_images_per_prompt=len(SEEDS), num_inference_steps=cfg["steps"],
                    guidance_scale=7.5, height=cfg["size"], width=cfg["size"], output_type="pt").images.float()
        for m in metrics:
            worst[f"{name}/{m.name}"] = float(m.score(imgs, refs).min() if m.direction == "distance"
                                              else m.score(imgs, refs).max())
    if dev == "cuda":
        torch.cuda.synchronize()
    Path(cfg["out"]).write_text(json.dumps(worst))


def timed(cmd: list[str], cwd: Path) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t0, p.returncode, (p.stdout + p.stderr)[-3000:]


def in_process(model: Path, works: dict[str, str], steps: int, size: int) -> dict[str, float]:
    import torch
    from diffusers import StableDiffusionPipeline

    from pytest_memorization.images import load_image
    from pytest_memorization.metrics import get_metric

    pipe = StableDiffusionPipeline.from_pretrained(model, dtype=getattr(torch, DTYPE), local_files_only=True).to(DEV)
    pipe.set_progress_bar_config(disable=True)
    prompt = PROMPTS["astronaut"]
    sync = torch.cuda.synchronize if DEV == "cuda" else (lambda: None)
    gens = [torch.Generator(DEV).manual_seed(s) for s in range(8)]
    pipe(prompt, generator=gens[:2], num_images_per_prompt=2, num_inference_steps=2, height=size, width=size)
    sync()
    t0 = time.perf_counter()
    imgs = pipe(prompt, generator=gens, num_images_per_prompt=8, num_inference_steps=steps, guidance_scale=7.5,
                height=size, width=size, output_type="pt").images.float()
    sync()
    gen_s = (time.perf_counter() - t0) / 8
    refs = torch.stack([load_image(p) for p in works.values()])
    out = {"generation_s_per_image": gen_s, "finite": bool(torch.isfinite(imgs).all()),
           "image_std": float(imgs.std())}
    for dev in dict.fromkeys((DEV, "cpu")):
        for name in ("tiled_l2", "ssim"):
            m = get_metric(name, device=dev)
            a, b = imgs[:4].to(dev), refs.to(dev)
            m.score(a[:1], b[:1])
            sync()
            t0 = time.perf_counter()
            m.score(a, b)
            sync()
            out[f"{name}_aligned_{dev}_s_per_pair"] = (time.perf_counter() - t0) / (a.shape[0] * b.shape[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plain", metavar="CONFIG", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--dry-cpu", action="store_true", help="check the script's code paths on a CPU (no figures)")
    args = ap.parse_args()
    global DEV, DTYPE
    if args.dry_cpu:
        DEV, DTYPE = "cpu", "float32"
    if args.plain:
        return plain(args.plain)
    import torch

    if DEV == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs CUDA")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict[str, object] = {"gpu": torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu (dry run)", "torch": torch.__version__,
                              "size": args.size, "steps": args.steps, "images": len(PROMPTS) * len(SEEDS)}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        build_sd15(tmp / "sd15")
        works = write_works(tmp / "works", args.size)
        print(f"   built in {time.perf_counter() - t0:.1f} s")
        proj = make_project(tmp, tmp / "sd15", works, args.steps, args.size)
        cfg = tmp / "plain.json"
        cfg.write_text(json.dumps(dict(model=str(tmp / "sd15"), works=works, steps=args.steps, size=args.size,
                                       out=str(tmp / "plain-out.json"), device=DEV, dtype=DTYPE)))
        plugin_cmd = [sys.executable, "-m", "pytest", "--memorization", "-q", "-p", "no:cacheprovider",
                      f"--memorization-device={DEV}", f"--memorization-dtype={DTYPE}"]
        s, rc, log = timed([*plugin_cmd, "--memorization-report", str(out / "gpu-report")], proj)
        report = json.loads((out / "gpu-report" / "report.json").read_text()) if rc in (0, 1) else {}
        rows = report.get("results", [])
        res["check_run"] = dict(seconds=round(s, 2), exit=rc, rows=len(rows),
                                verdicts=sorted({str(r.get("verdict")) for r in rows}),
                                model=[report.get("run", {}).get(k) for k in ("device", "dtype")],
                                worst_tiled_l2=min((r["scores"].get("tiled_l2", 9) for r in rows), default=None))
        print(f"   checked plugin run: exit {rc}, {len(rows)} result rows, {s:.1f} s")
        if rc not in (0, 1):
            print(log)
        times: dict[str, list[float]] = {"plugin": [], "plain": []}
        for _ in range(args.repeat):
            times["plugin"].append(timed(plugin_cmd, proj)[0])
            times["plain"].append(timed([sys.executable, __file__, "--plain", str(cfg)], ROOT)[0])
        med = {k: statistics.median(v) for k, v in times.items()}
        res["whole_process_s"] = {k: [round(x, 2) for x in v] for k, v in times.items()}
        res["plugin_over_plain"] = round(med["plugin"] / med["plain"], 3)
        res["in_process"] = in_process(tmp / "sd15", works, args.steps, args.size)
    (out / "gpu.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

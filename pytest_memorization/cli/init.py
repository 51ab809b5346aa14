"""``pytest-memorization init [DIR]``: a project that runs ``pytest --memorization`` at once, offline.

It writes a ``memorization.toml``, a ``pytest.ini`` (the project root), a tiny real Stable Diffusion
pipeline built by ``pytest_memorization.testing.build_tiny_pipeline`` (seeded random weights, the
real CLIP tokenizer) and two drawn works. The tiny model draws noise-like textures, so nothing it
makes is close to the works: the gate passes. Swap ``[model] pretrained`` for your own model and
the works for your own, and the same project gates a real model.
"""

from __future__ import annotations

from pathlib import Path

from ._paths import CLIError

MANIFEST = """\
# The memorization gate of this project: run `pytest --memorization`.
# Every key: the manifest reference of the docs (docs/manifest.md).
[model]
pretrained = "models/tiny"      # a diffusers folder; replace with your model (folder, .safetensors + config, or cached hub id)
seeds = [0, 1]                  # every prompt is generated with every seed
steps = 4                       # a real model wants 25-50; the tiny one is fast at 4
guidance_scale = 7.5
height = 64                     # the tiny model's size; 512 or 1024 for a real one
width = 64

[thresholds]
tiled_l2 = 0.15                 # a copy scores at or below (Carlini et al. 2023)
ssim = 0.5                      # a copy scores at or above

[[work]]
id = "sunrise"
image = "works/sunrise.png"     # relative to this file
prompts = ["a sunrise over the sea", "an orange sun above calm water"]

[[work]]
id = "tiles"
image = "works/tiles.png"
prompts = ["a blue and white tiled floor"]
"""

PYTEST_INI = """\
[pytest]
# `pytest` without --memorization reports these checks as skipped; CI sets memorization_required = true.
memorization_report = report
"""

GITIGNORE = """\
report/
.memorization_cache/
"""

FILES = ("memorization.toml", "pytest.ini", ".gitignore", "works/sunrise.png", "works/tiles.png", "models/tiny")


def _sunrise(path: Path) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (128, 128))
    d = ImageDraw.Draw(img)
    for y in range(72):  # sky: dark blue to orange
        t = y / 71
        d.line([(0, y), (127, y)], fill=(int(40 + 215 * t), int(40 + 110 * t), int(120 - 80 * t)))
    for y in range(72, 128):  # sea
        t = (y - 72) / 55
        d.line([(0, y), (127, y)], fill=(int(20 + 20 * t), int(60 + 30 * t), int(110 + 40 * t)))
    d.ellipse([44, 40, 84, 80], fill=(255, 210, 90))
    for y in range(82, 128, 7):  # the sun's glitter on the water
        d.line([(52 - (y - 82) // 3, y), (76 + (y - 82) // 3, y)], fill=(230, 170, 80), width=2)
    img.save(path)


def _tiles(path: Path) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (128, 128), (245, 245, 240))
    d = ImageDraw.Draw(img)
    for i in range(8):
        for j in range(8):
            x, y = 16 * i, 16 * j
            if (i + j) % 2:
                d.rectangle([x, y, x + 15, y + 15], fill=(30, 70, 160))
            else:
                d.ellipse([x + 4, y + 4, x + 11, y + 11], fill=(30, 70, 160))
    img.save(path)


def scaffold(folder: str | Path, *, force: bool = False) -> list[Path]:
    """Write the starter project into ``folder`` (created if missing); returns the paths written.
    Existing files are never overwritten unless ``force``."""
    root = Path(folder)
    if root.exists() and not root.is_dir():
        raise CLIError(f"{root} is a file; give a folder (pytest-memorization init my-gate)")
    existing = [f for f in FILES if (root / f).exists()]
    if existing and not force:
        raise CLIError(f"{root} already has {', '.join(existing)}; choose an empty folder or pass --force")
    (root / "works").mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("memorization.toml", MANIFEST), ("pytest.ini", PYTEST_INI), (".gitignore", GITIGNORE)):
        (root / name).write_text(text)
        written.append(root / name)
    _sunrise(root / "works" / "sunrise.png")
    _tiles(root / "works" / "tiles.png")
    written += [root / "works" / "sunrise.png", root / "works" / "tiles.png"]

    from ..testing import build_tiny_pipeline  # torch and diffusers: only now

    written.append(build_tiny_pipeline(root / "models" / "tiny", seed=0))
    return written


NEXT = """\
wrote a memorization gate in {root}:
  memorization.toml   the model, the protected works and their prompts
  models/tiny         a tiny real Stable Diffusion pipeline (random weights, 64 px)
  works/              two protected works
next:
  cd {root}
  pytest --memorization                       # 3 items, each prompt x 2 seeds scored against both works
  then open report/index.html, and put your own model and works in memorization.toml"""


def cmd_init(args) -> int:  # noqa: ANN001 - argparse.Namespace
    written = scaffold(args.dir, force=args.force)
    print(NEXT.format(root=written[0].parent))
    return 0


def add_parser(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    p = sub.add_parser("init", help="scaffold a gate that runs at once: manifest, tiny model, two works")
    p.add_argument("dir", nargs="?", default=".", metavar="DIR", help="folder to write into (default: here)")
    p.add_argument("--force", action="store_true", help="overwrite the files init writes if they exist")
    p.set_defaults(func=cmd_init)

"""Render the docs' pictures from a real run: python docs/make_pictures.py [WORKDIR]

A real `pytest --memorization` run on a tiny pipeline and LoRA built offline
(`pytest_memorization.testing`), with works that the run really copies: the LoRA's own output (the
LoRA gate fails: the LoRA crosses, the base does not), a drawn work under img2img (the curve), and a
detail cut out of one of the model's images (`local_copy` finds it and draws its box). The HTML report
and the GitHub step summary of that run are screenshotted with headless chromium; bar charts of
figures measured elsewhere are drawn with Pillow from the numbers in the docs' tables (each chart
names its table). Writes docs/img/*.png. Machine paths never appear: the run happens in WORKDIR and
the pictures show paths relative to it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
IMG = DOCS / "img"
ROOT = DOCS.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

LORA_PROMPT = "a photo of sks person"
DETAIL_PROMPT = "a lighthouse on a cliff"
MODEL = '[model]\npretrained = "../models/tiny"\nseeds = [0, 1]\nheight = 64\nwidth = 64\n'


def build(work: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from pytest_memorization.cli.init import _sunrise
    from pytest_memorization.model.generation import MemorizationModel
    from pytest_memorization.model.loading import ModelSource, load
    from pytest_memorization.reports.pngs import save_image
    from pytest_memorization.testing import build_tiny_lora, build_tiny_pipeline

    tiny = build_tiny_pipeline(work / "models" / "tiny", seed=0)
    lora = build_tiny_lora(tiny, work / "loras" / "sks", seed=0, init_scale=4.0)  # far from the base
    works = work / "works"
    works.mkdir()
    pipe, info = load(ModelSource(str(tiny), lora=str(lora), device="cpu"))
    img = MemorizationModel(pipe, info).generate([LORA_PROMPT], [0], steps=4, height=64, width=64).images[0]
    save_image(img, works / "subject.png")
    pipe, info = load(ModelSource(str(tiny), device="cpu"))
    img = MemorizationModel(pipe, info).generate([DETAIL_PROMPT], [1], steps=12, height=64, width=64).images[0]
    save_image(img, works / "frame.png")
    Image.open(works / "frame.png").crop((14, 10, 54, 50)).save(works / "detail.png")  # 40 x 40 of 64 x 64
    (works / "frame.png").unlink()
    _sunrise(works / "sunrise.png")
    (work / "pytest.ini").write_text("[pytest]\nmemorization_device = cpu\nmemorization_report_works = embed\n")
    (work / "lora").mkdir()
    (work / "lora" / "memorization.toml").write_text(
        MODEL.replace("seeds = [0, 1]", "seeds = [0, 1, 2]") + 'steps = 4\nlora = "../loras/sks"\ngate = "lora"\n\n'
        f'[[work]]\nid = "subject"\nimage = "../works/subject.png"\nprompts = ["{LORA_PROMPT}"]\n')
    (work / "plain").mkdir()
    (work / "plain" / "memorization.toml").write_text(
        'metrics = ["tiled_l2", "ssim", "local_copy"]\n\n' + MODEL + 'steps = 12\n\n'
        f'[[work]]\nid = "detail"\nimage = "../works/detail.png"\nprompts = ["{DETAIL_PROMPT}"]\n\n'
        '[[work]]\nid = "sunrise"\nimage = "../works/sunrise.png"\nprompts = ["a sunrise over the sea"]\n'
        "img2img = { strengths = [0.25, 0.5, 0.75], min_safe_strength = 0.5 }\n")


def run(work: Path) -> None:
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(work / "summary.md"), "PYTHONPATH": str(ROOT),
           "MEMORIZATION_CACHE_KEY_FILE": str(work / "cache.key")}
    subprocess.run([sys.executable, "-m", "pytest", "--memorization", "--memorization-report=report", "-p",
                    "no:cacheprovider", "-q"], cwd=work, env=env, check=False)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise SystemExit("headless chromium is needed: apt-get install -y chromium")


def shoot(html: Path, out: Path, width: int, height: int) -> None:
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={width},{height}", f"--screenshot={out}", html.as_uri()],
                   check=True, capture_output=True, timeout=120)
    trim(out)


def trim(png: Path, pad: int = 12) -> None:
    """Cut the blank page below and right of the content."""
    from PIL import Image, ImageChops

    im = Image.open(png).convert("RGB")
    bg = Image.new("RGB", im.size, im.getpixel((im.width - 1, im.height - 1)))
    box = ImageChops.difference(im, bg).getbbox()
    if box:
        im.crop((0, 0, min(im.width, box[2] + pad), min(im.height, box[3] + pad))).save(png)


def unpath(text: str, work: Path) -> str:
    """The run's folder left out of every path shown (also as markdown escapes it: '_' as '\\_')."""
    for form in (str(work), str(work).replace("_", "\\_")):
        text = text.replace(f"{form}/", "").replace(form, ".")
    return text


# GitHub renders these shortcodes as emoji; headless chromium here may have no emoji font
EMOJI = {":boom:": '<b style="color:#8250df">\u2739</b>', ":x:": '<b style="color:#cf222e">\u2716</b>',
         ":warning:": '<b style="color:#bf8700">\u26a0</b>', ":white_check_mark:": '<b style="color:#1a7f37">\u2714</b>'}


def card(report: Path, item: str, out: Path, width: int = 1100, height: int = 900) -> None:
    """A screenshot of the report with only ``item``'s card shown."""
    text = unpath((report / "index.html").read_text(), report.parent)
    ids = re.findall(r'<section class="row[^"]*"[^>]*id="(r\d+)">(.*?)</section>', text, flags=re.S)
    rid = next((i for i, body in ids if item in body), None)
    if rid is None:
        raise SystemExit(f"no card for {item} in {report / 'index.html'}")
    css = (f"<style>body > :not(main), main#results > section.row:not(#{rid}) {{display: none !important}}"
           "</style></head>")
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text)  # a local copy: our style applies
    page = report / f"_{rid}.html"
    page.write_text(text.replace("</head>", css, 1))
    shoot(page, out, width, height)
    page.unlink()


def summary(work: Path, out: Path) -> None:
    import markdown

    text = unpath((work / "summary.md").read_text(), work)
    for code, char in EMOJI.items():
        text = text.replace(code, char)
    body = markdown.markdown(text, extensions=["tables"])
    page = work / "summary.html"
    page.write_text(
        "<html><head><meta charset='utf-8'><style>body{font:14px -apple-system,Segoe UI,Helvetica,Arial,sans-serif;"
        "margin:24px;color:#1f2328;max-width:900px} table{border-collapse:collapse} td,th{border:1px solid #d0d7de;"
        "padding:6px 13px} th{background:#f6f8fa} h2,h3{border-bottom:1px solid #d8dee4;padding-bottom:.3em}"
        f"</style></head><body>{body}</body></html>")
    shoot(page, out, 960, 1200)


def bars(out: Path, title: str, source: str, rows: list[tuple[str, float, str]], unit: str,
         ref: tuple[float, str] | None = None) -> None:
    """A horizontal bar chart: (label, value, colour) rows; ``ref`` draws a dashed line (a threshold)."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 15)
        small = ImageFont.truetype("DejaVuSans.ttf", 12)
    except OSError:
        font = small = ImageFont.load_default()
    w, left, bar_h, gap = 820, 300, 24, 12
    h = 70 + len(rows) * (bar_h + gap) + 40
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    d.text((16, 12), title, fill="black", font=font)
    top = max(v for _, v, _ in rows + ([(None, ref[0], None)] if ref else []))  # type: ignore[list-item]
    scale = (w - left - 90) / (top * 1.05)
    y = 50
    for label, v, colour in rows:
        d.text((16, y + 4), label, fill="black", font=small)
        d.rectangle([left, y, left + v * scale, y + bar_h], fill=colour)
        d.text((left + v * scale + 6, y + 4), f"{v:g}{unit}", fill="black", font=small)
        y += bar_h + gap
    if ref:
        x = left + ref[0] * scale
        for yy in range(44, y, 8):
            d.line([(x, yy), (x, yy + 4)], fill="#444", width=2)
        d.text((x + 4, y), ref[1], fill="#444", font=small)
    d.text((16, h - 22), source, fill="#666", font=small)
    im.save(out)


def charts() -> None:
    red, green, grey, blue = "#d1495b", "#66a182", "#8d99ae", "#2e86ab"
    bars(IMG / "demo-margins.png", "Demo: closest tiled L2 to a protected work (a copy is at or below 0.15)",
         "source: docs/demo.md, table of measured tiled L2 (20 DDIM steps, 64 px, seeds 0-3)",
         [("memorizer vs astronaut, weakest copy", 0.145, red), ("memorizer vs retina, weakest copy", 0.076, red),
          ("face LoRA (weight 1) vs face, weakest", 0.050, red), ("its base (weight 0) vs face, closest", 0.411, green),
          ("clean twin, closest of 100 pairs", 0.283, green)], "", ref=(0.15, "threshold 0.15"))
    bars(IMG / "detector-cost.png", "UNet evaluations per (prompt, seed): reference-free detectors",
         "source: docs/benchmarks.md, detectors side by side (bench/detectors.py, demo memorizer)",
         [("noise magnitude (Wen, k=1)", 2.00, grey), ("zero-step, default (1 timestep)", 1.02, blue),
          ("zero-step, paper (2 timesteps)", 2.04, grey), ("LoRA delta (face LoRA)", 2.05, grey)], "")
    bars(IMG / "scoring-speed.png", "Cost per image x work, ratio to aligned tiled L2 + SSIM (lower is cheaper)",
         "source: docs/benchmarks.md (bench/local_copy.py, bench/hashes.py; 1 thread, 2-core machine)",
         [("local_copy, 64 px", 0.32, blue), ("local_copy, 512 px", 0.18, blue), ("pHash, 64 px (vs tiled L2)", 0.02, grey),
          ("PDQ, 512 px (vs tiled L2)", 0.22, grey), ("tiled L2 + SSIM", 1.0, green)], "x")
    bars(IMG / "vae-floor.png", "Memorizer's tiled-L2 margin to 0.15, without and with the VAE floor",
         "source: docs/metrics.md, VAE floor table (demo memorizer, worst of 5 works)",
         [("against the work", 0.002, grey), ("against its VAE round trip", 0.074, blue)], "")


def main(argv: list[str]) -> int:
    IMG.mkdir(exist_ok=True)
    charts()
    work = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="memorization-pictures-"))
    if not (work / "report" / "report.json").exists():
        if not (work / "works").is_dir():
            work.mkdir(parents=True, exist_ok=True)
            build(work)
        run(work)
    report = work / "report"
    card(report, "subject[0]", IMG / "lora-gate-card.png")
    card(report, "sunrise[img2img]", IMG / "img2img-curve.png")
    card(report, "detail[0]", IMG / "local-copy-box.png")
    summary(work, IMG / "step-summary.png")
    for png in sorted(IMG.glob("*.png")):
        print(png.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

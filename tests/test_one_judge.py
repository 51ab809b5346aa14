"""One judge for every path: the same inputs (a copy, a non-copy, a work with its own stricter
threshold, a work whose own laxer threshold the command line's floor overrides, a near-flat image
whose SSIM-only "copy" the flat guard downgrades, and NaN pixels) go through a diffusers manifest
item, a generator-hook item, ``assert_not_memorized``, ``pytest-memorization rescore`` and an
``-n 2`` run. Every path must give the same verdict and the same finding rules for every image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy.fft  # noqa: F401  - imported before any pytester run (it cannot load twice)
import pytest
import support  # noqa: F401
import torch
from gate_projects import COPY_PROMPT

SEEDS = [0, 1]
FLOORS = ["--memorization-threshold=tiled_l2=0.15,ssim=0.5"]  # the CI's thresholds, on every path
CASES = ("copy", "other", "strict", "floor", "flat", "nan")
MODEL_OF = {"copy": "tiny", "other": "tiny", "strict": "tiny", "floor": "tiny", "flat": "flat", "nan": "nan"}

GENERATOR = '''
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent


def generate(prompts, seeds, settings):
    """The images the diffusers path generated for this case (as 8-bit PNGs), or NaN for "nan"."""
    case = settings.negative_prompt  # the case rides on a setting the tiny images do not use
    if case == "nan":
        return [np.full((settings.height, settings.width, 3), np.nan, dtype=np.float32) for _ in seeds]
    return [Image.open(HERE / "generated" / case / f"{s}.png") for s in seeds]
'''

PYTEST_TEST = '''
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pytest_memorization import assert_not_memorized
from pytest_memorization.errors import BrokenOutputError, MemorizationError
from pytest_memorization.images import load_image
from pytest_memorization.records import Work

HERE = Path(__file__).parent
CASES = json.loads((HERE / "cases.json").read_text())


@pytest.mark.parametrize("case", sorted(CASES))
def test_case(case):
    spec = CASES[case]
    works = [Work(w["id"], load_image(HERE / w["image"]), thresholds=w["thresholds"]) for w in spec["works"]]
    if case == "nan":
        images = [np.full((64, 64, 3), np.nan, dtype=np.float32) for _ in (0, 1)]
    else:  # numpy arrays, as a user holding pipe(..., output_type="np") images would pass them
        images = [np.asarray(Image.open(HERE / "generated" / case / f"{s}.png")) for s in (0, 1)]
    try:
        assert_not_memorized(images, works, prompts=[spec["prompt"]] * 2, seeds=[0, 1])
    except (MemorizationError, BrokenOutputError):
        pass  # the verdict is read from the report, as for every other path
'''


def _variant(src: Path, dst: Path, kind: str) -> Path:
    """The tiny model with its VAE's last layer changed: ``flat`` (weights x 0.05: near-flat images,
    structure ~0.005, not constant) or ``nan`` (NaN bias: NaN pixels)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(src, local_files_only=True)
    conv = pipe.vae.decoder.conv_out
    with torch.no_grad():
        if kind == "nan":
            conv.bias.fill_(float("nan"))
        else:
            conv.weight.mul_(0.05)
            conv.bias.fill_(0.1)
    pipe.save_pretrained(dst, safe_serialization=True)
    return dst


def _generate(model: Path) -> Any:
    from pytest_memorization.model.generation import MemorizationModel
    from pytest_memorization.model.loading import ModelSource, load

    pipe, info = load(ModelSource(str(model)))
    return MemorizationModel(pipe, info).generate([COPY_PROMPT], SEEDS, steps=2, height=64, width=64).images


def _works(case: str, g0: Any, root: Path) -> list[dict[str, Any]]:
    """The protected work(s) of a case, written under works/<case>/, built from the seed-0 image."""
    from support import photo

    from pytest_memorization.reports.pngs import save_image

    gen = torch.Generator().manual_seed(7)
    thresholds: dict[str, float] = {}
    if case in ("copy",):
        img = g0
    elif case in ("other", "nan"):
        img = photo("astronaut")
    elif case == "strict":  # a noisy near-copy: past the default 0.15, inside its own stricter 0.4
        img = (g0 + 0.25 * torch.randn(g0.shape, generator=gen)).clamp(0, 1)
        thresholds = {"tiled_l2": 0.4}
    elif case == "floor":  # a near-copy whose own thresholds would let it pass; the floors must win
        img = (g0 + 0.02 * torch.randn(g0.shape, generator=gen)).clamp(0, 1)
        thresholds = {"tiled_l2": 0.001, "ssim": 0.9999}
    else:  # flat: the near-flat image with one tile of strong structure: SSIM agrees, tiled L2 does not
        img = g0.clone()
        yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
        img[:, :16, :16] = ((yy // 2 + xx // 2) % 2).float()
    path = root / "works" / case / "w.png"
    save_image(img, path)
    return [{"id": f"{case}-work", "image": f"works/{case}/w.png", "thresholds": thresholds}]


def _manifest(case: str, works: list[dict[str, Any]], *, generator: bool) -> str:
    model = ('generator = "gen:generate"\nnegative_prompt = "' + case + '"' if generator
             else f'pretrained = "../../models/{MODEL_OF[case]}"')
    text = f"[model]\n{model}\nseeds = {SEEDS}\nsteps = 2\nheight = 64\nwidth = 64\n"
    for w in works:
        text += f'\n[[work]]\nid = "{w["id"]}"\nimage = "../../{w["image"]}"\nprompts = ["{COPY_PROMPT}"]\n'
        if w["thresholds"]:
            text += "thresholds = { " + ", ".join(f"{k} = {v}" for k, v in w["thresholds"].items()) + " }\n"
    return text


def _judged(report: Path) -> dict[str, list[tuple[int, str, tuple[str, ...]]]]:
    """case -> sorted (seed, verdict, rules of its non-pass findings) of every row in report.json."""
    out: dict[str, list[tuple[int, str, tuple[str, ...]]]] = {}
    for r in json.loads((report / "report.json").read_text())["results"]:
        case = next(c for c in CASES if f"{c}-work" in r["item"] or f"/{c}/" in r["item"] or f"[{c}]" in r["item"])
        rules = tuple(sorted({f["rule"] for f in r["findings"] if f["severity"] != "pass"}))
        out.setdefault(case, []).append((r["seed"], r["verdict"], rules))
    return {k: sorted(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def judged_paths(tiny_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run every path once over all cases; return path -> case -> rows (and the case facts)."""
    from pytest_memorization.cli.main import main as cli
    from pytest_memorization.metrics import get_metric
    from pytest_memorization.reports.pngs import save_image

    root = tmp_path_factory.mktemp("one-judge")
    models = root / "models"
    shutil.copytree(tiny_pipeline, models / "tiny")
    _variant(tiny_pipeline, models / "flat", "flat")
    _variant(tiny_pipeline, models / "nan", "nan")
    generated = {m: _generate(models / m) for m in ("tiny", "flat")}
    cases: dict[str, Any] = {}
    facts: dict[str, dict[str, float]] = {}
    for case in CASES:
        g = generated.get(MODEL_OF[case])
        g0 = g[0] if g is not None else torch.rand(3, 64, 64)
        works = _works(case, g0, root)
        if g is not None:
            for s, img in zip(SEEDS, g):
                save_image(img, root / "generated" / case / f"{s}.png")
            work = support.photo("astronaut") if case == "other" else None
            from pytest_memorization.images import load_image

            work = load_image(root / works[0]["image"]) if work is None else work
            facts[case] = {n: float(get_metric(n).compare(g[:1], work[None])[0, 0]) for n in ("tiled_l2", "ssim")}
        cases[case] = {"prompt": COPY_PROMPT, "works": works}
        for kind, gen in (("diffusers", False), ("hook", True)):
            folder = root / kind / case
            folder.mkdir(parents=True)
            (folder / "memorization.toml").write_text(_manifest(case, works, generator=gen))
    (root / "cases.json").write_text(json.dumps(cases))
    (root / "gen.py").write_text(GENERATOR)
    (root / "test_python.py").write_text(PYTEST_TEST)
    (root / "pytest.ini").write_text(f"[pytest]\nmemorization_cache_dir = {root / '.cache'}\n")

    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--memorization", *FLOORS,
                               *args], cwd=root, capture_output=True, text=True, timeout=900)

    out: dict[str, Any] = {"facts": facts}
    runs = {"diffusers": run("diffusers", "--memorization-report=r-diffusers", "-p", "no:xdist"),
            "hook": run("hook", "--memorization-report=r-hook", "-p", "no:xdist"),
            "python": run("test_python.py", "--memorization-report=r-python", "-p", "no:xdist"),
            "xdist": run("diffusers", "--memorization-report=r-xdist", "-n", "2")}
    for name, proc in runs.items():
        assert (root / f"r-{name}" / "report.json").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
        out[name] = _judged(root / f"r-{name}")
    rescored: dict[str, Any] = {}
    for case in CASES:
        dst = root / f"r-rescore-{case}"
        cli(["rescore", str(root / "r-diffusers"), str(root / "diffusers" / case / "memorization.toml"),
             "--threshold", "tiled_l2=0.15,ssim=0.5", "--out", str(dst)])
        rescored[case] = _judged(dst).get(case, [])
    out["rescore"] = rescored
    out["root"] = root
    return out


def test_the_cases_are_what_they_claim(judged_paths: dict[str, Any]) -> None:
    """The inputs really are a copy, a non-copy, a stricter-threshold case, a floor case and a
    near-flat SSIM-only case (measured on the seed-0 image), so the verdicts below mean something."""
    f = judged_paths["facts"]
    assert f["copy"]["tiled_l2"] < 0.01 and f["other"]["tiled_l2"] > 0.15 and f["other"]["ssim"] < 0.5
    assert 0.15 < f["strict"]["tiled_l2"] < 0.4 and f["strict"]["ssim"] < 0.5
    assert 0.001 < f["floor"]["tiled_l2"] < 0.15
    assert f["flat"]["tiled_l2"] > 0.15 and f["flat"]["ssim"] >= 0.5


EXPECTED = {  # verdict and the rules that set it, per case (both seeds where they agree)
    "copy": ("fail", "threshold"), "other": ("pass", None), "strict": ("fail", "threshold"),
    "floor": ("fail", "threshold"), "flat": ("warn", "flat_guard"), "nan": ("error", "error"),
}


@pytest.mark.slow
@pytest.mark.parametrize("path", ["diffusers", "hook", "python", "rescore", "xdist"])
@pytest.mark.parametrize("case", CASES)
def test_every_path_judges_alike(judged_paths: dict[str, Any], case: str, path: str) -> None:
    rows = judged_paths[path][case]
    assert rows == judged_paths["diffusers"][case], f"{path} judged {case} differently"
    verdict, rule = EXPECTED[case]
    assert rows, f"{path}: no row for {case}"
    seed0 = rows[0] if case == "nan" else next(r for r in rows if r[0] == 0)
    assert seed0[1] == verdict and (rule is None or rule in seed0[2]), rows


@pytest.mark.slow
def test_a_hook_run_report_shows_its_images_and_rescore_reads_them(judged_paths: dict[str, Any]) -> None:
    """A generator hook's rows carry their saved PNGs (the HTML card shows them, not "no image"),
    and ``rescore`` re-scores that report."""
    from pytest_memorization.cli.main import main as cli

    root = judged_paths["root"]
    doc = json.loads((root / "r-hook" / "report.json").read_text())
    rows = [r for r in doc["results"] if r["verdict"] != "error"]
    assert rows and all(r["image"] and (root / "r-hook" / r["image"]).is_file() for r in rows)
    html = (root / "r-hook" / "index.html").read_text()
    assert html.count('src="images/') >= len(rows)
    code = cli(["rescore", str(root / "r-hook"), str(root / "hook" / "copy" / "memorization.toml"),
                "--out", str(root / "r-hook-rescored")])
    assert code == 1  # the nan case's error row is carried over as an error, and copy fails
    again = json.loads((root / "r-hook-rescored" / "report.json").read_text())["results"]
    assert sum(r["image"] is not None for r in again) == len(rows)
    assert {r["seed"]: r["verdict"] for r in again if r["item"].startswith("hook/copy/")} == {0: "fail", 1: "pass"}


def test_a_nan_noise_magnitude_is_an_error_in_the_python_helper_as_in_the_rule(tiny_pipeline: Path) -> None:
    """``assert_not_memorized_prompt`` judges its score with the detectors' own rule: a NaN score
    (here from a UNet whose last layer outputs NaN) is an error, never a pass."""
    from pytest_memorization import assert_not_memorized_prompt
    from pytest_memorization.errors import MemorizationError
    from pytest_memorization.model.generation import MemorizationModel
    from pytest_memorization.model.loading import ModelSource, load

    pipe, info = load(ModelSource(str(tiny_pipeline)))
    with torch.no_grad():
        pipe.unet.conv_out.bias.fill_(float("nan"))
    model = MemorizationModel(pipe, info)
    with pytest.raises(MemorizationError, match=r"ERROR: noise_magnitude: score nan .* not a finite number"):
        assert_not_memorized_prompt(model, COPY_PROMPT, [0], threshold=1e9, height=64, width=64)

"""Fail closed on bad input: one table, each case run through a real `pytest --memorization`.

For every case: the exit status, a message naming the file, key or option and the fix, and
that nothing was half-written (no baseline, no stray temporary files, and no report claiming
results when the run never started).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

GOOD = """
[model]
pretrained = "models/tiny"
seeds = [0]
steps = 2
height = 64
width = 64

[[work]]
id = "astronaut"
image = "works/astronaut.png"
prompts = ["portrait of an astronaut"]
"""

USAGE, COLLECT, FAILED = pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERRUPTED, pytest.ExitCode.TESTS_FAILED


def edit(old: str, new: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        p = root / "memorization.toml"
        text = p.read_text()
        assert old in text, old
        p.write_text(text.replace(old, new, 1))
    return apply


def write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return apply


def remove(name: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        p = root / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return apply


def nothing(root: Path) -> None:
    pass


def link_out(name: str) -> Callable[[Path], None]:
    """Move models/tiny/<name> out of the model folder and leave a symlink to it in its place."""
    def apply(root: Path) -> None:
        p = root / "models" / "tiny" / name
        away = root / "elsewhere" / name.replace("/", "_")
        away.parent.mkdir(exist_ok=True)
        p.rename(away)
        p.symlink_to(away, target_is_directory=away.is_dir())
    return apply


def image(name: str, size: tuple[int, int], frames: int = 1, fmt: str = "PNG") -> Callable[[Path], None]:
    """Write a work image: all zeros (a bomb compresses to a few KB), or ``frames`` frames of noise."""
    def apply(root: Path) -> None:
        import numpy as np
        from PIL import Image

        if frames == 1 and size[0] * size[1] > 10**6:
            Image.new("L", size).save(root / name, fmt)
            return
        rng = np.random.default_rng(0)
        imgs = [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(frames)]
        imgs[0].save(root / name, fmt, save_all=frames > 1, append_images=imgs[1:])
    return apply


def both(*changes: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        for change in changes:
            change(root)
    return apply


def calibration(threshold: str) -> str:
    return ('{"schema_version": 1, "threshold": ' + threshold + ', "target_fpr": 0.01, "n_prompts": 100, '
            '"seeds": [0], "steps": 1, "settings": {}, "fingerprint": "any", "scores": {}, "empirical_fpr": 0.01, '
            '"fpr_resolution": 0.01}')


NOISE = edit("[[work]]", "[detectors]\nnoise_magnitude = { steps = 1 }\n\n[[work]]")
ITEM = "memorization.toml::astronaut::0"


# (case id, change to the project, extra args, exit status, message pattern)
CASES = [
    # manifest
    ("toml-syntax", edit("steps = 2", "steps = "), [], COLLECT, "*memorization.toml: invalid TOML*line 5, column 9*"),
    ("unknown-key", edit("prompts =", "promts ="), [], COLLECT, "*key 'work[[]0].promts': unknown key 'promts'; did you mean 'prompts'?*"),
    ("missing-image", edit("works/astronaut.png", "works/nope.png"), [], COLLECT, "*key 'work[[]0].image': file */works/nope.png does not exist; fix the path*"),
    ("corrupt-image", write("works/astronaut.png", b"\x89PNG\r\n\x1a\n garbage"), [], COLLECT, "*key 'work[[]0].image': */astronaut.png: cannot read image*re-export it*"),
    ("sha256-mismatch", edit('prompts =', 'sha256 = "' + "0" * 64 + '"\nprompts ='), [], COLLECT, "*key 'work[[]0].sha256': */astronaut.png has changed: expected sha256 000*"),
    ("duplicate-id", edit("[[work]]", '[[work]]\nid = "astronaut"\nimage = "works/astronaut.png"\nprompts = ["x"]\n\n[[work]]'), [], COLLECT, "*duplicate id 'astronaut'*ids must be unique*"),
    ("empty-prompts", edit('prompts = ["portrait of an astronaut"]', "prompts = []"), [], COLLECT, "*key 'work[[]0].prompts': is empty; list at least one*"),
    ("work-90-megapixels", image("works/astronaut.png", (10000, 9000)), [], COLLECT, "*key 'work[[]0].image': */astronaut.png: image is 10000x9000 = 90 MP, more than 50 MP; downscale it*"),
    ("work-60-megapixels", image("works/astronaut.png", (10000, 6000)), [], COLLECT, "*image is 10000x6000 = 60 MP, more than 50 MP*"),
    ("work-1x1", image("works/astronaut.png", (1, 1)), [], COLLECT, "*key 'work[[]0].image': */astronaut.png: 1x1 is too small to compare*"),
    ("work-tiny", image("works/astronaut.png", (12, 40)), [], COLLECT, "*astronaut.png: 12x40 is too small to compare (less than 16 pixels a side*"),
    ("work-animated-png", image("works/astronaut.png", (32, 32), frames=2), [], COLLECT, "*astronaut.png: animated image (2 frames); only its first frame would be compared*"),
    ("work-animated-gif", both(image("works/anim.gif", (32, 32), frames=3, fmt="GIF"), edit("works/astronaut.png", "works/anim.gif")), [], COLLECT, "*anim.gif: animated image (3 frames)*"),
    ("generation-height", edit("height = 64", "height = 65536"), [], COLLECT, "*key 'model.height': 65536 is more than 4096 pixels*"),
    ("generation-width", edit("width = 64", "width = 8192"), [], COLLECT, "*key 'model.width': 8192 is more than 4096 pixels*"),
    ("threshold-type", edit("[[work]]", '[thresholds]\ntiled_l2 = "0.15"\n\n[[work]]'), [], COLLECT, "*key 'thresholds.tiled_l2': '0.15' is a string, not a number*"),
    ("threshold-range", edit("[[work]]", "[thresholds]\ntiled_l2 = 1.5\n\n[[work]]"), [], COLLECT, "*key 'thresholds.tiled_l2': 1.5 is out of range*[[]0, 1]*"),
    ("threshold-unknown-metric", edit("[[work]]", "[thresholds]\nclipp = 0.9\n\n[[work]]"), [], COLLECT, "*unknown metric 'clipp'; did you mean 'clip'?*"),
    ("negative-seed", edit("seeds = [0]", "seeds = [0, -1]"), [], COLLECT, "*key 'model.seeds': -1 *"),
    ("float-seed", edit("seeds = [0]", "seeds = [0.5]"), [], COLLECT, "*key 'model.seeds'*not an array of non-negative integers*"),
    ("missing-model", edit('pretrained = "models/tiny"\n', ""), [], COLLECT, "*key 'model.pretrained': missing model*--memorization-model*"),
    ("size-not-multiple-of-8", edit("height = 64", "height = 60"), [], COLLECT, "*key 'model.height': 60 is not a positive multiple of 8*"),
    ("path-outside-root", edit("works/astronaut.png", "../outside.png"), [], COLLECT, "*outside the project root*--memorization-allow-outside-root*"),
    ("img2img-strength", edit('prompts =', 'img2img = { strengths = [1.5] }\nprompts ='), [], COLLECT, "*key 'work[[]0].img2img.strengths[[]0]': 1.5 is out of range*"),
    ("lora-gate-without-lora", edit("seeds = [0]", 'gate = "lora"\nseeds = [0]'), [], COLLECT, "*key 'model.gate'*no lora is given*"),
    # settings that would make a copy undetectable (config/policy.py), in a manifest
    ("blind-tiled-l2", edit("[[work]]", "[thresholds]\ntiled_l2 = 0.0\n\n[[work]]"), [], COLLECT, "*key 'thresholds.tiled_l2': tiled_l2 = 0 can never flag a copy*"),
    ("blind-ssim", edit("[[work]]", "[thresholds]\nssim = 1.0\n\n[[work]]"), [], COLLECT, "*key 'thresholds.ssim': ssim = 1 can never flag a copy*"),
    ("blind-work-threshold", edit('prompts =', 'thresholds = { lpips = 0.0 }\nprompts ='), [], COLLECT, "*key 'work[[]0].thresholds.lpips': lpips = 0 can never flag a copy*"),
    ("steps-1", edit("steps = 2", "steps = 1"), [], COLLECT, "*key 'model.steps': 1 denoising step(s) is fewer than the minimum 2*"),
    ("lora-scale-0-gate", edit("seeds = [0]", 'lora = "models/tiny"\nlora_scale = 0.0\ngate = "lora"\nseeds = [0]'), [], COLLECT, "*key 'model.lora_scale': LoRA scale 0 under the LoRA gate*"),
    ("img2img-no-safe-strength", edit('prompts =', 'img2img = { strengths = [0.5] }\nprompts ='), [], COLLECT, "*key 'work[[]0].img2img.min_safe_strength': missing; without it a copy*"),
    ("img2img-safe-above-all", edit('prompts =', 'img2img = { strengths = [0.3], min_safe_strength = 0.5 }\nprompts ='), [], COLLECT, "*min_safe_strength': 0.5 is above every strength*"),
    # ... and on the command line or in the ini file, checked exactly as a manifest's
    ("opt-threshold-negative", nothing, ["--memorization-threshold", "tiled_l2=-1,ssim=2"], USAGE, "*--memorization-threshold*tiled_l2 = -1 is out of range*"),
    ("opt-threshold-above", nothing, ["--memorization-threshold", "ssim=2"], USAGE, "*--memorization-threshold*ssim = 2 is out of range; ssim lies in [[]-1, 1]*"),
    ("opt-threshold-blind", nothing, ["--memorization-threshold", "tiled_l2=0"], USAGE, "*--memorization-threshold*tiled_l2 = 0 can never flag a copy*"),
    ("opt-threshold-inf", nothing, ["--memorization-threshold", "clip=inf"], USAGE, "*--memorization-threshold*clip = inf is not a finite number*"),
    ("opt-threshold-unknown", nothing, ["--memorization-threshold", "tiledl2=0.15"], USAGE, "*--memorization-threshold*unknown metric 'tiledl2'*"),
    ("ini-threshold-blind", write("pytest.ini", "[pytest]\nmemorization_threshold = ssim=1.0\n"), [], USAGE, "*(ini memorization_threshold)*ssim = 1 can never flag a copy*"),
    ("opt-steps-1", nothing, ["--memorization-steps", "1"], USAGE, "*--memorization-steps*fewer than the minimum 2*"),
    ("ini-steps-0", write("pytest.ini", "[pytest]\nmemorization_steps = 0\n"), [], USAGE, "*(ini memorization_steps) = 0: expected an integer >= 1*"),
    ("opt-lora-scale-0-gate", nothing, ["--memorization-lora-gate", "--memorization-lora-scale", "0"], USAGE, "*--memorization-lora-scale*LoRA scale 0 under the LoRA gate*"),
    # output paths of the wrong kind
    ("opt-report-is-a-file", write("rep.txt", "x"), ["--memorization-report", "rep.txt"], USAGE, "*--memorization-report rep.txt: */rep.txt is a file, expected a folder*"),
    ("ini-report-is-a-file", both(write("rep.txt", "x"), write("pytest.ini", "[pytest]\nmemorization_report = rep.txt\n")), ["--memorization-report", "rep.txt"], USAGE, "*rep.txt is a file, expected a folder*"),
    ("opt-save-is-a-folder", write("saved/keep", "x"), ["--memorization-save", "saved"], USAGE, "*--memorization-save saved: */saved is a folder, expected a file*"),
    ("opt-compare-is-a-folder", write("saved/keep", "x"), ["--memorization-compare", "saved"], USAGE, "*--memorization-compare saved: */saved is a folder, expected a file*"),
    # options
    ("opt-seeds", nothing, ["--memorization-seeds", "0,x"], USAGE, "*--memorization-seeds*'x' is not a non-negative integer*"),
    ("opt-threshold", nothing, ["--memorization-threshold", "tiled_l2"], USAGE, "*--memorization-threshold*not METRIC=VALUE*"),
    ("opt-device", nothing, ["--memorization-device", "gpu"], USAGE, "*--memorization-device (ini memorization_device) = 'gpu'*"),
    ("opt-report-works", nothing, ["--memorization-report-works", "all"], USAGE, "*--memorization-report-works*embed, thumbnail, omit*"),
    ("opt-compare-fail", nothing, ["--memorization-compare-fail", "clip=0.1"], USAGE, "*--memorization-compare-fail*not METRIC:VALUE*"),
    ("opt-shard", nothing, ["--memorization-shard", "2/2"], USAGE, "*--memorization-shard*0 <= I < N*"),
    ("opt-manifest-missing", nothing, ["--memorization-manifest", "nope.toml"], USAGE, "*--memorization-manifest nope.toml: no such file*"),
    ("ini-batch-size", write("pytest.ini", "[pytest]\nmemorization_batch_size = 0\n"), [], USAGE, "*--memorization-batch-size (ini memorization_batch_size) = 0: expected an integer >= 1*"),
    # checkpoints, LoRA, weights, baselines: the run starts, the item is an ERROR
    ("model-missing", nothing, ["--memorization-model", "models/none"], FAILED, "*CheckpointError: model 'models/none' not found*"),
    ("model-no-unet-weights", remove("models/tiny/unet/diffusion_pytorch_model.safetensors"), [], FAILED, "*CheckpointError: */unet: no weights file for component 'unet'*"),
    ("model-component-linked-out", link_out("unet"), [], FAILED, "*CheckpointError: */models/tiny/unet links to */elsewhere/unet, outside the model folder*--memorization-allow-outside-root*"),
    ("model-weights-linked-out", link_out("vae/diffusion_pytorch_model.safetensors"), [], FAILED, "*CheckpointError: */vae/diffusion_pytorch_model.safetensors links to *outside the model folder*"),
    ("model-pickle", write("models/m.ckpt", b"x"), ["--memorization-model", "models/m.ckpt"], FAILED, "*CheckpointError: */models/m.ckpt: pickle checkpoints (.ckpt) can run code*--memorization-allow-pickle*"),
    ("lora-missing", nothing, ["--memorization-lora", "loras/none"], FAILED, "*CheckpointError: LoRA loras/none not found*pytorch_lora_weights.safetensors*"),
    ("lpips-weights-missing", nothing, ["--memorization-threshold", "lpips=0.3", "--memorization-weights-dir", "weights"], FAILED, "*alexnet-owt-7be5be79.pth*"),
    ("noise-magnitude-uncalibrated", edit("[[work]]", "[detectors]\nnoise_magnitude = { steps = 1 }\n\n[[work]]"), [], FAILED, "*noise_magnitude has no threshold*--memorization-calibrate*"),
    ("baseline-missing", nothing, ["--memorization-compare", "old.json"], FAILED, "*--memorization-compare=*/old.json: no such baseline*--memorization-save=*"),
    # non-finite numbers read from files are errors, never a pass
    ("calibration-nan", both(NOISE, write("memorization-calibration.json", calibration("NaN"))), [], FAILED, "*memorization-calibration.json: key 'threshold' is nan, not a finite number*"),
    ("calibration-infinity", both(NOISE, write("memorization-calibration.json", calibration("Infinity"))), [], FAILED, "*key 'threshold' is inf, not a finite number*"),
    ("calibration-string", both(NOISE, write("memorization-calibration.json", calibration('"0.5"'))), [], FAILED, "*key 'threshold' is '0.5', not a finite number*"),
    ("baseline-nan", write("old.json", '{"schema": 2, "entries": {"x": {"scores": {"tiled_l2": NaN}}}}'), ["--memorization-compare", "old.json"], FAILED, "*old.json: entry *'tiled_l2' is nan, not a finite number*"),
    ("baseline-string", write("old.json", '{"schema": 2, "entries": {"x": {"scores": {"ssim": "0.9"}}}}'), ["--memorization-compare", "old.json"], FAILED, "*old.json: entry *'ssim' is '0.9', not a finite number*"),
    ("opt-compare-fail-inf", nothing, ["--memorization-compare-fail", "tiled_l2:inf"], USAGE, "*--memorization-compare-fail*tolerance for tiled_l2 must be a finite number*"),
    ("opt-gate-tolerance-inf", nothing, ["--memorization-lora-gate-tolerance", "ssim:Infinity"], USAGE, "*--memorization-lora-gate-tolerance*must be a finite number*"),
    ("baseline-corrupt", write("old.json", "{oops"), ["--memorization-compare", "old.json"], FAILED, "*old.json: not a readable baseline JSON*"),
]


@pytest.fixture
def bad_project(pytester: pytest.Pytester, tiny_pipeline: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    from support import save_photo

    monkeypatch.setenv("TORCH_HOME", str(pytester.path / "torch_home"))  # no LPIPS backbone anywhere
    shutil.copytree(tiny_pipeline, pytester.path / "models" / "tiny")
    save_photo("astronaut", pytester.path / "works" / "astronaut.png")
    save_photo("coffee", pytester.path / "outside.png")
    (pytester.path / "memorization.toml").write_text(GOOD)
    (pytester.path / "tox.ini").write_text(f"[pytest]\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    return pytester


def test_the_table_has_at_least_25_cases() -> None:
    assert len(CASES) >= 25 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case, change, args, status, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case: str, change: Callable[[Path], None], args: list[str], status: int, pattern: str,
                   bad_project: pytest.Pytester) -> None:
    root = bad_project.path
    baseline_before = (root / "old.json").read_bytes() if (root / "old.json").exists() else None
    change(root)
    if case == "path-outside-root":
        (root / "memorization.toml").rename(root / "sub.toml")
        (root / "sub").mkdir()
        (root / "sub" / "pyproject.toml").write_text("")
        (root / "sub" / "memorization.toml").write_text((root / "sub.toml").read_text())
        (root / "sub.toml").unlink()
    result = bad_project.runpytest("--memorization", "--memorization-report", "rep",
                                   "--memorization-save", "new.json", *args)
    assert result.ret == status, result.stdout.str()[-2000:]
    out = result.stdout.lines + result.stderr.lines
    from _pytest.pytester import LineMatcher

    LineMatcher(out).fnmatch_lines([pattern])
    # nothing half-written
    assert not (root / "new.json").exists(), "a run with errors must not write a baseline"
    assert not [p for p in root.rglob("*") if ".tmp" in p.name], "temporary files left behind"
    if status != FAILED:
        assert not (root / "rep" / "report.json").exists(), "a run that never started must not write a report"
    else:
        report = json.loads((root / "rep" / "report.json").read_text())
        assert report["summary"]["error"] >= 1 and report["summary"].get("pass", 0) == 0
        assert all(r["verdict"] == "error" for r in report["results"])
    if baseline_before is not None:
        assert (root / "old.json").read_bytes() == baseline_before


FORGED = "\\u001b[2J\\r\\n::error file=x::forged"  # TOML escapes: ESC, CR, a newline and a workflow command
INJECTIONS = [
    ("manifest-key", edit("prompts =", f'"pro{FORGED}" = ["x"]\nprompts ='), [], COLLECT),
    ("work-prompt", both(edit('"portrait of an astronaut"', f'"portrait{FORGED}"'),
                         edit("[[work]]", "[thresholds]\ntiled_l2 = 1.0\n\n[[work]]")), [], FAILED),
    ("option-path", nothing, ["--memorization-manifest", "a\x1b[31m\n::error::b.toml"], USAGE),
    ("model-path", nothing, ["--memorization-model", "m\r\n::notice::x"], FAILED),
]


@pytest.mark.parametrize("case, change, args, status", INJECTIONS, ids=[c[0] for c in INJECTIONS])
def test_control_characters_in_printed_values_are_escaped(case: str, change: Callable[[Path], None], args: list[str],
                                                          status: int, bad_project: pytest.Pytester) -> None:
    change(bad_project.path)
    result = bad_project.runpytest("--memorization", "--memorization-report", "rep", *args)
    assert result.ret == status, result.stdout.str()[-2000:]
    out = "\n".join(result.stdout.lines + result.stderr.lines)
    assert "\x1b" not in out and "\r" not in out
    assert not [line for line in out.splitlines() if line.lstrip().startswith("::")], "a forged workflow command"
    assert "\\x1b" in out or "\\x0d" in out  # shown, escaped

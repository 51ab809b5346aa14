"""A hostile pull request against the gate: one real pytest run per way a PR could loosen it, break
it or abuse its output. Each case must end in a failure, an error or a usage error with a clear
message, and leave every file outside the report folder as it was.

The works are real: ``works/fox.png`` is the tiny model's own output for its prompt (a copy the
model really draws), so "fails" means the gate found the copy on real generation and real metrics.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from gate_projects import COPY_PROMPT, TINY_MODEL_TOML, gate_project

FOX = f'[[work]]\nid = "fox"\nimage = "works/fox.png"\nprompts = ["{COPY_PROMPT}"]\n'
SKIP = {".cache", "__pycache__", ".pytest_cache", "r", ".r.partial"}


@dataclass
class Case:
    setup: Callable[[pytest.Pytester, dict[str, Any]], list[str]]  # writes the PR's files, returns extra args
    outcome: str  # "failed", "errors", "usage"
    message: str  # a glob line in the output
    env: dict[str, str] = field(default_factory=dict)
    check: Callable[[pytest.Pytester, Any], None] | None = None
    others_pass: bool = False  # other (clean) items of the run may pass


def _manifest(pytester: pytest.Pytester, top: str = "", model: str = "", works: str = FOX) -> None:
    (pytester.path / "memorization.toml").write_text(
        top + TINY_MODEL_TOML.format(prefix="", seeds="[0]") + model + works)


def _policy(ctx: dict[str, Any], text: str, waivers: str | None = None) -> str:
    """A policy in the base branch's checkout (outside the project the PR controls)."""
    base: Path = ctx["base"]
    (base / "policy.toml").write_text(text)
    if waivers is not None:
        (base / "waivers.toml").write_text(waivers)
    return f"--memorization-policy={base / 'policy.toml'}"


def _report(pytester: pytest.Pytester) -> dict[str, Any]:
    return json.loads((pytester.path / "r" / "report.json").read_text())


# -- the PR waives its own copy ----------------------------------------------------------------
def waive_own_copy(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    _manifest(p, works=FOX + 'waive = { reason = "ours", until = 9999-12-31 }\n')
    return [_policy(ctx, "[waivers]\nmax_days = 90\n")]


def waiver_time_zone(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    _manifest(p, works=FOX + 'waive = { reason = "ours", until = 2027-01-01T00:00:00+14:00 }\n')
    return []


def waiver_too_long(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    from pytest_memorization.images import sha256_file

    _manifest(p)
    sha = sha256_file(p.path / "works" / "fox.png")
    return [_policy(ctx, '[waivers]\nmax_days = 30\nfile = "waivers.toml"\n',
                    f'[[waiver]]\nwork = "fox"\nsha256 = "{sha}"\nreason = "licensed"\nuntil = 9999-12-31\n')]


# -- the PR narrows what is scored, or loosens thresholds --------------------------------------
def narrow_metrics(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    _manifest(p, top='metrics = ["pdq"]\n')
    return [_policy(ctx, '[metrics]\nalways = ["tiled_l2", "ssim"]\n[thresholds]\ntiled_l2 = 0.15\nssim = 0.5\n'),
            "--memorization-report=r"]


def check_narrow(p: pytest.Pytester, result: Any) -> None:
    (row,) = _report(p)["results"]
    assert {"tiled_l2", "ssim", "pdq"} <= set(row["scores"]), row["scores"]


def loosen_thresholds(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    import io

    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(p.path / "works" / "fox.png").convert("RGB")).astype(np.int16)
    buf = io.BytesIO()  # the copy, a little brighter: tiled L2 about 0.05, far above the PR's 0.001
    Image.fromarray(np.clip(a + 13, 0, 255).astype(np.uint8)).save(buf, "PNG")
    (p.path / "works" / "fox.png").write_bytes(buf.getvalue())
    _manifest(p, top="[thresholds]\ntiled_l2 = 0.001\nssim = 0.9999\n")
    return ["--memorization-report=r"]


def check_loosen(p: pytest.Pytester, result: Any) -> None:
    (row,) = _report(p)["results"]
    assert row["thresholds"]["tiled_l2"] == 0.15 and row["thresholds"]["ssim"] == 0.5
    assert 0.001 < row["scores"]["tiled_l2"] <= 0.15  # the PR's threshold alone would have passed it


# -- the PR changes how the run is set up ------------------------------------------------------
def ini_shard(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    _manifest(p)
    p.makeini(f"[pytest]\nmemorization_cache_dir = {p.path / '.cache'}\nmemorization_shard = 1/2\n")
    return [_policy(ctx, "")]


def ini_lora_scale(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    _manifest(p)
    p.makeini(f"[pytest]\nmemorization_cache_dir = {p.path / '.cache'}\nmemorization_lora_scale = 0.01\n")
    return [_policy(ctx, "[generation]\nlora_scale = 1.0\n")]


def forged_calibration(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    (p.path / "memorization-calibration.json").write_text(json.dumps({"schema_version": 1, "threshold": 1e9}))
    _manifest(p, model="[detectors]\nnoise_magnitude = { steps = 1 }\n")
    return [_policy(ctx, "")]


def manifest_detector_threshold(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    _manifest(p, model="[detectors]\nnoise_magnitude = { steps = 1, threshold = 1e9 }\n")
    return [_policy(ctx, "")]


def few_seeds(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    _manifest(p)
    return [_policy(ctx, "[generation]\nmin_seeds = 2\n")]


def untrusted_generator(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    (p.path / "prgen.py").write_text("def generate(prompts, seeds, settings):\n    raise SystemExit('stole it')\n")
    (p.path / "memorization.toml").write_text('[model]\ngenerator = "prgen:generate"\nseeds = [0]\nsteps = 2\n'
                                              "height = 64\nwidth = 64\n" + FOX)
    return [_policy(ctx, "")]


# -- the PR forges the cache -------------------------------------------------------------------
def forged_cache(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    """A first run (the base branch's, with the CI secret) fills the cache; the PR, without the secret,
    rewrites its entry as a clean image, sealed with a key of its own."""
    import torch

    from pytest_memorization import _io
    from pytest_memorization.model.gencache import GenerationCache

    _manifest(p)
    first = p.runpytest("--memorization", "--noconftest", "-p", "no:cacheprovider")
    first.assert_outcomes(failed=1)
    entries = list((p.path / ".cache").rglob("generations/*.safetensors"))
    assert entries
    _io._SECRET[:] = [b"the pull request's own key, not the CI secret........"]
    for e in entries:
        GenerationCache(e.parent.parent).put(e.stem, torch.zeros(3, 64, 64))
    _io._SECRET.clear()
    return ["--noconftest", "-W", "default"]


# -- data loss ---------------------------------------------------------------------------------
def report_is_works(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    _manifest(p)
    return ["--memorization-report=works"]


def report_is_root(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    _manifest(p)
    return ["--memorization-report=."]


def report_holds_manifest(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    sub = p.mkdir("gate")
    (sub / "memorization.toml").write_text(TINY_MODEL_TOML.format(prefix="../", seeds="[0]")
                                           + FOX.replace("works/", "../works/"))
    return ["--memorization-report=gate"]


# -- injection ---------------------------------------------------------------------------------
EVIL = r"\u001b[2J\r\n::error file=setup.py::owned"


def waiver_reason_injection(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    _manifest(p, works=FOX + f'waive = {{ reason = "{EVIL}", until = 2020-01-01 }}\n')
    return []


def file_name_injection(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    from PIL import Image

    name = "flat\x1b[31m\r\n::error::owned.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(p.path / "works" / name, "PNG")
    _manifest(p, works=FOX + '[[work]]\nid = "flat"\nimage = "works/flat\\u001b[31m\\r\\n::error::owned.png"\n'
                             'prompts = ["a grey square"]\n')
    return ["-W", "default"]


def markdown_url(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    _manifest(p)
    return ["--memorization-report=r", "--memorization-report-url=https://ci.example/r)![x](https://evil.example/x.png"]


# -- tracebacks and cost -----------------------------------------------------------------------
def raising_generator(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    (p.path / "badgen.py").write_text("def generate(prompts, seeds, settings):\n"
                                      "    raise RuntimeError('the hook broke')\n")
    (p.path / "memorization.toml").write_text('[model]\ngenerator = "badgen:generate"\nseeds = [0]\nsteps = 2\n'
                                              "height = 64\nwidth = 64\n" + FOX)
    return []


def lora_missing_tensors(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    from safetensors.torch import load_file, save_file

    src = ctx["tiny_lora"]
    src = next(src.glob("*.safetensors")) if src.is_dir() else src
    tensors = {k: v for k, v in load_file(str(src)).items() if "lora_B" not in k and "lora.up" not in k}
    (p.path / "lora").mkdir()
    save_file(tensors, str(p.path / "lora" / "pytorch_lora_weights.safetensors"))
    _manifest(p, model='lora = "lora"\n')
    return []


def huge_work(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    from PIL import Image

    img = Image.open(p.path / "works" / "fox.png").convert("RGB")
    img.resize((64 * 109, 64 * 109), Image.NEAREST).save(p.path / "works" / "fox.png", compress_level=1)  # 48.7 MP
    _manifest(p)
    return []


def flat_work_nan(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(p.path / "works" / "red.png")
    _manifest(p, top='metrics = ["tiled_l2", "ssim", "local_copy"]\n',
              works='[[work]]\nid = "red"\nimage = "works/red.png"\nprompts = ["a red square"]\n')
    return ["-W", "ignore::UserWarning"]


def shared_thumbnail(p: pytest.Pytester, ctx: dict[str, Any]) -> list[str]:
    from support import save_photo

    for name, image in (("a", "fox.png"), ("b", "coffee.png")):
        sub = p.mkdir(name)
        (sub / "memorization.toml").write_text(TINY_MODEL_TOML.format(prefix="../", seeds="[0]")
                                               + FOX.replace("works/fox.png", f"../works/{image}"))
    save_photo("coffee", p.path / "works" / "coffee.png")
    return ["--memorization-report=r"]


def check_thumbnails(p: pytest.Pytester, result: Any) -> None:
    rows = {r["item"].split("/")[0]: r for r in _report(p)["results"]}
    assert rows["a"]["work_image"] != rows["b"]["work_image"], rows
    from PIL import Image

    a, b = (Image.open(p.path / "r" / rows[k]["work_image"]).convert("RGB").tobytes() for k in ("a", "b"))
    assert a != b  # each manifest's report row shows its own work


CASES: dict[str, Case] = {
    "waive-own-copy": Case(waive_own_copy, "failed", "*waiver of work 'fox' was not applied*policy*"),
    "waiver-time-zone": Case(waiver_time_zone, "errors", "*waive.until*is a date-time; write a plain date*"),
    "waiver-too-long": Case(waiver_too_long, "errors", "*waiver of work 'fox' runs until 9999-12-31, longer than "
                                                       "the policy's 30 days*"),
    "narrow-metrics": Case(narrow_metrics, "failed", "*fox*", check=check_narrow),
    "loosen-thresholds": Case(loosen_thresholds, "failed", "*fox*", check=check_loosen),
    "ini-shard": Case(ini_shard, "usage", "*sets memorization_shard*sharding comes from the command line only*"),
    "ini-lora-scale": Case(ini_lora_scale, "usage", "*sets memorization_lora_scale, which a run under the policy*"),
    "forged-calibration": Case(forged_calibration, "errors", "*calibration file*is not trusted by the policy*"),
    "manifest-detector-threshold": Case(manifest_detector_threshold, "errors",
                                        "*a detector threshold comes from a calibration file the policy trusts*"),
    "too-few-seeds": Case(few_seeds, "errors", "*1 seed(s) is fewer than the policy's minimum 2*"),
    "untrusted-generator": Case(untrusted_generator, "errors", "*generator hook 'prgen:generate' is not trusted*"),
    "forged-cache": Case(forged_cache, "failed", "*its seal does not match*",
                         env={"MEMORIZATION_CACHE_KEY": "ci-secret-" + "s" * 40}),
    "report-is-works": Case(report_is_works, "usage", "*works exists and was not written by pytest-memorization*"),
    "report-is-rootdir": Case(report_is_root, "usage", "*is the root folder; replacing it with the report would*"),
    "report-holds-manifest": Case(report_holds_manifest, "usage", "*holds the manifest*"),
    "waiver-reason-injection": Case(waiver_reason_injection, "failed", "*expired on 2020-01-01*"),
    "file-name-injection": Case(file_name_injection, "errors", "*single colour*"),
    "markdown-url": Case(markdown_url, "usage", "*--memorization-report-url*expected an http(s) URL*"),
    "raising-generator": Case(raising_generator, "errors", "*generator badgen:generate raised RuntimeError: the hook "
                                                           "broke (at *badgen.py:2)*"),
    "lora-missing-tensors": Case(lora_missing_tensors, "errors", "*LoRA *is incomplete: * adapter matrices lack their "
                                                                 "pair*lora_B*"),
    "huge-work": Case(huge_work, "failed", "*fox*"),
    "flat-work-nan": Case(flat_work_nan, "errors", "*local_copy*NaN*The work: 'red' (*red.png)*flat*"),
    "shared-thumbnail": Case(shared_thumbnail, "failed", "*fox*", check=check_thumbnails, others_pass=True),
}


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if f.is_file() and not (set(rel.parts) & SKIP):
            out[str(rel)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_pull_request_ends_in_a_clear_failure(name: str, pytester: pytest.Pytester, tiny_pipeline: Path,
                                                        tiny_lora: Path, model_copy_png: bytes,
                                                        tmp_path_factory: pytest.TempPathFactory,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_memorization import _io

    case = CASES[name]
    monkeypatch.delenv("MEMORIZATION_POLICY", raising=False)
    monkeypatch.delenv("MEMORIZATION_CACHE_KEY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.setattr(_io, "_SECRET", [])
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    gate_project(pytester, tiny_pipeline, photos=(), files={"fox.png": model_copy_png})
    ctx = {"base": tmp_path_factory.mktemp("base"), "tiny_lora": tiny_lora}
    args = case.setup(pytester, ctx)
    before = _snapshot(pytester.path)
    result = pytester.runpytest("--memorization", "-p", "no:cacheprovider", *args)
    out = result.stdout.str() + result.stderr.str()
    if case.outcome == "usage":
        assert result.ret == pytest.ExitCode.USAGE_ERROR, out
        result.stderr.fnmatch_lines([case.message])
    else:
        outcomes = result.parseoutcomes()
        assert outcomes.get(case.outcome, 0) >= 1 and not outcomes.get("xfailed"), out
        assert case.others_pass or not outcomes.get("passed"), out
        result.stdout.fnmatch_lines([case.message])
    assert "\x1b" not in out and "\r" not in out, "a raw escape or carriage return reached the terminal"
    assert not any(line.lstrip().startswith("::") for line in out.splitlines()), "a workflow command line was forged"
    assert len(out.splitlines()) < 400, "a traceback instead of a clean error"
    assert _snapshot(pytester.path) == before, "a file outside the report folder changed"
    if case.check is not None:
        case.check(pytester, result)

"""The generator hook: any generator behind `package.module:function` runs through the whole gate
(reference metrics, reports); model-internal checks say they are not applicable. The ComfyUI
example runs against a stub server on 127.0.0.1 that this test starts and stops."""

from __future__ import annotations

import io
import json
import shutil
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy.fft  # noqa: F401  - imported here, not first inside a pytester run (it cannot load twice)
import pytest
import support  # noqa: F401  - likewise: scikit-image's photos
import torch

from pytest_memorization.errors import BrokenOutputError, MemorizationConfigError

ROOT = Path(__file__).resolve().parent.parent

MYGEN = '''
from pathlib import Path

import torch

WORK = Path(__file__).parent / "works" / "astronaut.png"


def generate(prompts, seeds, settings):
    """A copy of the work for astronaut prompts, seeded noise otherwise."""
    from PIL import Image

    out = []
    for prompt, seed in zip(prompts, seeds):
        if "astronaut" in prompt:
            out.append(Image.open(WORK))
        else:
            g = torch.Generator().manual_seed(seed)
            out.append(torch.rand(3, settings.height, settings.width, generator=g))
    return out
'''

MANIFEST = """
[model]
generator = "{generator}"
seeds = [0, 1]
steps = 3
height = 64
width = 64
{extra}
[thresholds]
tiled_l2 = 0.15

[[work]]
id = "astronaut"
image = "works/astronaut.png"
prompts = ["an astronaut", "a bowl of fruit"]
"""


@pytest.fixture
def hook_project(pytester: pytest.Pytester) -> pytest.Pytester:
    from support import save_photo

    save_photo("astronaut", pytester.mkdir("works") / "astronaut.png")
    (pytester.path / "mygen.py").write_text(MYGEN)
    pytester.makeini(f"[pytest]\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    return pytester


def test_an_in_repo_generator_is_gated_like_a_model(hook_project: pytest.Pytester) -> None:
    (hook_project.path / "memorization.toml").write_text(MANIFEST.format(generator="mygen:generate", extra=""))
    result = hook_project.runpytest("--memorization", "--memorization-report", "rep")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*work 'astronaut' <- prompt 'an astronaut', seed 0: tiled_l2 0.0*"])
    report = json.loads((hook_project.path / "rep" / "report.json").read_text())
    run = report["run"]
    assert run["model"] == "generator:mygen:generate" and run["family"] == "generator" and run["model_kind"] == "generator"
    verdicts = {(r["prompt"], r["seed"]): r["verdict"] for r in report["results"]}
    assert verdicts == {("an astronaut", 0): "fail", ("an astronaut", 1): "fail",
                        ("a bowl of fruit", 0): "pass", ("a bowl of fruit", 1): "pass"}


def test_baselines_work_on_a_generators_images(hook_project: pytest.Pytester) -> None:
    (hook_project.path / "memorization.toml").write_text(MANIFEST.format(generator="mygen:generate", extra=""))
    hook_project.runpytest("--memorization", "--memorization-save", "base.json").assert_outcomes(passed=1, failed=1)
    base = json.loads((hook_project.path / "base.json").read_text())
    assert len(base["entries"]) == 2 and base["fingerprint"]["device"] == "external"
    result = hook_project.runpytest("--memorization", "--memorization-compare", "base.json")
    result.assert_outcomes(passed=1, failed=1)  # unchanged: only the copy fails, nothing worsened
    assert "worsened" not in result.stdout.str()


@pytest.mark.parametrize(("extra", "message"), [
    ('\n[detectors]\nnoise_magnitude = { threshold = 1.0 }\n', "*noise_magnitude is not applicable to external generator*"),
    ('gate = "lora"\nlora = "works/astronaut.png"\n', "*LoRA gate are not applicable to an external generator*"),
])
def test_model_internal_checks_are_errors_that_say_not_applicable(hook_project: pytest.Pytester, extra: str,
                                                                   message: str) -> None:
    manifest = MANIFEST.format(generator="mygen:generate", extra="")
    if extra.startswith("\n["):
        manifest = manifest.replace("[thresholds]", extra.strip() + "\n\n[thresholds]")
    else:
        manifest = manifest.replace("width = 64\n", "width = 64\n" + extra)
    (hook_project.path / "memorization.toml").write_text(manifest)
    result = hook_project.runpytest("--memorization")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([message])


def test_the_option_names_the_generator_and_a_bad_name_is_a_clear_error(hook_project: pytest.Pytester) -> None:
    (hook_project.path / "memorization.toml").write_text(MANIFEST.format(generator="mygen:nope", extra=""))
    result = hook_project.runpytest("--memorization", "--memorization-generator", "mygen:generate")
    result.assert_outcomes(passed=1, failed=1)  # the option beats the manifest
    result = hook_project.runpytest("--memorization")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*generator 'mygen:nope': mygen has no callable nope*"])
    (hook_project.path / "memorization.toml").write_text(  # no model in the manifest: the option gives it
        MANIFEST.format(generator="x:y", extra="").replace('generator = "x:y"\n', ""))
    hook_project.runpytest("--memorization", "--memorization-generator", "mygen:generate").assert_outcomes(
        passed=1, failed=1)
    (hook_project.path / "memorization.toml").write_text(MANIFEST.format(generator="mygen.generate", extra=""))
    result = hook_project.runpytest("--memorization")
    result.stdout.fnmatch_lines(["*model.generator*is not \"package.module:function\"*"])


@pytest.mark.parametrize(("output", "message"), [
    (lambda n, s: torch.rand(n + 1, 3, 8, 8), r"returned 3 images for 2 \(prompt, seed\) pairs"),
    (lambda n, s: torch.full((n, 3, 8, 8), float("nan")), "NaN or Inf pixels"),
    (lambda n, s: torch.rand(n, 3, 8, 8) * 255, r"values outside \[0, 1\]"),
    (lambda n, s: torch.zeros(n, 3, 8, 8), "generated image is black"),
    (lambda n, s: "not images", "returned a str"),
])
def test_a_generator_that_returns_bad_images_is_an_error(output: Any, message: str) -> None:
    from pytest_memorization.model.hook import GeneratorModel

    model = GeneratorModel("x:y", lambda prompts, seeds, settings: output(len(prompts), settings))
    with pytest.raises(BrokenOutputError, match=message):
        model.generate(["a", "b"], [0], height=8, width=8)
    from pytest_memorization.detectors.denoiser_noise import model_noise_magnitude
    from pytest_memorization.records import GenerationSettings

    with pytest.raises(MemorizationConfigError, match="not applicable to external generator"):
        model_noise_magnitude(model, ["a"], [0], GenerationSettings(height=8, width=8))


# -- the documented ComfyUI example against a local stub server -------------------------------------------
class StubComfyUI(ThreadingHTTPServer):
    """ComfyUI's HTTP API in miniature: /prompt, /history/<id> (pending once, then done), /view.
    Serves at most MAX_REQUESTS requests, then stops itself."""

    MAX_REQUESTS = 60

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), StubHandler)
        self.jobs: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.requests = 0
        self.lock = threading.Lock()


class StubHandler(BaseHTTPRequestHandler):
    server: StubComfyUI

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, body: bytes, ctype: str = "application/json", code: int = 200) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _count(self) -> bool:
        with self.server.lock:
            self.server.requests += 1
            over = self.server.requests > self.server.MAX_REQUESTS
        if over:
            self._send(b"{}", code=503)
            threading.Thread(target=self.server.shutdown, daemon=True).start()
        return not over

    def do_POST(self) -> None:
        if not self._count():
            return
        graph = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["prompt"]
        pid = f"id{len(self.server.jobs)}"
        self.server.jobs[pid] = {"seed": graph["5"]["inputs"]["seed"], "steps": graph["5"]["inputs"]["steps"],
                                 "text": graph["2"]["inputs"]["text"], "width": graph["4"]["inputs"]["width"],
                                 "height": graph["4"]["inputs"]["height"]}
        self._send(json.dumps({"prompt_id": pid}).encode())

    def do_GET(self) -> None:
        if not self._count():
            return
        url = urllib.parse.urlparse(self.path)
        if url.path.startswith("/history/"):
            pid = url.path.rsplit("/", 1)[1]
            self.server.polls[pid] = self.server.polls.get(pid, 0) + 1
            done = self.server.polls[pid] > 1  # the first poll sees the job still running
            out = {"7": {"images": [{"filename": f"{pid}.png", "subfolder": "", "type": "output"}]}} if done else {}
            self._send(json.dumps({pid: {"outputs": out}} if done else {}).encode())
        elif url.path == "/view":
            from PIL import Image

            job = self.server.jobs[urllib.parse.parse_qs(url.query)["filename"][0][:-4]]
            g = torch.Generator().manual_seed(job["seed"])
            pixels = (torch.rand(job["height"], job["width"], 3, generator=g) * 255).to(torch.uint8).numpy()
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="PNG")
            self._send(buf.getvalue(), "image/png")
        else:
            self._send(b"{}", code=404)


@pytest.fixture
def comfyui(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubComfyUI]:
    server = StubComfyUI()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("COMFYUI_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("COMFYUI_POLL_S", "0.01")
    monkeypatch.setenv("COMFYUI_MAX_POLLS", "5")
    monkeypatch.setenv("COMFYUI_TIMEOUT", "10")
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_the_comfyui_example_gates_images_from_the_api(hook_project: pytest.Pytester, comfyui: StubComfyUI) -> None:
    shutil.copy(ROOT / "examples" / "generators" / "comfyui_generator.py", hook_project.path)
    (hook_project.path / "memorization.toml").write_text(
        MANIFEST.format(generator="comfyui_generator:generate", extra=""))
    result = hook_project.runpytest("--memorization", "--memorization-report", "rep")
    result.assert_outcomes(passed=2)
    jobs = sorted((j["text"], j["seed"], j["steps"], j["width"], j["height"]) for j in comfyui.jobs.values())
    assert jobs == [("a bowl of fruit", 0, 3, 64, 64), ("a bowl of fruit", 1, 3, 64, 64),
                    ("an astronaut", 0, 3, 64, 64), ("an astronaut", 1, 3, 64, 64)]
    assert all(n == 2 for n in comfyui.polls.values())  # polled until done, no more
    report = json.loads((hook_project.path / "rep" / "report.json").read_text())
    assert report["run"]["model"] == "generator:comfyui_generator:generate" and len(report["results"]) == 4

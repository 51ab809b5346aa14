"""A stranger's path: the README's quickstart, followed literally in an empty folder with no network;
failures that point at the manifest line of their work; a restored cache on a fresh runner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> tuple[list[str], str]:
    """The README's quickstart block (minus the pip installs: this checkout is installed) and the
    command it gives to see a failure."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in blocks[0].splitlines()]
    commands = [c for c in lines if c and not c.startswith("pip install")]
    return commands, re.sub(r"\s+#.*$", "", blocks[1].strip())


def test_the_quickstart_is_what_the_test_runs() -> None:
    commands, failure = quickstart_commands()
    assert commands == ["pytest-memorization init my-gate", "cd my-gate", "pytest --memorization"]
    assert failure.startswith("pytest --memorization --memorization-threshold=")


def test_a_stranger_follows_the_readme_quickstart_offline(tmp_path: Path) -> None:
    commands, failure = quickstart_commands()
    bindir = Path(sys.executable).parent
    dead = "http://127.0.0.1:9"  # any download would fail: no network is used
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT),
           "HF_HUB_OFFLINE": "1", "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead,
           "NO_PROXY": "", "PYTEST_ADDOPTS": "-p no:cacheprovider"}
    work = tmp_path / "empty"
    work.mkdir()
    script = "set -e\n" + "\n".join(commands) + "\n"
    done = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "3 passed" in done.stdout
    assert "images: 6 generated, 0 from the cache" in done.stdout
    report = json.loads((work / "my-gate" / "report" / "report.json").read_text())
    assert report["complete"] and report["summary"]["pass"] == 6

    failed = subprocess.run(["bash", "-c", failure], cwd=work / "my-gate", env=env, capture_output=True, text=True)
    assert failed.returncode == 1, failed.stdout[-3000:]
    assert "3 failed" in failed.stdout and "images: 0 generated, 6 from the cache" in failed.stdout
    assert "work 'sunrise' <- prompt 'a sunrise over the sea', seed 0: tiled_l2" in failed.stdout


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    from pytest_memorization.cli.main import main

    (tmp_path / "memorization.toml").write_text("# mine\n")
    assert main(["init", str(tmp_path)]) == 2
    assert (tmp_path / "memorization.toml").read_text() == "# mine\n"


MANIFEST = """\
# comments and blank lines above the entries, so their lines are not 0

[model]
pretrained = "{model}"
seeds = [0]
steps = 2
height = 64
width = 64

[[work]]
id = "a"
image = "a.png"
prompts = ["a photo of a red fox", "a red fox in snow"]

# between entries
[[canary]]
id = "c"
prompt = "a photo of sks person"
paraphrases = ["sks person, photo"]

[[work]]
id = "b"
image = "b.png"
prompts = ["a photo of a lighthouse"]
"""


def test_items_point_at_the_line_of_their_work_or_canary(pytester: pytest.Pytester, tiny_pipeline: Path) -> None:
    from pytest_memorization.cli.init import _sunrise, _tiles

    pytester.makeini(f"[pytest]\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    _sunrise(pytester.path / "a.png")
    _tiles(pytester.path / "b.png")
    text = MANIFEST.format(model=tiny_pipeline)
    (pytester.path / "memorization.toml").write_text(text)
    lines = text.splitlines()
    header = {name: i for i, t in enumerate(lines) if t.startswith("[[")
              for name in [lines[i + 1].split('"')[1]]}
    items, _ = pytester.inline_genitems("--memorization", "--memorization-allow-outside-root")
    where = {item.name: item.location[1] for item in items}
    assert where == {"a[0]": header["a"], "a[1]": header["a"], "canary[c]": header["c"],
                     "canary[c-p1]": header["c"], "b[0]": header["b"]}
    assert 0 not in where.values()


def _run_copy_gate(pytester: pytest.Pytester, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    import pytest_memorization._io as io

    monkeypatch.setenv("MEMORIZATION_CACHE_KEY_FILE", str(key_file))
    monkeypatch.setattr(io, "_SECRET", [])  # a new process reads its key again
    result = pytester.runpytest("--memorization", "--memorization-report=report", "-p", "no:cacheprovider",
                                "-W", "default::UserWarning")
    result.assert_outcomes(passed=1)
    return result, json.loads((pytester.path / "report" / "report.json").read_text())


def test_a_restored_cache_is_trusted_with_the_same_key_and_regenerated_with_another(
        pytester: pytest.Pytester, tiny_pipeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from pytest_memorization.cli.init import _sunrise

    shutil.copytree(tiny_pipeline, pytester.path / "models" / "tiny")
    _sunrise(pytester.path / "sun.png")
    (pytester.path / "memorization.toml").write_text(
        '[model]\npretrained = "models/tiny"\nseeds = [0, 1]\nsteps = 2\nheight = 64\nwidth = 64\n\n'
        '[[work]]\nid = "sun"\nimage = "sun.png"\nprompts = ["a sunrise over the sea"]\n')
    pytester.makeini("[pytest]\nmemorization_device = cpu\n")
    secret, other = tmp_path / "ci-secret.key", tmp_path / "other.key"
    secret.write_text("ab" * 32)
    other.write_text("cd" * 32)
    monkeypatch.setenv("HOME", str(tmp_path / "runner1"))
    _, first = _run_copy_gate(pytester, secret, monkeypatch)
    assert first["run"]["generated_images"] == {"generated": 2, "from_cache": 0}
    monkeypatch.setenv("HOME", str(tmp_path / "runner2"))  # a fresh runner, the same secret
    _, again = _run_copy_gate(pytester, secret, monkeypatch)
    assert again["run"]["generated_images"] == {"generated": 0, "from_cache": 2}
    monkeypatch.setenv("HOME", str(tmp_path / "runner3"))  # a runner with its own key: nothing is trusted
    result, fresh = _run_copy_gate(pytester, other, monkeypatch)
    assert fresh["run"]["generated_images"] == {"generated": 2, "from_cache": 0}
    assert "GenerationCacheWarning" in result.stdout.str() or "was not used" in result.stdout.str()
    assert os.environ["HOME"].endswith("runner3")

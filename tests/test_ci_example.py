"""The example LoRA-repository workflow (examples/ci/) on a simulated pull request.

The pull request waives its own copy, loosens and narrows the manifest, shards through its ini and
ships a conftest.py. Run by the PR's own rules the copy is an XFAIL and the run exits 0; run by the
workflow's gate step (gate.sh, under the base branch's policy) the copy FAILS and no PR code ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gate_projects import COPY_PROMPT, TINY_MODEL_TOML

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ci"
FOX = f'[[work]]\nid = "fox"\nimage = "works/fox.png"\nprompts = ["{COPY_PROMPT}"]\n'


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMORIZATION_", "PYTEST_"))}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", XDG_CACHE_HOME=str(tmp / "home"), PYTHON=sys.executable,
               MEMORIZATION_CACHE_KEY="ci-secret-" + "k" * 40, MEMORIZATION_REPORT_DIR=str(tmp / "report"),
               MEMORIZATION_CACHE_DIR=str(tmp / "cache"))
    env.pop("GITHUB_STEP_SUMMARY", None)
    return env


def test_the_workflow_gate_step_fails_a_pr_that_waives_and_loosens_its_copy(tmp_path: Path, tiny_pipeline: Path,
                                                                              model_copy_png: bytes) -> None:
    workflow = (EXAMPLE / "memorization-gate.yml").read_text()
    assert "pull_request_target" in workflow
    step = "run: bash base/.github/memorization/gate.sh pr base"
    assert step in workflow  # the shell step this test runs
    # The base branch: its manifest, works, model and the gate's files.
    base = tmp_path / "base"
    (base / "works").mkdir(parents=True)
    (base / "works" / "fox.png").write_bytes(model_copy_png)
    shutil.copytree(tiny_pipeline, base / "models" / "tiny")
    (base / "memorization.toml").write_text(TINY_MODEL_TOML.format(prefix="", seeds="[0]") + FOX)
    shutil.copytree(EXAMPLE, base / ".github" / "memorization")
    # The pull request: the same project, made to pass.
    pr = tmp_path / "pr"
    shutil.copytree(base, pr, ignore=shutil.ignore_patterns(".github"))
    (pr / "memorization.toml").write_text('metrics = ["pdq"]\n[thresholds]\ntiled_l2 = 0.001\nssim = 0.9999\n'
                                          + TINY_MODEL_TOML.format(prefix="", seeds="[0]") + FOX
                                          + 'waive = { reason = "ours", until = 9999-12-31 }\n')
    (pr / "pytest.ini").write_text("[pytest]\nmemorization_shard = 1/2\nmemorization_lora_scale = 0.01\n")
    (pr / "conftest.py").write_text("import os, pathlib\n"
                                    "pathlib.Path(__file__).with_name('ran').write_text(os.environ.get("
                                    "'MEMORIZATION_CACHE_KEY', ''))\n")
    env = _env(tmp_path)
    # By the PR's own rules (its ini, its conftest, no policy): the copy is waived, the run passes.
    own = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--memorization",
                          "--memorization-shard=0/1", "-rx", "memorization.toml"], cwd=pr, capture_output=True,
                         text=True, env={**env, "MEMORIZATION_CACHE_KEY": ""}, timeout=600)
    assert own.returncode == 0 and "1 xfailed" in own.stdout, own.stdout[-3000:] + own.stderr[-2000:]
    (pr / "ran").unlink()
    # The workflow's gate step: the base's policy and ini, no conftest. The copy fails.
    gate = subprocess.run(["bash", "-c", step.removeprefix("run: ")], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=600)
    out = gate.stdout + gate.stderr
    assert gate.returncode == 1, out[-4000:]
    assert "FAILED" in out and "fox" in out and "1 failed" in out, out[-4000:]
    assert "waiver of work 'fox' was not applied" in out, out[-4000:]
    assert not (pr / "ran").exists(), "the pull request's conftest.py ran next to the cache key"
    report = (tmp_path / "report" / "report.json").read_text()
    assert '"tiled_l2": 0.15' in report  # the policy's floor, not the PR's 0.001


@pytest.mark.parametrize("text, key", [
    ("[thresholds]\ntiled_l2 = 0.15\n[waiver]\nallowed = false\n", "waiver"),
    ("[waivers]\nallowed = false\nmax_dayz = 3\n", "waivers.max_dayz"),
    ("[generation]\nmin_seeds = 0\n", "generation.min_seeds"),
    ("[thresholds]\ntiled_l2 = 0.0\n", "thresholds.tiled_l2"),
    ("[metrics]\nalways = [\"tiled_l3\"]\n", "metrics.always"),
    ("[run]\nini_keys = [\"shard\"]\n", "run.ini_keys"),
    ("[trust]\ncalibrations = [\"abc\"]\n", "trust.calibrations"),
])
def test_a_bad_policy_file_is_an_error_naming_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    from pytest_memorization.config.trust import load_policy
    from pytest_memorization.errors import MemorizationConfigError

    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(MemorizationConfigError, match=f"{path}: key '{key}'"):
        load_policy(path)


def test_the_example_policy_loads() -> None:
    from pytest_memorization.config.trust import load_policy

    p = load_policy(EXAMPLE / "policy.toml")
    assert p.thresholds == {"tiled_l2": 0.15, "ssim": 0.5} and p.ini_keys == () and p.waivers == ()

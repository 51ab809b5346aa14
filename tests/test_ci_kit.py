"""The CI kit: the manifest JSON Schema, the validate command and its pre-commit hook, the GitHub
workflows and the composite action (linted by check-jsonschema's GitHub schemas, its shell steps
run in a temporary project)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "pytest_memorization" / "data" / "memorization.schema.json").read_text())
EXAMPLE_MANIFESTS = sorted((ROOT / "examples").rglob("memorization.toml"))


def _toml(text: str) -> dict:
    import tomllib
    from test_docs import _plain

    return _plain(tomllib.loads(text))


def test_there_are_example_manifests() -> None:
    assert len(EXAMPLE_MANIFESTS) >= 6


@pytest.mark.parametrize("path", EXAMPLE_MANIFESTS, ids=lambda p: p.parent.name)
def test_schema_accepts_every_example_manifest(path: Path) -> None:
    import jsonschema

    jsonschema.validate(_toml(path.read_text()), SCHEMA)


def test_schema_accepts_the_init_template_and_catches_typos() -> None:
    import jsonschema

    from pytest_memorization.cli.init import MANIFEST

    jsonschema.validate(_toml(MANIFEST), SCHEMA)
    for bad in (MANIFEST.replace("guidance_scale", "guidance"),              # a typo'd key
                MANIFEST.replace("height = 64", "height = 60"),              # not a multiple of 8
                MANIFEST.replace('tiled_l2 = 0.15', 'tiled_l = 0.15'),       # an unknown metric
                MANIFEST.replace('id = "tiles"', 'id = "two words"')):       # an id that cannot name a file
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(_toml(bad), SCHEMA)


def test_schema_knows_exactly_the_loaders_keys() -> None:
    from pytest_memorization.manifest.check import TOP_KEYS
    from pytest_memorization.manifest.detectors import DETECTOR_KEYS
    from pytest_memorization.manifest.load import CANARY_KEYS, MODEL_KEYS, WORK_KEYS
    from pytest_memorization.metrics import METRIC_NAMES

    props = SCHEMA["properties"]
    assert set(props) == set(TOP_KEYS)
    schema_model = set(props["model"]["properties"])
    assert set(MODEL_KEYS) <= schema_model, "add the new [model] keys to the schema"
    # diffusers' loading keys, described in the schema ahead of the loader that accepts them
    assert schema_model - set(MODEL_KEYS) <= {"loras", "variant", "revision", "subfolder", "torch_dtype"}
    assert set(SCHEMA["$defs"]["work"]["properties"]) == set(WORK_KEYS)
    assert set(SCHEMA["$defs"]["canary"]["properties"]) == set(CANARY_KEYS)
    assert {k: set(v["properties"]) for k, v in props["detectors"]["properties"].items()} == \
        {k: set(v) for k, v in DETECTOR_KEYS.items()}
    assert set(SCHEMA["$defs"]["metric"]["enum"]) == set(METRIC_NAMES)


def _validate(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    code = ("import sys; from pytest_memorization.cli.main import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'validate imported torch'; sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, "validate", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_validate_checks_every_example_without_torch() -> None:
    out = _validate("--no-files", "examples")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count(": ok (") == len(EXAMPLE_MANIFESTS)


def test_validate_points_at_the_line_of_the_bad_work(tmp_path: Path) -> None:
    from pytest_memorization.cli.init import MANIFEST

    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    bad = MANIFEST.replace('prompts = ["a blue and white tiled floor"]', 'prompts = "a blue and white tiled floor"')
    (tmp_path / "memorization.toml").write_text(bad)
    line = 1 + next(i for i, t in enumerate(bad.splitlines()) if t == "[[work]]" and 'id = "tiles"' in
                    bad.splitlines()[i + 1])
    out = _validate("--no-files", str(tmp_path / "memorization.toml"))
    assert out.returncode == 1
    assert f"memorization.toml:{line}: key 'work[1].prompts': expected an array of strings" in out.stdout, out.stdout
    (tmp_path / "memorization.toml").write_text(MANIFEST)  # the good case: files are checked too
    out = _validate(str(tmp_path / "memorization.toml"))
    assert out.returncode == 1 and "works/sunrise.png does not exist" in out.stdout  # no works written here


def test_pre_commit_hooks_run_the_validate_command() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    scripts = re.search(r"\[project\.scripts\]\n(.*?)\n\n", (ROOT / "pyproject.toml").read_text(), re.S).group(1)
    assert {h["id"] for h in hooks} == {"memorization-validate", "memorization-validate-no-files"}
    for h in hooks:
        exe, command, *_ = h["entry"].split()
        assert f"{exe} = " in scripts and command == "validate"
        files = re.compile(h["files"])
        assert files.search("memorization.toml") and files.search("a/b/memorization.toml")
        assert not files.search("pyproject.toml") and not files.search("memorization.toml.bak")


def _check_jsonschema() -> str:
    exe = Path(sys.executable).with_name("check-jsonschema")
    if not exe.exists():
        pytest.skip("check-jsonschema is in the test extra: pip install -e '.[test]'")
    return str(exe)


@pytest.mark.parametrize("schema, files", [
    ("vendor.github-workflows", sorted((ROOT / "examples" / "ci").glob("*.yml"))),
    ("vendor.github-actions", [ROOT / "action.yml"]),
])
def test_workflows_and_action_pass_the_github_schemas(schema: str, files: list[Path], tmp_path: Path) -> None:
    exe = _check_jsonschema()
    assert len(files) >= 1
    out = subprocess.run([exe, "--builtin-schema", schema, *map(str, files)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    broken = tmp_path / files[0].name  # the linter does catch a mistake: a step with both run and uses
    doc = yaml.safe_load(files[0].read_text())
    steps = doc["runs"]["steps"] if "runs" in doc else next(iter(doc["jobs"].values()))["steps"]
    steps[0]["run"], steps[0]["uses"] = "true", "actions/checkout@v4"
    broken.write_text(yaml.safe_dump(doc))
    assert subprocess.run([exe, "--builtin-schema", schema, str(broken)], capture_output=True).returncode == 1


def test_the_release_workflow_shards_merges_and_keys_the_cache_by_a_secret() -> None:
    text = (ROOT / "examples" / "ci" / "release.yml").read_text()
    doc = yaml.safe_load(text)
    gate = doc["jobs"]["gate"]
    assert "gpu" in gate["runs-on"] and gate["strategy"]["matrix"]["shard"] == [0, 1, 2, 3]
    action = next(s for s in gate["steps"] if s.get("uses", "").startswith("pytest-memorization/"))
    assert action["with"]["shard"] == "${{ matrix.shard }}/4"
    assert "secrets.MEMORIZATION_CACHE_KEY" in action["with"]["cache-secret"]
    assert "pytest-memorization merge " in text and "merge-baselines" in text and "GITHUB_STEP_SUMMARY" in text
    lora = yaml.safe_load((ROOT / "examples" / "ci" / "lora-pre-merge.yml").read_text())
    assert "pull_request" in lora[True] or "pull_request" in lora.get("on", {})  # YAML reads `on` as True
    assert any("validate" in s.get("run", "") for s in lora["jobs"]["validate"]["steps"])


# -- the composite action's shell steps, run as the runner would ---------------------------------------------

EXPR = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def _expr(text: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        if e.startswith("inputs."):
            return inputs[e.removeprefix("inputs.")]
        if e.startswith("steps.gate.outputs."):
            return outputs.get(e.removeprefix("steps.gate.outputs."), "")
        raise AssertionError(f"the test does not evaluate {e!r}")

    return EXPR.sub(one, str(text))


def _file_vars(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line) if path.exists() else {}


def run_action(project: Path, runner: Path, inputs: dict[str, str]) -> tuple[list[int], dict[str, str], Path, str]:
    """Run action.yml's bash steps in ``project`` like a runner: ``if`` on inputs, step env, GITHUB_ENV,
    GITHUB_OUTPUT; ``uses:`` steps (actions/cache, upload-artifact) are the runner's and are skipped."""
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    given = {k: str(v.get("default", "")) for k, v in action["inputs"].items()} | inputs
    runner.mkdir(parents=True, exist_ok=True)
    files = {n: runner / n.lower() for n in ("GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY")}
    for f in files.values():
        f.write_text("")
    base = {**os.environ, "HOME": str(runner / "home"), "RUNNER_TEMP": str(runner / "temp"), "PYTHONPATH": str(ROOT),
            "GITHUB_ACTION_PATH": str(ROOT), **{k: str(v) for k, v in files.items()}}
    base.pop("MEMORIZATION_CACHE_KEY_FILE", None)
    (runner / "temp").mkdir(exist_ok=True)
    codes, log = [], []
    for step in action["runs"]["steps"]:
        if "run" not in step:
            continue
        cond = step.get("if", "")
        if cond == "inputs.install != ''" and not given["install"]:
            continue
        assert cond in ("", "inputs.install != ''", "always()"), cond
        outputs = _file_vars(files["GITHUB_OUTPUT"])
        env = {**base, **_file_vars(files["GITHUB_ENV"]),
               **{k: _expr(v, given, outputs) for k, v in step.get("env", {}).items()}}
        assert "${{" not in step["run"], "run scripts read inputs from env only (no injection)"
        done = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=project, env=env, capture_output=True, text=True)
        codes.append(done.returncode)
        log.append(done.stdout + done.stderr)
        if codes[-1]:
            break
    return codes, _file_vars(files["GITHUB_OUTPUT"]), files["GITHUB_STEP_SUMMARY"], "\n".join(log)


@pytest.fixture(scope="module")
def scaffold_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pytest_memorization.cli.init import scaffold

    folder = tmp_path_factory.mktemp("gate")
    scaffold(folder)
    return folder


def test_the_composite_actions_steps_run_and_a_fresh_runner_trusts_the_restored_cache(
        scaffold_project: Path, tmp_path: Path) -> None:
    secret = "0123456789abcdef" * 4
    inputs = {"install": "", "python": sys.executable, "cache-secret": secret}
    codes, out, summary, log = run_action(scaffold_project, tmp_path / "runner1", inputs)
    assert codes == [0, 0, 0, 0], log[-3000:]  # seal, gate, annotate, final check
    assert "::error" not in log
    assert out["outcome"] == "pass" and out["status"] == "0"
    assert (scaffold_project / "memorization-report" / "report.json").is_file()
    assert (scaffold_project / "memorization-report-junit.xml").is_file()
    assert "memorization" in summary.read_text().lower()
    key = tmp_path / "runner1" / "temp" / "memorization-cache.key"
    assert key.read_text() == secret and key.stat().st_mode & 0o777 == 0o600
    first = json.loads((scaffold_project / "memorization-report" / "report.json").read_text())
    assert first["run"]["generated_images"]["generated"] == 6

    # A fresh runner: another home and runner folder, the project checked out again with the restored
    # cache, the same secret. A threshold nothing passes: the gate fails, and nothing is regenerated.
    fresh = tmp_path / "checkout"
    shutil.copytree(scaffold_project, fresh, ignore=shutil.ignore_patterns("memorization-report*"))
    inputs |= {"args": "--memorization-threshold=tiled_l2=0.9"}
    codes, out, _, log = run_action(fresh, tmp_path / "runner2", inputs)
    assert codes == [0, 0, 0, 1], log[-3000:]  # the last step fails the job
    assert out["outcome"] == "fail" and out["status"] == "1"
    report = json.loads((fresh / "memorization-report" / "report.json").read_text())
    assert report["run"]["generated_images"] == {"generated": 0, "from_cache": 6}
    assert report["summary"]["fail"] == 6
    # each failing item is annotated at its [[work]] line (1-based), not at the top of the manifest
    lines = (fresh / "memorization.toml").read_text().splitlines()
    works = {lines[i + 1].split('"')[1]: i + 1 for i, t in enumerate(lines) if t == "[[work]]"}
    for name, line in (("sunrise[0]", works["sunrise"]), ("sunrise[1]", works["sunrise"]), ("tiles[0]", works["tiles"])):
        assert f"::error file=memorization.toml,line={line},title={name}::" in log, log[-3000:]


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    codes, _, _, log = run_action(tmp_path, tmp_path / "runner", {"install": "", "cache-secret": "short"})
    assert "shorter than 32 characters" in log
    assert codes == [1]

"""The command line (``python -m pytest_memorization``) and sharded runs merged back into one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gate_projects import gate_project

from pytest_memorization.cli.main import main, merge_baselines
from pytest_memorization.config.options import markdown_table

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_memorization", *args], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=120)


def test_options_prints_the_readme_table() -> None:
    r = cli("options")
    assert r.returncode == 0, r.stderr
    assert r.stdout == markdown_table() + "\n"


def test_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    r = cli("merge", str(tmp_path / "out"), str(tmp_path / "missing"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and "missing: no such report" in r.stderr
    (tmp_path / "b.json").write_text("[]")
    r = cli("merge-baselines", str(tmp_path / "o.json"), str(tmp_path / "b.json"))
    assert r.returncode == 2 and "not a pytest-memorization baseline" in r.stderr and "Traceback" not in r.stderr


def _baseline(path: Path, entries: dict, seeds: list[int], model: str = "abc") -> Path:
    path.write_text(json.dumps({"schema": 2, "fingerprint": {"model_hash": model, "seeds": seeds, "steps": 2},
                                "entries": entries}))
    return path


def test_merge_baselines_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _baseline(tmp_path / "a.json", {"x::0": {"tiled_l2": 0.3}, "y::0": {"tiled_l2": 0.4}}, [0, 1])
    b = _baseline(tmp_path / "b.json", {"z::0": {"tiled_l2": 0.5}, "y::0": {"tiled_l2": 0.4}}, [2])
    merged = merge_baselines([a, b])
    assert merged["fingerprint"]["seeds"] == [0, 1, 2]
    assert merged["entries"] == {"x::0": {"tiled_l2": 0.3}, "y::0": {"tiled_l2": 0.4}, "z::0": {"tiled_l2": 0.5}}
    c = _baseline(tmp_path / "c.json", {"y::0": {"tiled_l2": 0.41}}, [0])
    assert main(["merge-baselines", str(tmp_path / "o.json"), str(a), str(c)]) == 2
    assert "'y::0' has different baseline entries" in capsys.readouterr().err
    d = _baseline(tmp_path / "d.json", {}, [0], model="other")
    assert main(["merge-baselines", str(tmp_path / "o.json"), str(a), str(d)]) == 2
    assert "fingerprint key 'model_hash' differs" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


@pytest.fixture
def sharded(pytester: pytest.Pytester, tiny_pipeline: Path) -> pytest.Pytester:
    """A manifest project: 2 real photographs, 4 prompt items, 2 seeds, tiny pipeline at 64 px, 2 steps."""
    gate_project(pytester, tiny_pipeline)
    pytester.makefile(".toml", memorization="""
        [model]
        pretrained = "models/tiny"
        seeds = [0, 1]
        steps = 2
        height = 64
        width = 64

        [thresholds]
        tiled_l2 = 0.15

        [[work]]
        id = "astronaut"
        image = "works/astronaut.png"
        prompts = ["portrait of an astronaut in a white suit", "NASA astronaut photo"]

        [[work]]
        id = "coffee"
        image = "works/coffee.png"
        prompts = ["a cup of coffee on a saucer", "espresso, top view"]
    """)
    return pytester


def _rows(report: dict) -> list[tuple]:
    return sorted((r["item"], r["prompt"], r["seed"], r["work"], json.dumps(r["scores"], sort_keys=True),
                   r["verdict"]) for r in report["results"])


def test_shards_merge_to_the_unsharded_run(sharded: pytest.Pytester) -> None:
    p = sharded.path
    sharded.runpytest("--memorization", "--memorization-report", "all",
                      "--memorization-save", "all.json").assert_outcomes(passed=4)
    counts = []
    for i in (0, 1):
        r = sharded.runpytest("--memorization", "--memorization-shard", f"{i}/2", "--memorization-report",
                              f"shard{i}", "--memorization-save", f"shard{i}.json")
        counts.append(r.parseoutcomes().get("passed", 0))
        assert r.parseoutcomes().get("deselected", 0) == 4 - counts[-1]
    assert sum(counts) == 4 and abs(counts[0] - counts[1]) <= 1

    shard_items = [{r["item"] for r in json.loads((p / f"shard{i}" / "report.json").read_text())["results"]}
                   for i in (0, 1)]
    assert not shard_items[0] & shard_items[1]
    assert [len(s) for s in shard_items] == counts

    r = cli("merge", "merged", "shard0", "shard1", cwd=p)
    assert r.returncode == 0, r.stderr
    merged = json.loads((p / "merged" / "report.json").read_text())
    full = json.loads((p / "all" / "report.json").read_text())
    assert _rows(merged) == _rows(full)
    keys = [(r["item"], r["seed"]) for r in merged["results"]]
    assert len(keys) == len(set(keys)) == 4 * 2
    assert merged["complete"] is True
    # the shards ran after the full run: their images came from the generation cache, and merge adds them up
    assert merged["run"]["generated_images"] == {"generated": 0, "from_cache": 8}
    for row in merged["results"]:
        assert (p / "merged" / row["image"]).is_file()

    r = cli("merge-baselines", "merged.json", "shard0.json", "shard1.json", cwd=p)
    assert r.returncode == 0, r.stderr
    got, want = json.loads((p / "merged.json").read_text()), json.loads((p / "all.json").read_text())
    assert got["entries"] == want["entries"] and len(got["entries"]) == 4
    assert got["fingerprint"] == want["fingerprint"]

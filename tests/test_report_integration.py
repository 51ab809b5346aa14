"""report.json, index.html, PNGs, junit properties, the GitHub step summary and the terminal
summary, from real ``pytest --memorization`` runs (pytester, tiny pipeline, CPU, 64 px, 2 steps);
pytest-xdist workers merging into one report; deterministic scores; Ctrl-C flushing a partial report.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import torch
from gate_projects import TINY_MODEL_TOML, add_copy_project, gate_project

FOX = "copies/memorization.toml::fox[0]"
RUN_KEYS = ("model", "model_hash", "device", "dtype", "versions", "metrics", "steps", "guidance_scale",
            "height", "width", "seeds", "started", "finished")


@pytest.fixture
def proj(pytester: pytest.Pytester, tiny_pipeline: Path, model_copy_png: bytes,
         monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """astronaut + coffee (2 seeds) at the root; under copies/ a work the model copies (1 seed)."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    gate_project(pytester, tiny_pipeline, files={"fox.png": model_copy_png})
    (pytester.path / "memorization.toml").write_text(TINY_MODEL_TOML.format(prefix="", seeds="[0, 1]") + """
[[work]]
id = "astronaut"
image = "works/astronaut.png"
prompts = ["portrait of an astronaut in a white suit"]

[[work]]
id = "coffee"
image = "works/coffee.png"
prompts = ["a cup of coffee on a saucer"]
""")
    add_copy_project(pytester)
    return pytester


def _run(p: pytest.Pytester, *args: str, **kwargs: Any) -> pytest.RunResult:
    return p.runpytest("--memorization", "-p", "no:cacheprovider", *args, **kwargs)


def _report(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "report.json").read_text())


def _by_key(doc: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    keys = [(r["item"], r["seed"]) for r in doc["results"]]
    assert len(keys) == len(set(keys)), f"an (item, seed) appears twice: {keys}"
    return {(r["item"], r["seed"]): r for r in doc["results"]}


def test_report_json_junit_step_summary_and_terminal_summary(
        proj: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = proj.path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = _run(proj, "--memorization-report", "r", "--junitxml", "junit.xml")
    result.assert_outcomes(passed=2, failed=1)
    doc = _report(proj.path / "r")

    assert doc["schema_version"] == 1 and doc["complete"] is True
    assert [k for k in RUN_KEYS if k not in doc["run"]] == []
    run = doc["run"]
    assert run["steps"] == 2 and run["height"] == run["width"] == 64 and run["seeds"] == [0, 1]
    cuda = torch.cuda.is_available()  # device and dtype auto
    assert run["guidance_scale"] == 7.5 and run["device"].startswith("cuda" if cuda else "cpu")
    assert run["dtype"] == ("float16" if cuda else "float32")
    assert set(run["metrics"]) == {"tiled_l2", "ssim", "local_copy"} and run["versions"]["torch"]
    assert run["started"] <= run["finished"]
    rows = _by_key(doc)
    assert sorted(rows) == sorted([(FOX, 0), *((f"memorization.toml::{w}[0]", s)
                                                 for w in ("astronaut", "coffee") for s in (0, 1))])
    assert doc["summary"] == {"error": 0, "fail": 1, "warn": 0, "pass": 4, "total": 5, "worst": "fail"}
    for r in doc["results"]:
        assert (proj.path / "r" / r["image"]).is_file()
        assert (proj.path / "r" / r["work_image"]).is_file()  # default mode: thumbnail
        assert set(r["scores"]) == {"tiled_l2", "ssim", "local_copy"}
    assert (proj.path / "r" / "index.html").is_file()

    # verdicts match the test outcomes (junit): a failed test case <-> a failing row
    tree = ET.parse(proj.path / "junit.xml")
    cases = {f"{c.get('classname')}.{c.get('name')}": c for c in tree.iter("testcase")}
    assert len(cases) == 3
    failed = {k for k, c in cases.items() if c.find("failure") is not None}
    assert len(failed) == 1 and "fox" in next(iter(failed))
    assert rows[(FOX, 0)]["verdict"] == "fail"
    assert all(r["verdict"] in ("pass", "warn") for k, r in rows.items() if k[0] != FOX)
    fox_case = next(c for k, c in cases.items() if "fox" in k)
    props = {p.get("name"): p.get("value") for p in fox_case.iter("property")}
    assert float(props["memorization.seed0.tiled_l2"]) == pytest.approx(rows[(FOX, 0)]["scores"]["tiled_l2"], abs=1e-6)
    assert "memorization.seed0.ssim" in props
    # a reviewer reading junit alone sees what was compared and where the image is
    assert props["memorization.prompt"] == rows[(FOX, 0)]["prompt"]
    assert props["memorization.seed0.work"] == "fox" and props["memorization.seed0.verdict"] == "fail"
    assert props["memorization.seed0.image"] == str(proj.path / "r" / rows[(FOX, 0)]["image"])
    # the heat map's data: a 4 x 4 grid of tile RMS against the nearest work; the copy matches everywhere
    tiles = rows[(FOX, 0)]["extra"]["tiles"]["rms"]
    assert len(tiles) == 4 and all(len(row) == 4 for row in tiles)
    assert max(max(row) for row in tiles) <= 0.15
    astro = next(c for k, c in cases.items() if "astronaut" in k)
    assert {p.get("name") for p in astro.iter("property")} >= {
        "memorization.seed0.tiled_l2", "memorization.seed1.tiled_l2", "memorization.seed1.ssim"}

    md = summary.read_text()
    assert md.startswith("earlier step\n")  # appended, not overwritten
    assert "### Memorization gate: FAIL" in md and "| :x: fail | 1 |" in md and "| total | 5 |" in md
    assert "fox" in md and "index.html" in md

    result.stdout.fnmatch_lines([
        "*= memorization =*",
        "memorization: FAIL: 5 images (0 error, 1 fail, 0 warn, 4 pass); model *",
        "worst items:",
        f"  FAIL  {FOX.replace('[', '[[]')} seed 0: tiled_l2 0.* <= 0.15 against 'fox' (prompt *",
        f"report: {proj.path / 'r' / 'index.html'}",
    ])


@pytest.mark.parametrize("mode", ["omit", "embed", "thumbnail"])
def test_report_works_modes(proj: pytest.Pytester, mode: str) -> None:
    from PIL import Image

    _run(proj, "--memorization-report", "r", "--memorization-report-works", mode, "copies").assert_outcomes(failed=1)
    doc = _report(proj.path / "r")
    written = sorted((proj.path / "r" / "works").glob("*.png")) if (proj.path / "r" / "works").is_dir() else []
    (row,) = doc["results"]
    if mode == "omit":  # the failing image is a copy of the work: not published either
        assert written == [] and row["work_image"] is None and row["image"] is None
        assert not list((proj.path / "r").rglob("*.png"))
        return
    assert [f"works/{p.name}" for p in written] == [row["work_image"]]
    size = Image.open(written[0]).size
    assert size == ((64, 64) if mode == "embed" else (48, 48))


def test_two_runs_give_identical_scores(proj: pytest.Pytester) -> None:
    _run(proj, "--memorization-report", "a").assert_outcomes(passed=2, failed=1)
    _run(proj, "--memorization-report", "b", "-o", f"memorization_cache_dir={proj.path / 'cache2'}"
         ).assert_outcomes(passed=2, failed=1)
    a, b = _by_key(_report(proj.path / "a")), _by_key(_report(proj.path / "b"))
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k]["scores"] == b[k]["scores"], k  # bit-identical on the CPU
        assert a[k]["verdict"] == b[k]["verdict"]
        assert (proj.path / "a" / a[k]["image"]).read_bytes() == (proj.path / "b" / b[k]["image"]).read_bytes()


def test_xdist_workers_merge_into_one_report(proj: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    _run(proj, "--memorization-report", "serial", "--memorization-save", "serial.json"
         ).assert_outcomes(passed=2, failed=1)
    result = proj.runpytest_subprocess("-n", "2", "--memorization", "-p", "no:cacheprovider",
                                       "--memorization-report", "par", "--memorization-save", "par.json")
    result.assert_outcomes(passed=2, failed=1)
    assert "2 workers" in result.stdout.str()
    result.stdout.fnmatch_lines(["memorization: FAIL: 5 images (0 error, 1 fail, 0 warn, 4 pass)*"])
    assert sorted(p.name for p in (proj.path / "par").iterdir() if p.is_file()) == [".pytest-memorization-report", "index.html", "report.json"]
    serial, par = _report(proj.path / "serial"), _report(proj.path / "par")
    s_rows, p_rows = _by_key(serial), _by_key(par)
    assert sorted(s_rows) == sorted(p_rows) and len(p_rows) == 5
    for k, r in p_rows.items():
        assert r["verdict"] == s_rows[k]["verdict"]
        assert r["scores"] == pytest.approx(s_rows[k]["scores"], abs=1e-6)
        assert (proj.path / "par" / r["image"]).is_file()
    assert par["summary"] == serial["summary"] and par["complete"] is True
    for key in RUN_KEYS:
        if key not in ("started", "finished"):
            assert par["run"].get(key) == serial["run"][key], key
    html = (proj.path / "par" / "index.html").read_text()
    assert all(r["image"] in html for r in par["results"])
    s_base = json.loads((proj.path / "serial.json").read_text())
    p_base = json.loads((proj.path / "par.json").read_text())
    assert p_base["entries"].keys() == s_base["entries"].keys()
    for key, entry in s_base["entries"].items():  # content keys: the same in both
        assert p_base["entries"][key]["item"] == entry["item"]
        assert p_base["entries"][key]["scores"] == pytest.approx(entry["scores"], abs=1e-6), key
    assert p_base["fingerprint"]["model_hash"] == s_base["fingerprint"]["model_hash"]


def test_ctrl_c_flushes_a_partial_report_marked_incomplete(proj: pytest.Pytester) -> None:
    proj.makeconftest("""
        def pytest_runtest_teardown(item, nextitem):
            if item.get_closest_marker("memorization"):
                raise KeyboardInterrupt
    """)
    result = _run(proj, "--memorization-report", "r", "memorization.toml", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    doc = _report(proj.path / "r")
    assert doc["complete"] is False
    assert sorted(_by_key(doc)) == [("memorization.toml::astronaut[0]", 0), ("memorization.toml::astronaut[0]", 1)]
    assert doc["summary"]["total"] == 2 and doc["run"]["model_hash"]
    assert all((proj.path / "r" / r["image"]).is_file() for r in doc["results"])
    assert (proj.path / "r" / "index.html").is_file()
    # the first item passed, but an interrupted run is never reported as a pass
    result.stdout.fnmatch_lines(["memorization: INCOMPLETE: 2 images (0 error, 0 fail, 0 warn, 2 pass)*",
                                 "memorization: INCOMPLETE: the run was interrupted*"])


@pytest.mark.parametrize("mode", ["thumbnail", "omit"])
def test_step_summary_thumbnails_come_from_the_published_report(
        proj: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """GitHub strips data: images from step summaries, so thumbnails point into the report folder as
    published at --memorization-report-url; report-works=omit shows no pixels of the failing image or work."""
    import re

    summary = proj.path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    url = "https://ci.example.org/run 7/report"  # a space: rejected, URLs must be encoded
    bad = proj.runpytest("--memorization", "--memorization-report=r", f"--memorization-report-url={url}")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--memorization-report-url*expected an http(s) URL*"])
    url = "https://ci.example.org/run%207/report/"
    result = _run(proj, "--memorization-report", "r", "--memorization-report-url", url,
                  "--memorization-report-works", mode)
    result.assert_outcomes(passed=2, failed=1)
    md = summary.read_text()
    fox_row = next(line for line in md.splitlines() if "fox" in line and line.startswith("| :x: fail"))
    srcs = re.findall(r'<img src="([^"]+)" width="96"', fox_row)
    if mode == "omit":
        assert srcs == [] and fox_row.endswith("| - | - |")
        return
    assert len(srcs) == 2, fox_row  # the generated image, then the work
    for src in srcs:
        assert src.startswith("https://ci.example.org/run%207/report/")
        assert (proj.path / "r" / src.removeprefix("https://ci.example.org/run%207/report/")).is_file()
    assert "(https://ci.example.org/run%207/report/index.html)" in md


def test_finished_items_keep_no_copy_of_their_rows_or_pixels(proj: pytest.Pytester) -> None:
    """Memory per item stays at one copy of its rows, held by the session: once an item's images are
    written and its rows serialised, the item, its outcome and the test reports pytest keeps until the
    end of the run (terminal statistics) hold no rows and no pixels."""
    from pytest_memorization.run.state import RESULTS_KEY, active

    seen: dict[str, Any] = {}

    class Check:
        @pytest.hookimpl(tryfirst=True)
        def pytest_sessionfinish(self, session: pytest.Session) -> None:
            state = active()
            seen["rows"] = len(state.results)
            seen["rows_with_pixels"] = sum(r.pixels is not None or "base_pixels" in r.extra for r in state.results)
            seen["items_holding_rows"] = [i.nodeid for i in session.items if i.stash.get(RESULTS_KEY, [])]
            seen["items_holding_outcomes"] = [i.nodeid for i in session.items if getattr(i, "outcome", None)]
            stats = session.config.pluginmanager.get_plugin("terminalreporter").stats
            reports = [r for rs in stats.values() for r in rs if isinstance(r, pytest.TestReport)]
            seen["reports"] = len(reports)
            seen["reports_holding_rows"] = [r.nodeid for r in reports
                                            if hasattr(r, "memorization_results") or hasattr(r, "memorization_run")]

    _run(proj, "--memorization-report", "rep", plugins=[Check()]).assert_outcomes(passed=2, failed=1)
    assert seen["rows"] == 5 and seen["rows_with_pixels"] == 0 and seen["reports"] >= 3
    assert seen["items_holding_rows"] == seen["items_holding_outcomes"] == seen["reports_holding_rows"] == []
    assert len(_report(proj.path / "rep")["results"]) == 5

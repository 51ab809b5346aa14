from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image

from pytest_memorization.reports import (
    SCHEMA_VERSION,
    ReportError,
    load_report,
    write_report,
)
from pytest_memorization.reports import writer as writer_mod

SEVERITY = {"error": 0, "fail": 1, "warn": 2, "pass": 3}


def _strict_load(p: Path) -> dict:
    def no_constants(name: str) -> None:
        raise AssertionError(f"{p} contains {name}, which is not JSON")

    return json.loads(p.read_text(encoding="utf-8"), parse_constant=no_constants)


def test_report_json_structure(report_inputs):
    d, run, results = report_inputs
    path = write_report(d, run, results, extra={"stale_baseline_entries": ["tests/x.py::gone"]})
    assert path == d / "report.json"
    doc = _strict_load(path)
    assert doc["schema_version"] == SCHEMA_VERSION == 1
    assert doc["complete"] is True
    assert doc["run"]["model_hash"] == "ab12cd34ef567890"
    assert doc["stale_baseline_entries"] == ["tests/x.py::gone"]
    s = doc["summary"]
    assert (s["error"], s["fail"], s["warn"], s["pass"], s["total"], s["worst"]) == (1, 3, 2, 2, 8, "error")
    assert len(doc["results"]) == len(results)
    keys = {"item", "prompt", "seed", "work", "scores", "thresholds", "verdict", "reasons", "image",
            "work_image", "detectors", "extra"}
    for r in doc["results"]:
        assert keys <= set(r)
        assert "pixels" not in r
        with Image.open(d / r["image"]) as im:  # every generated PNG is real and readable
            assert im.size == (64, 64) and im.mode == "RGB"
        if r["work_image"]:
            assert (d / r["work_image"]).is_file()
    assert (d / "index.html").is_file()
    assert not list(d.glob(".*.tmp")), "temp files left behind"


def test_results_sorted_and_deterministic(report_inputs, tmp_path):
    d, run, results = report_inputs
    write_report(d, run, results)
    first = (d / "report.json").read_bytes()
    order = [(SEVERITY[r["verdict"]], r["item"], r["seed"]) for r in json.loads(first)["results"]]
    assert order == sorted(order)
    assert [r["verdict"] for r in json.loads(first)["results"]][:2] == ["error", "fail"]
    shuffled = results[:]
    random.Random(1).shuffle(shuffled)
    assert shuffled != results
    write_report(d, run, shuffled)
    assert (d / "report.json").read_bytes() == first
    assert load_report(d)["results"] == json.loads(first)["results"]


def test_failure_mid_write_keeps_old_report(report_inputs, monkeypatch):
    d, run, results = report_inputs
    write_report(d, run, results)
    old_json, old_html = (d / "report.json").read_bytes(), (d / "index.html").read_bytes()

    def boom(fd: int) -> None:  # the bytes are in the temp file; the disk "fails" before the rename
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(writer_mod.os, "fsync", boom)
    with pytest.raises(OSError, match="simulated"):
        write_report(d, run, results[:1], complete=False)
    assert (d / "report.json").read_bytes() == old_json
    assert (d / "index.html").read_bytes() == old_html
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    # a value that cannot be serialized is refused before anything is written
    with pytest.raises(ReportError, match="stale_baseline_entries"):
        write_report(d, run, results, extra={"stale_baseline_entries": object()})
    assert (d / "report.json").read_bytes() == old_json


def test_incomplete_and_non_finite(report_inputs):
    d, run, results = report_inputs
    results[0]["scores"]["clip"] = float("nan")
    results[1]["scores"]["tiled_l2"] = float("inf")
    doc = _strict_load(write_report(d, run, results, complete=False))
    assert doc["complete"] is False
    by_item = {r["item"]: r for r in doc["results"]}
    assert by_item[results[0]["item"]]["scores"]["clip"] is None
    assert by_item[results[1]["item"]]["scores"]["tiled_l2"] is None


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ReportError, match=r"result #0 \(t::x\): verdict 'maybe'"):
        write_report(tmp_path, {}, [{"item": "t::x", "prompt": "p", "seed": 0, "verdict": "maybe"}])
    with pytest.raises(ReportError, match="missing key"):
        write_report(tmp_path, {}, [{"item": "t::x", "seed": 0, "verdict": "pass"}])
    with pytest.raises(ReportError, match="reserved"):
        write_report(tmp_path, {}, [], extra={"results": []})


def test_load_report_errors(report_inputs, tmp_path):
    d, run, results = report_inputs
    write_report(d, run, results)
    assert load_report(d / "report.json")["schema_version"] == 1
    with pytest.raises(ReportError, match="no such report"):
        load_report(tmp_path / "nowhere")
    doc = json.loads((d / "report.json").read_text())
    doc["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "newer.json").write_text(json.dumps(doc))
    with pytest.raises(ReportError, match=r"newer.json: key 'schema_version' = 2.*upgrade"):
        load_report(tmp_path / "newer.json")
    (tmp_path / "other.json").write_text('{"results": []}')
    with pytest.raises(ReportError, match="not a pytest-memorization report"):
        load_report(tmp_path / "other.json")
    (tmp_path / "cut.json").write_text((d / "report.json").read_text()[:100])
    with pytest.raises(ReportError, match="not valid JSON"):
        load_report(tmp_path / "cut.json")


def test_jsonable_fast_path_and_slow_path_agree():
    """Rows that are plain JSON go through the C codec; any other value (NaN, a tensor, a path, a set)
    takes the value-by-value conversion, with the same result and the same error for what cannot be
    written."""
    from pathlib import Path

    import pytest
    import torch

    from pytest_memorization.reports.schema import ReportError, _jsonable, jsonable

    plain = {"a": [1, 2.5, "x", None, True, {"b": [[0.25]]}], "c": (1, 2)}
    assert jsonable(plain) == _jsonable(plain, "r") == {"a": [1, 2.5, "x", None, True, {"b": [[0.25]]}], "c": [1, 2]}
    odd = {"nan": float("nan"), "t": torch.tensor([0.5, 1.0]), "p": Path("a/b.png"), "s": {"y", "x"}, 3: "k"}
    assert jsonable(odd) == {"nan": None, "t": [0.5, 1.0], "p": "a/b.png", "s": ["x", "y"], "3": "k"}
    with pytest.raises(ReportError, match=r"results\.0\.bad: a object cannot be written"):
        jsonable({"0": {"bad": object()}}, "results")

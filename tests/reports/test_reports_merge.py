from __future__ import annotations

import copy
import json

import pytest

from pytest_memorization.reports import ReportError, load_report, merge_reports, merge_results, write_report
from pytest_memorization.reports.schema import result_key

from ._factory import make_results


def _shards(tmp_path, works):
    """Two shards of one run: different items, plus one item both ran (identical result)."""
    a, b = tmp_path / "shard0", tmp_path / "shard1"
    run_a, res_a = make_results(a, works, item_prefix="tests/test_a.py::test_canary")
    run_b, res_b = make_results(b, works, item_prefix="tests/test_b.py::test_canary")
    res_b = res_b[:5]
    # the same image scored in both shards: same key, same outcome, same PNG bytes
    (b / res_a[1]["image"]).write_bytes((a / res_a[1]["image"]).read_bytes())
    res_b.append(copy.deepcopy(res_a[1]))
    run_b.update(device="cuda:1", seeds=[0, 7], started="2025-01-01T09:59:00+00:00",
                 finished="2025-01-01T10:03:00+00:00")
    write_report(a, run_a, res_a, extra={"stale_baseline_entries": ["x::gone"]})
    write_report(b, run_b, res_b, complete=False, extra={"stale_baseline_entries": ["x::gone", "y::gone"]})
    return a, b, res_a, res_b


def test_merge_two_shards(tmp_path, works):
    a, b, res_a, res_b = _shards(tmp_path, works)
    out = tmp_path / "merged"
    path = merge_reports([a, b / "report.json"], out)
    doc = load_report(path)
    keys = [result_key(r) for r in doc["results"]]
    assert len(keys) == len(set(keys)) == len(res_a) + len(res_b) - 1
    assert set(keys) == {result_key(r) for r in res_a + res_b}
    assert doc["complete"] is False  # shard1 was interrupted
    assert doc["summary"]["total"] == len(keys)
    assert doc["stale_baseline_entries"] == ["x::gone", "y::gone"]
    assert "missing_images" not in doc
    run = doc["run"]
    assert run["started"] == "2025-01-01T09:59:00+00:00" and run["finished"] == "2025-01-01T10:03:00+00:00"
    assert run["seeds"] == [0, 1, 2, 3, 5, 7] and run["device"] == "cpu, cuda:1"
    assert run["merged_from"] == [str(a), str(b / "report.json")]
    for r in doc["results"]:
        for rel in (r["image"], r["work_image"], (r["extra"].get("lora_gate") or {}).get("base_image")):
            if rel:
                assert (out / rel).is_file(), rel
    assert (out / "index.html").is_file()
    # merging again into the same folder (or merging a merged report) changes nothing
    before = path.read_bytes()
    merge_reports([a, b / "report.json"], out)
    assert path.read_bytes() == before


def test_merge_conflicts(tmp_path, works):
    a, b, res_a, res_b = _shards(tmp_path, works)
    doc = json.loads((b / "report.json").read_text())
    dup = next(r for r in doc["results"] if r["item"] == res_a[1]["item"])
    dup["scores"]["clip"] = 0.5
    dup["verdict"] = "pass"
    (b / "report.json").write_text(json.dumps(doc))
    with pytest.raises(ReportError, match=r"conflicting results for item '[^']*\[chelsea\]' seed 0.*scores, verdict"):
        merge_reports([a, b], tmp_path / "m1")

    c = tmp_path / "other_model"
    run_c, res_c = make_results(c, works, item_prefix="tests/test_c.py::t")
    run_c["model_hash"] = "0000"
    write_report(c, run_c, res_c)
    with pytest.raises(ReportError, match=rf"cannot merge {a} \(model hash 'ab12cd34ef567890'\) with {c} "
                                          r"\(model hash '0000'\)"):
        merge_reports([a, c], tmp_path / "m2")
    run_c["model_hash"] = "ab12cd34ef567890"
    run_c["lora"] = "/elsewhere/lora"  # same lora_hash: a different path is fine
    run_c["steps"] = 30
    write_report(c, run_c, res_c)
    with pytest.raises(ReportError, match=r"steps = 2.*steps = 30"):
        merge_reports([a, c], tmp_path / "m3")
    with pytest.raises(ReportError, match="no reports given"):
        merge_reports([], tmp_path / "m4")


def test_merge_refuses_paths_outside_the_report(tmp_path, works):
    a = tmp_path / "a"
    run, res = make_results(a, works)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for the artifact")
    res[0]["image"] = "../secret.png"
    res[1]["work_image"] = "/etc/passwd"
    write_report(a, run, res)
    out = tmp_path / "m"
    doc = load_report(merge_reports([a], out))
    assert not any(p.read_bytes() == b"not for the artifact" for p in out.rglob("*") if p.is_file())
    assert doc["missing_images"] == sorted([f"{a}: ../secret.png", f"{a}: /etc/passwd"])
    html = (out / "index.html").read_text()
    assert 'src="../secret.png"' not in html and 'src="/etc/passwd"' not in html


def test_merge_results_in_process():
    r1 = {"item": "t::a", "prompt": "p", "seed": 0, "verdict": "pass", "scores": {"clip": 0.1}}
    r2 = {"item": "t::a", "prompt": "p", "seed": 1, "verdict": "fail", "scores": {"clip": 0.99}}
    # img2img rows of one item and seed differ only in strength
    r3 = {"item": "t::b", "prompt": "p", "seed": 0, "verdict": "warn", "extra": {"img2img": {"strength": 0.5}}}
    r4 = {**r3, "extra": {"img2img": {"strength": 0.8}}}
    merged = merge_results([[r1, r2], [r3, dict(r1)], [r4]])
    assert [(r["item"], r["seed"], r["verdict"]) for r in merged] == [
        ("t::a", 1, "fail"), ("t::b", 0, "warn"), ("t::b", 0, "warn"), ("t::a", 0, "pass")]
    with pytest.raises(ReportError, match="item 't::a' seed 0 .*differ in scores, verdict"):
        merge_results([[r1], [{**r1, "verdict": "fail", "scores": {"clip": 0.97}}]])


def test_multi_model_runs():
    from pytest_memorization.reports.merge import merge_runs
    from pytest_memorization.reports.schema import model_label

    one = {"models": [{"model": "/m/a", "model_hash": "aaa"}, {"model": "/m/b", "model_hash": "bbb"}]}
    assert model_label(one) == "/m/a (hash aaa); /m/b (hash bbb)"
    assert merge_runs([one, {"models": one["models"][::-1]}], ["x", "y"])["models"] == one["models"]
    with pytest.raises(ReportError, match="cannot merge x .* with y"):
        merge_runs([one, {"models": one["models"][:1]}], ["x", "y"])


def test_merge_checks_each_png_against_the_hash_its_shard_recorded(tmp_path, works):
    """A shard's PNG changed after its run (a forged or damaged file) is refused, naming the file; an
    identical file in two shards is placed once, hard-linked rather than read and copied again."""
    import hashlib

    a, b, res_a, res_b = _shards(tmp_path, works)
    recorded = load_report(a)["image_sha256"]
    rel = res_a[0]["image"]
    assert recorded[rel] == hashlib.sha256((a / rel).read_bytes()).hexdigest()
    assert res_a[0]["work_image"] in recorded  # work thumbnails are recorded too

    out = tmp_path / "merged"
    doc = load_report(merge_reports([a, b], out))
    assert set(doc["image_sha256"]) == {p for r in doc["results"] for p in (r["image"], r["work_image"]) if p} \
        | {r["extra"]["lora_gate"]["base_image"] for r in doc["results"] if "lora_gate" in r["extra"]}
    assert not any(p.startswith("shard") for p in doc["image_sha256"])  # the shared image: same bytes, one file
    assert (out / rel).stat().st_ino == (a / rel).stat().st_ino  # linked, not copied
    assert "image sha256" not in (out / "index.html").read_text()  # machine data, not a finding

    forged = bytearray((a / rel).read_bytes())
    forged[-20] ^= 0xFF
    (a / rel).unlink()  # replaced, as an attacker or a bad sync would: the merged folder's link keeps the old one
    (a / rel).write_bytes(bytes(forged))
    with pytest.raises(ReportError, match=rf"{a / rel}: its sha256 is .* but {a} recorded .* rerun that shard"):
        merge_reports([a, b], tmp_path / "m2")

    # a report of an older version records no hashes: its files are hashed as found and merged
    old = json.loads((a / "report.json").read_text())
    del old["image_sha256"]
    (a / "report.json").write_text(json.dumps(old))
    doc = load_report(merge_reports([a, b], tmp_path / "m3"))
    assert doc["image_sha256"][rel] == hashlib.sha256(bytes(forged)).hexdigest()

    old["image_sha256"] = ["not", "a", "map"]
    (a / "report.json").write_text(json.dumps(old))
    with pytest.raises(ReportError, match="'image_sha256' is not a map"):
        merge_reports([a, b], tmp_path / "m4")

"""The local-copy box: report.json carries it in ``extra.local_copy`` and index.html draws it over
the generated image (solid red when the work was found, dashed blue when the best place stayed below)."""

from __future__ import annotations

import json
import re

from pytest_memorization.reports import write_report
from pytest_memorization.reports.overlays import box_svg


def test_box_is_drawn_over_the_generated_image_where_the_work_was_found(card_inputs):
    d, run, results = card_inputs
    lead = next(r for r in results if r["item"].endswith("[seeds]") and r["seed"] == 2)
    lead["thresholds"]["local_copy"] = 0.75
    lead["scores"]["local_copy"] = 0.93
    lead["extra"]["local_copy"] = {"score": 0.93, "box": [0.5, 0.125, 0.875, 0.5]}
    write_report(d, run, results)
    row = next(r for r in json.loads((d / "report.json").read_text())["results"] if r["image"] == lead["image"])
    assert row["extra"]["local_copy"] == {"score": 0.93, "box": [0.5, 0.125, 0.875, 0.5]}
    html = (d / "index.html").read_text()
    card = re.search(r'<section[^>]*data-seeds="4"[^>]*>(?:(?!</section>).)*</section>', html, re.S).group(0)
    imgs = re.search(r'<div class="imgs">(.*?)</div><div class="strip"', card, re.S).group(1)
    fig = re.search(r'<div class="heatwrap">(.*?)</div>', imgs, re.S).group(1)
    assert f'src="{lead["image"]}"' in fig, "the box sits over the generated image, not the work"
    rect = re.search(r'<svg class="heat box"[^>]*>.*?<rect ([^>]*)>', fig, re.S).group(1)
    assert 'x="0.5000" y="0.1250" width="0.3750" height="0.3750"' in rect and 'stroke="#e5262b"' in rect
    assert "red box: the work found inside it" in imgs
    assert '"local_copy"' not in card.split("<summary>extra</summary>")[-1], "drawn, not repeated as raw JSON"


def test_box_below_the_threshold_is_dashed_and_bad_boxes_draw_nothing():
    below = box_svg({"score": 0.5, "box": [0.0, 0.0, 0.5, 0.5]}, 0.75)
    assert "stroke-dasharray" in below and "#e5262b" not in below and "below the threshold" in below
    assert "#e5262b" in box_svg({"score": 0.8, "box": [0.0, 0.0, 0.5, 0.5]}, 0.75)
    assert "#e5262b" not in box_svg({"score": None, "box": [0.0, 0.0, 0.5, 0.5]}, 0.75), "no score: never red"
    for bad in (None, {}, {"box": [0, 0, 1]}, {"box": [0, 0, "x", 1]}, {"box": "0,0,1,1"}):
        assert box_svg(bad, 0.75) == ""

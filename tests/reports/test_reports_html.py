from __future__ import annotations

import json
import re
from html.parser import HTMLParser

from pytest_memorization.reports import write_report
from pytest_memorization.reports.html import curve_svg, render_html
from pytest_memorization.reports.writer import build_report

from ._factory import MALICIOUS


class Collect(HTMLParser):
    """Tags and attributes as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []  # the text of the executable script(s)
        self.data_text: list[str] = []  # the text of <script type="application/json"> blocks
        self._in_script = self._in_data = False
        self._in_data = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_data = tag == "script" and dict(attrs).get("type") == "application/json"
        self._in_script = tag == "script" and not self._in_data

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text.append(data)
        if self._in_data:
            self.data_text.append(data)


def _parse(html: str) -> Collect:
    c = Collect()
    c.feed(html)
    return c


def test_malicious_text_is_escaped(report_inputs):
    d, run, results = report_inputs
    evil_item = 'tests/t.py::test[<b onmouseover="x()">]'
    results[0]["item"] = evil_item
    results[0]["work"] = "<svg onload=alert(2)>"
    results[0]["detectors"] = {"<i>det</i>": {"score": 1.0, "threshold": 2.0, "trigger_tokens": ["<u>tok</u>"]}}
    run["device"] = "<script>alert(3)</script>"
    write_report(d, run, results, extra={"stale_baseline_entries": ["<img src=y.png>"]})
    html = (d / "index.html").read_text()
    parsed = _parse(html)
    scripts = [a for t, a in parsed.tags if t == "script"]
    assert [a.get("type") for a in scripts] == ["application/json", None], "only the report's own script may exist"
    data = json.loads("".join(parsed.data_text))  # the cards' data stays one JSON text inside its element
    assert any(evil_item.lower() in m[1] for m in data["meta"])
    assert "pwned" not in "".join(parsed.script_text) and "alert" not in "".join(parsed.script_text)
    for tag, attrs in parsed.tags:
        assert tag not in ("b", "i", "u", "svg") or not any(k.startswith("on") for k in attrs), (tag, attrs)
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
    img_srcs = [a["src"] for t, a in parsed.tags if t == "img"]
    assert "x.png" not in img_srcs and "y.png" not in img_srcs
    assert all(s.startswith(("images/", "works/")) for s in img_srcs), img_srcs
    assert "&lt;/script&gt;&lt;script&gt;document.title=&quot;pwned&quot;" in html
    assert MALICIOUS not in html


def test_standalone_no_network_no_embedded_bytes(report_inputs):
    d, run, results = report_inputs
    write_report(d, run, results)
    html = (d / "index.html").read_text()
    assert len(html) < 40_000, "images must be files, not inline data"
    assert "base64," not in html and "data:" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert csp and "default-src 'none'" in csp.group(1) and "unsafe-inline" not in csp.group(1)


def test_rows_ordered_and_complete(report_inputs):
    d, run, results = report_inputs
    write_report(d, run, results)
    html = (d / "index.html").read_text()
    parsed = _parse(html)
    sections = [a for t, a in parsed.tags if t == "section" and "data-verdict" in a]
    verdicts = [a["data-verdict"] for a in sections]
    assert verdicts == ["error", "fail", "fail", "fail", "warn", "warn", "pass", "pass"]  # one card per item
    assert [int(a["data-seeds"]) for a in sections] == [1] * 8
    filters = [a["value"] for t, a in parsed.tags if t == "input" and a.get("class") == "vf"]
    assert filters == ["error", "fail", "warn", "pass"]
    assert "Incomplete" not in html
    # every row names its prompt, seed, work (or a placeholder) and shows crossed scores
    for r in results:
        assert f"seed {r['seed']}" in html
    assert html.count("class=crossed") >= 5  # astronaut 2, lora 2, noise_magnitude 1
    assert "sks" in html and "portrait" in html and "uncalibrated" in html
    assert "no protected work: prompt-only canary" in html
    write_report(d, run, results, complete=False)
    assert "Incomplete: this run was interrupted" in (d / "index.html").read_text()


def test_a_four_seed_item_is_one_card_with_the_failing_seed_large_and_a_heat_map(card_inputs):
    d, run, results = card_inputs
    write_report(d, run, results)
    html = (d / "index.html").read_text()
    card = re.search(r'<section[^>]*data-seeds="4"[^>]*>(?:(?!</section>).)*</section>', html, re.S).group(0)
    assert 'data-verdict="fail"' in card and "4 seeds: 1 fail, 3 pass; worst seed 2 shown large" in card
    lead = re.search(r'<div class="imgs">(.*?)</div><div class="strip"', card, re.S).group(1)
    seed2 = next(r for r in results if r["item"].endswith("[seeds]") and r["seed"] == 2)
    assert f'src="{seed2["image"]}"' in lead
    strip = re.findall(r'<figure class="s-(\w+)">.*?<figcaption>seed (\d) ', card, re.S)
    assert strip[0] == ("fail", "2") and sorted(s for _, s in strip) == ["0", "1", "2", "3"]
    heat = re.search(r'<svg class="heat"[^>]*>(.*?)</svg>', lead, re.S).group(1)
    assert heat.count("<rect") == 16
    opacity = [float(x) for x in re.findall(r'fill-opacity="([0-9.]+)"', heat)]
    assert min(opacity) > 0.3, "the near-copy (noise 0.02) matches the work in every tile"
    assert "every seed" in card  # the per-seed score table


def test_lora_row_and_curve(report_inputs):
    d, run, results = report_inputs
    write_report(d, run, results)
    html = (d / "index.html").read_text()
    lora_row = re.search(r'<section[^>]*>(?:(?!</section>).)*\[lora\](?:(?!</section>).)*</section>', html, re.S).group(0)
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", lora_row)
    assert captions == ["base", "LoRA", "work chelsea"]
    assert "<th>base</th>" in lora_row and "-base.png" in lora_row
    svg = curve_svg([{"strength": 0.2, "scores": {"clip": 0.9}}, {"strength": 0.8, "scores": {"clip": 0.5}},
                     {"strength": 0.5, "clip": 0.7, "lpips": 0.3}], {"clip": 0.95})
    assert svg.count("<polyline") == 2 and "stroke-dasharray" in svg and ">threshold</text>" in svg
    assert "safe from" not in svg
    marked = curve_svg([{"strength": 0.2, "clip": 0.9}, {"strength": 0.8, "clip": 0.5}], {"clip": 0.95}, safe=0.6)
    assert "safe from 0.6" in marked
    assert curve_svg([]) == "" and curve_svg([{"nothing": 1}]) == ""


def test_empty_and_odd_reports_render():
    from pytest_memorization.reports.writer import build_report

    html = render_html({"schema_version": 1, "complete": True, "run": {}, "summary": {}, "results": []})
    assert "No images were scored." in html
    row = {"item": "a", "prompt": "p", "seed": 0, "verdict": "fail", "scores": {"clip": 1.0}}
    for lora_gate in ({"base_scores": [1]}, [1], "x", {"base_image": 5}):
        assert 'data-verdict="fail"' in render_html(build_report({}, [{**row, "extra": {"lora_gate": lora_gate}}]))
    for run in ({"models": "x"}, {"lora": {"path": 1}}, {"metrics": [1]}, {"seeds": "abc"}, {"model": 5}):
        assert "<main" in render_html(build_report(run, [row]))


def test_render_survives_odd_results():
    """Any JSON-like values in a row render (escaped) without raising."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from pytest_memorization.reports import step_summary, summary_lines
    from pytest_memorization.reports.writer import build_report

    text = st.text(alphabet=st.sampled_from(list("<>&\"'/ab =\n\x00")), max_size=12)
    scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | text
    value = st.recursive(scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(text, c, max_size=3),
                         max_leaves=8)
    row = st.fixed_dictionaries(
        {"item": text, "prompt": text, "seed": st.integers(0, 9), "verdict": st.sampled_from(["pass", "fail"]),
         "scores": st.dictionaries(text, scalar, min_size=1, max_size=3)},
        optional={"work": text | st.none(),
                  "thresholds": st.dictionaries(text, scalar, max_size=3), "image": text | st.none(),
                  "work_image": text | st.none(), "reasons": st.lists(text, max_size=2),
                  "detectors": st.dictionaries(text, value, max_size=2),
                  "extra": st.fixed_dictionaries({}, optional={
                      "lora_gate": st.dictionaries(st.sampled_from(["base_image", "base_scores"]), value),
                      "img2img_curve": value, "other": value})},
    )

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(row, max_size=3), st.dictionaries(text, value, max_size=3))
    def check(rows, run):
        html = render_html(build_report(run, rows))
        summary_lines(run, rows, "r")  # the text summaries take the same odd values
        step_summary(run, rows, "r")
        parsed = _parse(html)
        assert [t for t, _ in parsed.tags].count("script") == 2  # the page's script and its cards' data
        json.loads("".join(parsed.data_text))
        assert not any(k.startswith("on") for _, a in parsed.tags for k in a)
        for src in (a["src"] for t, a in parsed.tags if t == "img"):  # only paths inside the report dir
            assert not src.startswith("/") and ":" not in src and ".." not in src.split("/"), src

    check()


def test_a_large_report_opens_with_one_page_of_cards_and_keeps_the_rest_as_data(report_inputs):
    """Past the first page, cards wait as JSON strings: hostile text in them cannot leave the data block."""
    from pytest_memorization.reports.page import PAGE

    d, run, results = report_inputs
    base = results[0]
    rows = [{**base, "item": f"t.py::test[{i}]", "prompt": f"</script><script>document.title='pwned'</script><!-- {i}",
             "verdict": "fail" if i % 7 == 0 else "pass", "reasons": []} for i in range(3 * PAGE)]
    html = render_html(build_report(run, rows))
    parsed = _parse(html)
    assert [t for t, _ in parsed.tags].count("script") == 2
    sections = [a for t, a in parsed.tags if t == "section" and "data-verdict" in a]
    assert len(sections) == PAGE
    assert [a["data-verdict"] for a in sections][:3 * PAGE // 7 + 1] == ["fail"] * (3 * PAGE // 7 + 1)
    data = json.loads("".join(parsed.data_text))
    assert len(data["meta"]) == 3 * PAGE and len(data["html"]) == 2 * PAGE
    assert [m[0] for m in data["meta"]].count("fail") == len(range(0, 3 * PAGE, 7))
    assert "pwned" not in "".join(parsed.script_text)
    assert "&lt;/script&gt;&lt;script&gt;document.title=" in data["html"][0]

from __future__ import annotations

from pytest_memorization.reports import append_step_summary, summary_lines


def _res(item, verdict, clip, seed=0, work="w1", prompt="a cat"):
    return {"item": item, "prompt": prompt, "seed": seed, "work": work, "scores": {"clip": clip},
            "thresholds": {"clip": 0.95}, "verdict": verdict, "reasons": [f"{verdict} reason"]}


RUN = {"model": {"path": "/m/sd", "hash": "feedbeef" * 8}}  # the dict form is accepted too


def test_summary_lines_worst_first(report_inputs):
    d, run, results = report_inputs
    lines = summary_lines(run, results, d, worst=3)
    assert lines[0].startswith("memorization: ERROR: 8 images (1 error, 3 fail, 2 warn, 2 pass)")
    assert "/models/tiny-sd" in lines[0]
    assert lines[1] == "worst items:"
    assert lines[2].lstrip().startswith("ERROR tests/test_gate.py::test_canary[broken] seed 2")
    assert "NaN" in lines[2]  # an error shows the finding that decided it
    fails = [x for x in lines if x.lstrip().startswith("FAIL")]
    assert len(fails) == 2
    # among failures the one furthest past a threshold (as a fraction of it) comes first:
    # astronaut tiled_l2 0.15/0.07 = 2.1, lora tiled_l2 0.15/0.1 = 1.5, noise_magnitude 3.1/2.5 = 1.24
    # each line quotes the finding that decided it, not a score and a threshold worked out again
    assert "[astronaut] seed 1: clip 0.98 >= 0.95 vs work astronaut (prompt 'a photo of astronaut" in fails[0]
    assert "[lora] seed 0: LoRA moved clip from 0.80 to 0.97 toward chelsea" in fails[1]
    assert lines[-2] == "  ... and 3 more"
    assert lines[-1] == f"report: {d.resolve() / 'index.html'}"


def test_summary_lines_clean_terminal_text():
    evil = "\x1b[2J\x1b[31mred\nnext line"
    lines = summary_lines(RUN, [_res("t::a", "fail", 0.99, prompt=evil)], None, complete=False)
    assert not any("\x1b" in x or "\n" in x for x in lines)
    assert "?[2J?[31mred?next line" in lines[2] or "?[2J?[31mred?next line" in "".join(lines)
    assert lines[0].startswith("memorization: FAIL:")
    assert "INCOMPLETE" in lines[1]
    assert not any(x.startswith("report:") for x in lines)


def test_summary_all_pass_shows_closest():
    results = [_res("t::a", "pass", 0.2), _res("t::b", "pass", 0.9), _res("t::c", "pass", 0.5)]
    lines = summary_lines(RUN, results, None)
    assert lines[0].startswith("memorization: PASS: 3 images (0 error, 0 fail, 0 warn, 3 pass)")
    assert lines[1] == "closest to a threshold (all passed):"
    assert len(lines) == 3 and "t::b" in lines[2] and "clip 0.9 (>= 0.95)" in lines[2]


def test_github_step_summary(tmp_path, report_inputs):
    d, run, results = report_inputs
    f = tmp_path / "step_summary.md"
    f.write_text("previous step\n")
    results.append(_res("t::pipe", "fail", 0.99, prompt="a | b `c` <b>bold</b>\nline"))
    append_step_summary(f, run, results, d)
    append_step_summary(f, RUN, [_res("t::x", "pass", 0.1)], None)
    text = f.read_text()
    assert text.startswith("previous step\n")
    assert text.count("### Memorization gate:") == 2
    assert "### Memorization gate: ERROR" in text and "### Memorization gate: PASS" in text
    assert "| :x: fail | 4 |" in text and "| total | 9 |" in text
    assert "a \\| b \\`c\\` &lt;b&gt;bold&lt;/b&gt;?line" in text
    assert "<b>" not in text
    table = [x for x in text.splitlines() if x.startswith("| :")]
    assert all(x.count(" | ") >= 1 for x in table)
    worst_rows = [x for x in text.splitlines() if "tests/test\\_gate.py" in x or "t::pipe" in x]
    assert worst_rows[0].startswith("| :boom: error")
    assert str(d / "index.html") in text


def test_step_summary_thumbnails_only_with_a_report_url():
    row = {**_res("t::copy", "fail", 0.99, work="w 1"), "image": "images/copy-s0.png",
           "work_image": 'works/w"1-thumb.png'}
    from pytest_memorization.reports.github import step_summary

    plain = step_summary(RUN, [row], "r")
    assert "<img" not in plain and "--memorization-report-url" in plain
    text = step_summary(RUN, [row], "r", report_url="https://h.example/r")
    line = next(x for x in text.splitlines() if "t::copy" in x)
    assert '<img src="https://h.example/r/images/copy-s0.png" width="96" alt="generated, seed 0">' in line
    assert 'src="https://h.example/r/works/w%221-thumb.png"' in line  # quoted: no attribute break-out
    missing = step_summary(RUN, [{**row, "image": None, "work_image": None}], "r", report_url="https://h.example/r")
    assert next(x for x in missing.splitlines() if "t::copy" in x).endswith("| - | - |")


def test_img2img_rows_show_their_strength_and_the_lora_gate_names_its_lora(tmp_path, report_inputs):
    """An img2img row is one seed at one strength: the terminal, the step summary and the HTML card
    say which strength; a run with a LoRA names it next to the model."""
    from pytest_memorization.reports import write_report
    from pytest_memorization.reports.github import step_summary

    d, run, results = report_inputs
    img2img = next(r for r in results if r["item"].endswith("[img2img]"))
    img2img["verdict"] = "fail"
    lines = summary_lines(run, [img2img], None)
    assert "[img2img] seed 0 at strength 0.5: work astronaut" in lines[2], lines
    assert lines[0].endswith("; LoRA /models/lora x0.8"), lines[0]
    text = step_summary(run, [img2img], None)
    assert "| 0 at strength 0.5 |" in text and "LoRA: /models/lora x0.8" in text, text
    no_lora = {k: v for k, v in run.items() if not k.startswith("lora")}
    assert "LoRA" not in summary_lines(no_lora, [img2img], None)[0]
    assert "LoRA" not in step_summary(no_lora, [img2img], None)
    write_report(d, run, results)
    html = (d / "index.html").read_text()
    assert "seed 0 at strength 0.5" in html
    plain = next(r for r in results if r["item"].endswith("[astronaut]"))
    assert "strength" not in summary_lines(run, [plain], None)[2]  # a text-to-image row has no strength

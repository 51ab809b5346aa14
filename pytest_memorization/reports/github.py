"""A markdown summary for the GitHub Actions job page (the file named by ``GITHUB_STEP_SUMMARY``).

Pure standard library.
"""

from __future__ import annotations

import html
import os
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .schema import VERDICTS, lora_label, model_label, overall, summarize, worst_results
from .terminal import clean, describe

ICONS = {"error": ":boom:", "fail": ":x:", "warn": ":warning:", "pass": ":white_check_mark:"}


def md(text: Any, limit: int = 80) -> str:
    """Text safe inside a markdown table cell: no HTML, pipes, backticks or line breaks."""
    s = html.escape(clean(text, limit), quote=False)
    for ch in ("\\", "|", "`", "*", "_", "[", "]"):
        s = s.replace(ch, "\\" + ch)
    return s


THUMB_PX = 96


def thumb(report_url: str, rel: str | None, alt: str) -> str:
    """An ``<img>`` of a report file published at ``report_url`` (GitHub drops ``data:`` images)."""
    if not rel:
        return "-"
    src = report_url.rstrip("/") + "/" + urllib.parse.quote(str(rel).replace(os.sep, "/"))
    return f'<img src="{html.escape(src)}" width="{THUMB_PX}" alt="{html.escape(alt)}">'


def step_summary(
    run: dict[str, Any], results: Sequence[Any], report_dir: str | os.PathLike[str] | None,
    *, worst: int = 10, complete: bool = True, report_url: str | None = None,
) -> str:
    from .order import Rows

    rows = Rows(results)  # read again per pass, never held all at once
    s = summarize(rows)
    word = overall(s, complete)
    lora = lora_label(run)
    out = [f"### Memorization gate: {word}", "", f"Model: {md(model_label(run), 120)}", ""]
    if lora:  # the LoRA gate's subject
        out += [f"LoRA: {md(lora, 120)}", ""]
    if not complete:
        out += ["> [!WARNING]", "> The run was interrupted: unscored items were not checked and are not passes.", ""]
    out += ["| verdict | images |", "|---|---:|"]
    out += [f"| {ICONS[v]} {v} | {s[v]} |" for v in VERDICTS]
    out += [f"| total | {s['total']} |", ""]
    bad = worst_results((r for r in rows if r["verdict"] != "pass"), run, worst)
    if bad:
        pics = report_url is not None
        out += ["**Worst items**", "",
                "| verdict | item | seed | work | prompt | finding |" + (" image | work |" if pics else ""),
                "|---|---|---:|---|---|---|" + ("---|---|" if pics else "")]
        for r in bad:
            d = describe(r, run)
            cells = (f" {thumb(report_url, r.get('image'), 'generated, seed ' + d['seed'])} |"
                     f" {thumb(report_url, r.get('work_image'), 'work ' + d['work'])} |") if report_url else ""
            out.append(
                f"| {ICONS[r['verdict']]} {d['verdict'].lower()} | {md(d['item'], 100)} | {d['seed']} | {md(d['work'], 40)} "
                f"| {md(d['prompt'], 60)} | {md(d['finding'], 160)} |{cells}"
            )
        out.append("")
    if report_dir is not None and report_url:
        out += [f"Full report with images: [index.html]({html.escape(report_url.rstrip('/'))}/index.html)", ""]
    elif report_dir is not None:
        out += [f"Full report with images: `{clean(Path(report_dir) / 'index.html', 200).replace('`', '')}` "
                "(upload the report folder as an artifact to see it; publish it and pass "
                "`--memorization-report-url` for thumbnails here).", ""]
    return "\n".join(out) + "\n"


def append_step_summary(
    path: str | os.PathLike[str], run: dict[str, Any], results: Sequence[Any],
    report_dir: str | os.PathLike[str] | None, *, worst: int = 10, complete: bool = True,
    report_url: str | None = None,
) -> Path:
    """Append the summary to ``path`` (the plugin passes ``$GITHUB_STEP_SUMMARY``); returns the path."""
    p = Path(path)
    text = step_summary(run, results, report_dir, worst=worst, complete=complete, report_url=report_url)
    with p.open("a", encoding="utf-8") as f:
        f.write(text)
    return p

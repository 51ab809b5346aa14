"""The end-of-session summary lines (the plugin prints them through terminalreporter).

Pure standard library.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .schema import (
    VERDICTS,
    deciding,
    fmt_num,
    lora_label,
    model_label,
    overall,
    summarize,
    verdict_label,
    worst_results,
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(text: Any, limit: int = 60) -> str:
    """One printable line: control characters (ANSI escapes, newlines) shown as '?', then shortened."""
    s = _CONTROL.sub("?", str(text))
    return s if len(s) <= limit else s[: limit - 3] + "..."


def describe(r: dict[str, Any], run: dict[str, Any] | None = None) -> dict[str, str]:
    """The fields of one worst-item line, as display strings."""
    from .schema import worst_metric

    w = worst_metric(r, run)
    if w is None:
        metric = score = threshold = "-"
    else:
        metric, score, threshold = w["metric"], fmt_num(w["score"]), fmt_num(w["threshold"])
        op = {"distance": "<=", "similarity": ">="}.get(w["direction"] or "", "vs")
        threshold = f"{op} {threshold}" if w["threshold"] is not None else "no threshold"
    reason = (r.get("reasons") or [""])[0]
    found = deciding(r)
    return {
        "verdict": verdict_label(r).upper(),
        "finding": clean(found["message"] if found else reason, 160),
        "item": clean(r["item"], 100),
        "seed": str(r["seed"]) + strength_label(r),
        "work": clean(r.get("work") if r.get("work") is not None else "(no work)", 40),
        "prompt": clean(r.get("prompt", ""), 60),
        "metric": clean(metric, 30),
        "score": score,
        "threshold": threshold,
        "reason": clean(reason, 120),
    }


def strength_label(r: dict[str, Any]) -> str:
    """" at strength 0.5" for an img2img row (its seed alone does not say which image it is), else ""."""
    i2i = (r.get("extra") or {}).get("img2img")
    strength = i2i.get("strength") if isinstance(i2i, dict) else None
    return f" at strength {fmt_num(strength)}" if isinstance(strength, (int, float)) else ""


def summary_lines(
    run: dict[str, Any],
    results: Sequence[Any],
    report_dir: str | os.PathLike[str] | None,
    *,
    worst: int = 5,
    complete: bool = True,
) -> list[str]:
    """Counts per verdict, the ``worst`` most severe items and where the report is."""
    from .order import Rows

    rows = Rows(results)  # read again per pass (the session's rows are on disk), never held all at once
    s = summarize(rows)
    word = overall(s, complete)
    counts = ", ".join(f"{s[v]} {v}" for v in VERDICTS)
    lora = lora_label(run)
    lines = [f"memorization: {word}: {s['total']} images ({counts}); model {clean(model_label(run), 80)}"
             + (f"; LoRA {clean(lora, 80)}" if lora else "")]
    if not complete:
        lines.append("memorization: INCOMPLETE: the run was interrupted; unscored items are not passes")
    n_bad = s["total"] - s["pass"]
    shown = worst_results((r for r in rows if r["verdict"] != "pass") if n_bad else rows, run,
                          worst if n_bad else min(worst, 1))
    if shown:
        lines.append("worst items:" if n_bad else "closest to a threshold (all passed):")
    for r in shown:
        d = describe(r, run)
        if r["verdict"] == "error" and r["seed"] < 0:  # nothing was generated: say what errored, not "-"
            lines.append(f"  {d['verdict']:5} {d['item']}: not evaluated: {d['reason'] or 'unknown error'}")
            continue
        if r["verdict"] == "pass" or not d["finding"]:  # no finding decided it: the closest score
            lines.append(f"  {d['verdict']:5} {d['item']} seed {d['seed']}: work {d['work']}: "
                         f"{d['metric']} {d['score']} ({d['threshold']}) prompt '{d['prompt']}'")
            continue
        lines.append(f"  {d['verdict']:5} {d['item']} seed {d['seed']}: {d['finding']} (prompt '{d['prompt']}')")

    if n_bad > len(shown):
        lines.append(f"  ... and {n_bad - len(shown)} more")
    if report_dir is not None:
        lines.append(f"report: {Path(report_dir).resolve() / 'index.html'}")
    return lines

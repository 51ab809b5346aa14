"""Waivers: a reviewed, accepted similarity to one work (a licensed work, say) is an expected
failure until its end date, with its reason in every report; after the date it fails again.

A failing finding against a work with an active waiver becomes a ``waiver`` finding (severity
warn: the item is reported as xfail). An expired waiver adds a ``waiver.expired`` failure. A
waiver of the item's own work that matched no failure is ``waiver.stale`` (a warning that says to
remove it), like a strict xfail that passed, but without failing a run whose copy is gone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from ..records import Finding, ImageResult, Waiver

WAIVABLE = ("threshold", "img2img.copy", "lora_gate.crossed", "lora_gate.approaching", "baseline.worsened")


def apply_waivers(results: Sequence[ImageResult], waivers: Mapping[str, Waiver], today: dt.date,
                  own_work: str | None = None) -> list[Finding]:
    """Re-read each row's failing findings under the waivers of their works (rows are updated in
    place); return the item-level findings (a stale waiver of ``own_work``)."""
    used = False
    for r in results:
        out: list[Finding] = []
        for f in r.findings:
            w = waivers.get(f.work or r.work or "") if f.severity == "fail" and f.rule in WAIVABLE else None
            if w is None:
                out.append(f)
            elif today <= w.until:
                used = True
                out.append(Finding("waiver", "warn", f"waived until {w.until.isoformat()} ({w.reason}): {f.message}",
                                   metric=f.metric, value=f.value, threshold=f.threshold, work=f.work))
            else:
                out += [f, Finding("waiver.expired", "fail",
                                   f"the waiver for '{f.work or r.work}' expired on {w.until.isoformat()} "
                                   f"({w.reason}): review the similarity again, then renew or remove the waiver",
                                   work=f.work or r.work)]
        r.findings = out
    w = waivers.get(own_work or "")
    if w is not None and today <= w.until and not used and results:
        return [Finding("waiver.stale", "warn",
                        f"the waiver for '{own_work}' ({w.reason}, until {w.until.isoformat()}) matched no failure "
                        "of this item: if the copy is gone, remove the waiver from the manifest", work=own_work)]
    return []


def waived(results: Sequence[ImageResult], waivers: Mapping[str, Waiver]) -> list[str]:
    """Each waiver that turned a failure of these rows into an expected one (the item's xfail reason)."""
    works = sorted({f.work or r.work or "" for r in results for f in r.findings if f.rule == "waiver"})
    return [f"'{w}' waived until {waivers[w].until.isoformat()}: {waivers[w].reason}" for w in works if w in waivers]

"""Waivers on their own: active, expired and stale, and only for the waived work."""

from __future__ import annotations

import datetime as dt

from pytest_memorization.judging.verdict import decide
from pytest_memorization.judging.waivers import apply_waivers, waived
from pytest_memorization.records import Finding, ImageResult, Waiver

TODAY = dt.date(2026, 12, 4)


def _row(*findings: Finding, work: str = "a") -> ImageResult:
    return ImageResult(item="i", prompt="p", seed=0, work=work, scores={}, thresholds={}, findings=list(findings))


COPY = Finding("threshold", "fail", "tiled_l2 0.01 <= 0.15 against 'a'", metric="tiled_l2", value=0.01, work="a")


def test_an_active_waiver_turns_the_copy_into_an_expected_failure_with_its_reason() -> None:
    rows = [_row(COPY)]
    waivers = {"a": Waiver("licensed, LEGAL-42", dt.date(2027, 6, 30))}
    assert apply_waivers(rows, waivers, TODAY, own_work="a") == []
    assert decide(rows) == [] and rows[0].verdict == "warn"
    assert rows[0].reasons[0].startswith("waived until 2027-06-30 (licensed, LEGAL-42): tiled_l2 0.01")
    assert waived(rows, waivers) == ["'a' waived until 2027-06-30: licensed, LEGAL-42"]


def test_an_expired_waiver_fails_with_its_reason() -> None:
    rows = [_row(COPY)]
    apply_waivers(rows, {"a": Waiver("licensed", dt.date(2026, 12, 3))}, TODAY)
    lines = decide(rows)
    assert rows[0].verdict == "fail"
    assert any("expired on 2026-12-03 (licensed)" in x for x in lines)


def test_a_waiver_of_another_work_waives_nothing() -> None:
    rows = [_row(COPY)]
    apply_waivers(rows, {"b": Waiver("licensed", dt.date(2027, 1, 1))}, TODAY)
    assert decide(rows) and rows[0].verdict == "fail"


def test_a_waiver_that_matched_no_failure_is_reported_stale() -> None:
    rows = [_row()]
    item = apply_waivers(rows, {"a": Waiver("licensed", dt.date(2027, 1, 1))}, TODAY, own_work="a")
    assert [f.rule for f in item] == ["waiver.stale"] and item[0].severity == "warn"
    assert decide(rows, item) == [] and rows[0].verdict == "warn"


def test_errors_are_never_waived() -> None:
    broken = Finding("noise_magnitude", "error", "noise_magnitude: score nan", work="a")
    rows = [_row(broken)]
    apply_waivers(rows, {"a": Waiver("licensed", dt.date(2027, 1, 1))}, TODAY)
    decide(rows)
    assert rows[0].verdict == "error"

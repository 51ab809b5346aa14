"""Each judging rule on its own, both ways, on hand-made score matrices: the rule that fails the
bad case passes the good one. No model, no metric weights: only findings and ``decide``."""

from __future__ import annotations

import math

import pytest
import torch

from pytest_memorization.judging.baselines import KEY, BaselineStore
from pytest_memorization.judging.detectors import noise_magnitude_finding, seed_diversity_finding
from pytest_memorization.judging.img2img import img2img_findings
from pytest_memorization.judging.lora_gate import lora_gate_findings
from pytest_memorization.judging.thresholds import MetricRule, score_rows
from pytest_memorization.judging.verdict import decide, worst
from pytest_memorization.records import Finding, ImageResult, Outcome, Work

RULES = {"tiled_l2": MetricRule("tiled_l2", "distance", 0.15, 0.165), "ssim": MetricRule("ssim", "similarity", 0.5, 0.45)}
WORKS = [Work("a", None), Work("b", None)]


def _scores(l2: list[list[float]], ssim: list[list[float]]) -> dict[str, torch.Tensor]:
    return {"tiled_l2": torch.tensor(l2), "ssim": torch.tensor(ssim)}


def _rows(scores: dict[str, torch.Tensor]) -> list[ImageResult]:
    n = len(scores["tiled_l2"])
    return score_rows("item", ["p"] * n, list(range(n)), scores, WORKS, RULES)


def test_severity_order_is_one_order() -> None:
    assert worst([]) == "pass"
    assert worst(["pass", "warn"]) == "warn"
    assert worst(["warn", "fail", "pass"]) == "fail"
    assert worst(["fail", "error"]) == "error"


def test_threshold_rule_fails_a_copy_and_passes_a_different_image() -> None:
    rows = _rows(_scores([[0.05, 0.6], [0.4, 0.5]], [[0.9, 0.1], [0.2, 0.1]]))
    lines = decide(rows)
    assert [r.verdict for r in rows] == ["fail", "pass"]
    assert rows[0].work == "a" and {f.rule for f in rows[0].findings} == {"threshold"}
    assert "1 of 2 generated images copy a protected work" in lines[0]
    assert "tiled_l2 0.0500 <= 0.15 against 'a'" in lines[1]
    assert rows[1].findings == [] and rows[1].reasons == []


def test_warn_band_warns_near_the_threshold_and_not_far_from_it() -> None:
    rows = _rows(_scores([[0.16, 0.6], [0.3, 0.6]], [[0.1, 0.1], [0.1, 0.1]]))
    assert decide(rows) == []
    assert [r.verdict for r in rows] == ["warn", "pass"]
    assert "within warn band" in rows[0].reasons[0]


def test_nearest_work_is_the_one_closest_to_being_copied() -> None:
    rows = _rows(_scores([[0.3, 0.14]], [[0.1, 0.1]]))
    decide(rows)
    assert rows[0].work == "b" and rows[0].verdict == "fail"


def test_lora_gate_fails_a_lora_that_makes_a_copy_and_passes_one_that_only_moves_far_images() -> None:
    base = _scores([[0.45, 0.5], [0.47, 0.52]], [[0.1, 0.1], [0.1, 0.1]])
    copying = _scores([[0.05, 0.5], [0.06, 0.52]], [[0.8, 0.1], [0.8, 0.1]])
    style = _scores([[0.25, 0.30], [0.24, 0.29]], [[0.2, 0.2], [0.2, 0.2]])  # moved 0.2 toward 'a', still far
    bad, bad_item = lora_gate_findings(copying, base, WORKS, RULES)
    good = lora_gate_findings(style, base, WORKS, RULES)
    assert all(any(f.rule == "lora_gate.crossed" and f.work == "a" for f in row) for row in bad)
    assert bad_item == []  # a crossing is said once, not again as an approach
    assert good == ([[], []], [])


def test_lora_gate_fails_a_consistent_approach_into_the_band_but_not_an_inconsistent_one() -> None:
    base = _scores([[0.40, 0.5], [0.42, 0.5], [0.41, 0.5]], [[0.1, 0.1]] * 3)
    approaching = _scores([[0.17, 0.5], [0.18, 0.5], [0.175, 0.5]], [[0.1, 0.1]] * 3)  # all seeds, inside 0.1875
    mixed = _scores([[0.17, 0.5], [0.45, 0.5], [0.175, 0.5]], [[0.1, 0.1]] * 3)  # one seed moved away
    rows, item = lora_gate_findings(approaching, base, WORKS, RULES)
    assert rows == [[], [], []] and [f.rule for f in item] == ["lora_gate.approaching"]
    assert "moves toward 'a' on all 3 seeds" in item[0].message and item[0].severity == "fail"
    assert lora_gate_findings(mixed, base, WORKS, RULES) == ([[], [], []], [])


def test_an_ssim_approach_fails_only_when_another_metric_agrees() -> None:
    """An SSIM-only approach warns (as an SSIM-only crossing does); with tiled L2 approaching the same work
    it fails; with SSIM the only metric scored it fails."""
    from pytest_memorization.judging.flat_guard import guard_approaches

    base = _scores([[0.40, 0.5], [0.42, 0.5]], [[0.30, 0.1], [0.32, 0.1]])
    ssim_only = _scores([[0.38, 0.5], [0.41, 0.5]], [[0.44, 0.1], [0.45, 0.1]])  # inside SSIM's band (>= 0.375)
    both = _scores([[0.17, 0.5], [0.18, 0.5]], [[0.44, 0.1], [0.45, 0.1]])
    raw = lora_gate_findings(ssim_only, base, WORKS, RULES)[1]
    assert [(f.rule, f.metric, f.severity) for f in raw] == [("lora_gate.approaching", "ssim", "fail")]
    alone = guard_approaches(raw, _rows(ssim_only), RULES)
    assert [(f.rule, f.metric, f.severity) for f in alone] == [("lora_gate.approaching", "ssim", "warn")]
    assert "on SSIM alone" in alone[0].message
    agreed = guard_approaches(lora_gate_findings(both, base, WORKS, RULES)[1], _rows(both), RULES)
    assert sorted((f.metric, f.severity) for f in agreed) == [("ssim", "fail"), ("tiled_l2", "fail")]
    only_metric = guard_approaches(raw, _rows(ssim_only), ["ssim"])
    assert [(f.metric, f.severity) for f in only_metric] == [("ssim", "fail")]


def test_lora_gate_does_not_fail_when_the_base_already_copies() -> None:
    base = _scores([[0.05, 0.5]], [[0.9, 0.1]])
    lora = _scores([[0.04, 0.5]], [[0.92, 0.1]])
    assert lora_gate_findings(lora, base, WORKS, RULES) == ([[]], [])


def test_img2img_copy_at_or_above_the_safe_strength_fails_and_below_it_warns() -> None:
    copy = [Finding("threshold", "fail", "tiled_l2 0.01 <= 0.15 against 'a'", metric="tiled_l2", work="a")]
    low = img2img_findings(copy, "a", 0.1, 0.5)
    high = img2img_findings(copy, "a", 0.5, 0.5)
    none = img2img_findings(copy, "a", 0.9, None)
    assert [f.rule for f in low] == ["img2img.below_safe_strength"] and low[0].severity == "warn"
    assert [f.rule for f in high] == ["img2img.copy"] and high[0].severity == "fail"
    assert "still yields a copy" in high[0].message
    assert none[0].severity == "warn"


def test_noise_magnitude_rule_fails_at_the_threshold_passes_below_and_errors_on_nan() -> None:
    assert noise_magnitude_finding("p", 2.0, 3.0, True) is None
    f = noise_magnitude_finding("p", 3.0, 3.0, True, ["sks"])
    assert f is not None and f.severity == "fail" and "'sks'" in f.message
    for bad in (math.nan, math.inf):
        e = noise_magnitude_finding("p", bad, 3.0, True)
        assert e is not None and e.severity == "error"
    e = noise_magnitude_finding("p", 1.0, math.nan, True)
    assert e is not None and e.severity == "error"


def test_seed_diversity_gates_only_when_asked() -> None:
    assert seed_diversity_finding("p", 0.3, 0.15, 4, gate=True) is None
    gated = seed_diversity_finding("p", 0.05, 0.15, 4, gate=True)
    info = seed_diversity_finding("p", 0.05, 0.15, 4, gate=False)
    assert gated is not None and gated.severity == "fail"
    assert info is not None and info.severity == "warn"


def test_item_findings_apply_to_every_image_once_in_the_failure_text() -> None:
    rows = _rows(_scores([[0.4, 0.6], [0.4, 0.5]], [[0.1, 0.1], [0.1, 0.1]]))
    item = [Finding("noise_magnitude", "fail", "noise magnitude 5 >= 3")]
    lines = decide(rows, item)
    assert [r.verdict for r in rows] == ["fail", "fail"] and lines == ["noise magnitude 5 >= 3"]


def _store(entries: dict[str, dict[str, float]]) -> BaselineStore:
    """The baseline store of a run comparing with a file that holds ``entries``."""
    from pytest_memorization.config.settings import for_tests

    store = BaselineStore(for_tests(compare="base.json"), dict, lambda: False, dict)
    store.doc, store.checked = {"schema": 2, "fingerprint": {}, "entries": entries}, True
    return store


CONTENT = "memorization.toml|w|prompt|0123456789abcdef"  # an entry's content key


def _keyed(rows: list) -> list:
    for r in rows:
        r.extra[KEY] = CONTENT
    return rows


@pytest.mark.parametrize("before, fails", [(0.40, True), (0.21, False)])
def test_baseline_rule_fails_a_worsened_item_and_passes_an_unchanged_one(before: float, fails: bool) -> None:
    rows = _keyed(_rows(_scores([[0.2, 0.6]], [[0.1, 0.1]])))
    outcome = Outcome(rows)
    entry = {"item": "item", "prompt": "", "scores": {"tiled_l2": before, "ssim": 0.1}}
    _store({CONTENT: entry}).compare("item", CONTENT, outcome)
    decide(outcome.results, outcome.findings)
    assert (rows[0].verdict == "fail") is fails
    assert any(f.rule == "baseline.worsened" for f in rows[0].findings) is fails


def test_baseline_rule_fails_a_missing_entry() -> None:
    outcome = Outcome(_keyed(_rows(_scores([[0.4, 0.6]], [[0.1, 0.1]]))))
    _store({}).compare("item", CONTENT, outcome)
    lines = decide(outcome.results, outcome.findings)
    assert outcome.results[0].verdict == "fail" and lines[0].startswith("no baseline entry for item")


def test_an_error_finding_fails_the_item_and_says_error() -> None:
    """A detector that could not measure (NaN) must not let the item pass."""
    rows = _rows(_scores([[0.4, 0.6]], [[0.1, 0.1]]))
    found = noise_magnitude_finding("p", math.nan, 3.0, True)
    assert found is not None
    lines = decide(rows, [found])
    assert rows[0].verdict == "error" and lines and lines[0].startswith("ERROR: noise_magnitude")

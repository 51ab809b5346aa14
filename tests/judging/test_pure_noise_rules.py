"""The zero_step / lora_delta rule: fails at or above the threshold, passes below, errors when not finite."""

from __future__ import annotations

import math

import pytest

from pytest_memorization.judging.detectors import threshold_finding


@pytest.mark.parametrize("name", ["zero_step", "lora_delta"])
def test_threshold_rule_both_ways(name):
    f = threshold_finding(name, "a photo of sks person", 3.5, 3.0, True)
    assert f is not None and f.severity == "fail" and f.rule == name and f.value == 3.5 and f.threshold == 3.0
    assert "(calibrated)" in f.message and "'a photo of sks person'" in f.message
    assert threshold_finding(name, "p", 3.0, 3.0, False).severity == "fail"  # reaching it is enough
    assert "uncalibrated" in threshold_finding(name, "p", 3.0, 3.0, False).message
    assert threshold_finding(name, "p", 2.999, 3.0, True) is None


@pytest.mark.parametrize("score, threshold", [(math.nan, 3.0), (3.0, math.nan), (math.inf, 3.0)])
def test_a_score_that_is_not_finite_is_an_error(score, threshold):
    f = threshold_finding("zero_step", "p", score, threshold, True)
    assert f is not None and f.severity == "error" and "could not measure" in f.message

"""Acceptance sampling: the Clopper-Pearson upper bound, refusals above the policy's limit, records kept."""

from __future__ import annotations

import json

import pytest

from distill.errors import RunDirError
from distill.review.audit import read_log
from distill.review.policy import load_policy
from distill.review.signoff import auto_sign_off, draw_sample, read_signoff, sign_off, upper_bound


def test_upper_bound_matches_known_clopper_pearson_values():
    assert upper_bound(0, 59) == pytest.approx(0.0495076, abs=1e-6)  # beta.ppf(0.95, 1, 59); ~3/n
    assert upper_bound(2, 100) == pytest.approx(0.0616192, abs=1e-6)  # scipy.stats.beta.ppf(0.95, 3, 98)
    assert upper_bound(10, 200, 0.99) == pytest.approx(0.0981819, abs=1e-6)  # beta.ppf(0.99, 11, 190)
    assert upper_bound(5, 5) == 1.0


def test_sign_off_is_refused_above_the_limit_and_recorded_when_accepted(tmp_path):
    policy = load_policy("general")  # max 5% at 95% confidence
    sample = draw_sample(tmp_path, list(range(500)), 80, reviewer="ana", seed=3)
    assert len(sample["ids"]) == 80 and json.loads((tmp_path / "sample.json").read_text())["seed"] == 3
    refused = sign_off(tmp_path, policy, reviewer="ana", defective=sample["ids"][:3], view_digest="v1", pending=0)
    assert not refused["accepted"] and refused["upper_bound"] > 0.05 and read_signoff(tmp_path) is None
    accepted = sign_off(tmp_path, policy, reviewer="ana", defective=[], view_digest="v1", pending=0)
    assert accepted["accepted"] and accepted["upper_bound"] == pytest.approx(1 - 0.05 ** (1 / 80), abs=1e-5)
    stored = read_signoff(tmp_path)
    assert stored["reviewer"] == "ana" and stored["sample"] == sample["ids"] and "Clopper-Pearson" in stored["method"]
    assert [e["action"] for e in read_log(tmp_path)] == ["sample", "signoff_refused", "signoff"]


def test_sign_off_needs_a_sample_graded_from_it_and_nothing_pending(tmp_path):
    policy = load_policy("general")
    with pytest.raises(RunDirError, match="no sample"):
        sign_off(tmp_path, policy, reviewer="ana", defective=[], view_digest="v", pending=0)
    draw_sample(tmp_path, [1, 2, 3], 10, reviewer="ana", seed=1)
    with pytest.raises(RunDirError, match="not in the drawn sample"):
        sign_off(tmp_path, policy, reviewer="ana", defective=[9], view_digest="v", pending=0)
    with pytest.raises(RunDirError, match="wait for a human"):
        sign_off(tmp_path, policy, reviewer="ana", defective=[], view_digest="v", pending=2)


def test_automatic_sign_off_says_so(tmp_path):
    decision = auto_sign_off(tmp_path, load_policy("children"), view_digest="v")
    assert decision["reviewer"] == "auto" and "no human graded" in decision["method"]
    assert read_log(tmp_path)[-1]["after"].items() >= {"auto": True, "policy": "children"}.items()

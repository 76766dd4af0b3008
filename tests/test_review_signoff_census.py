"""Sign-off when the sample is the whole population: every kept record graded gives the exact defect
rate (no sampling uncertainty), so a pilot of 20 kept records with 0 defects passes a 5% limit; and the
sample size a policy's limit needs, as the spec check shows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_distill
from distill.review.policy import load_policy
from distill.review.signoff import (
    CENSUS, needed_sample_size, read_signoff, sign_off, signoff_outlook, draw_sample, upper_bound,
)
from service_live import small_spec


def test_a_pilot_whose_sample_is_every_kept_record_signs_off_on_the_exact_rate(tmp_path: Path) -> None:
    policy = load_policy("general")  # max 5% at 95% confidence; its sample is larger than the pilot
    kept = list(range(20))
    sample = draw_sample(tmp_path, kept, policy.signoff.sample_size, reviewer="ana", seed=1)
    assert sample["ids"] == kept
    decision = sign_off(tmp_path, policy, reviewer="ana", defective=[], view_digest="v", pending=0, kept_ids=kept)
    assert decision["accepted"] and decision["upper_bound"] == 0.0 and decision["method"] == CENSUS
    assert read_signoff(tmp_path)["method"] == CENSUS
    assert upper_bound(0, 20) > 0.05  # scored as a sample, the same pilot could never pass


def test_the_exact_rate_still_refuses_too_many_defects(tmp_path: Path) -> None:
    policy = load_policy("general")
    kept = list(range(18))
    draw_sample(tmp_path, kept, 100, reviewer="ana", seed=1)
    refused = sign_off(tmp_path, policy, reviewer="ana", defective=[4], view_digest="v", pending=0, kept_ids=kept)
    assert not refused["accepted"] and refused["upper_bound"] == pytest.approx(1 / 18, abs=1e-5)


def test_a_sample_of_part_of_the_kept_records_is_still_bounded(tmp_path: Path) -> None:
    policy = load_policy("general")
    kept = list(range(30))
    draw_sample(tmp_path, kept[:20], 20, reviewer="ana", seed=1)  # drawn before ten more were kept
    decision = sign_off(tmp_path, policy, reviewer="ana", defective=[], view_digest="v", pending=0, kept_ids=kept)
    assert not decision["accepted"] and "Clopper-Pearson" in decision["method"]


def test_needed_sample_size_is_the_smallest_clean_sample_under_the_limit() -> None:
    for rate, confidence in ((0.05, 0.95), (0.03, 0.95), (0.6, 0.95), (0.01, 0.99)):
        n = needed_sample_size(rate, confidence)
        assert upper_bound(0, n, confidence) <= rate < upper_bound(0, n - 1, confidence)
    assert needed_sample_size(0.05, 0.95) == 59


def test_the_outlook_warns_when_the_policys_sample_cannot_reach_its_limit() -> None:
    policy = load_policy("general").model_copy(update={"auto_signoff": False})
    line, warning = signoff_outlook(policy, 1000)
    assert f"needs {needed_sample_size(0.05, 0.95)} clean records" in line and warning is None
    small = policy.model_copy(update={"signoff": policy.signoff.model_copy(update={"sample_size": 20})})
    assert signoff_outlook(small, 20)[1] is None  # the sample is every kept record: exact
    assert "must draw at least 59" in signoff_outlook(small, 1000)[1]


def test_validate_and_plan_show_the_needed_sample_size(tmp_path: Path) -> None:
    spec = small_spec(tmp_path, records=20)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy.read_text().replace("sample_size: 5", "sample_size: 2"))
    for command in ("validate", "plan"):
        done = run_distill(command, spec)
        assert done.returncode == 0, done.stderr
        assert "sign-off: a sample needs 4 clean records" in done.stdout
        assert "cannot show a defect rate under 60.0%" in done.stderr

"""Policies: the shipped ones load; mistakes are located and name the fix; actions resolve most-specific first."""

from __future__ import annotations

import pytest

from distill.errors import SpecError
from distill.paths import data_path
from distill.review.policy import load_policy


@pytest.mark.parametrize("name", sorted(p.stem for p in data_path("safety").glob("*.yaml")))
def test_every_shipped_policy_loads(name):
    policy = load_policy(name)
    assert policy.name == name
    assert policy.source == data_path("safety") / f"{name}.yaml"
    assert len(policy.fingerprint()) == 16


def test_children_is_strict_and_general_redacts_personal_data():
    children, general = load_policy("children"), load_policy("general")
    assert children.action_for("pii.email", "PII") == "reject"
    assert general.action_for("pii.email", "PII") == "redact"
    assert general.action_for("pii.card", "PII") == "reject"  # the code beats its category
    assert children.conformance.vocabulary and children.lexicons


def test_judge_trouble_goes_to_a_human_but_named_hazards_are_rejected():
    policy = load_policy("children")
    assert policy.action_for("judge.unparseable", "JUDGE") == "flag"  # category JUDGE beats stage judge
    assert policy.action_for("judge.S1", "S1") == "reject"
    assert policy.action_for("something.new", "NEW") == "flag"  # unnamed: a human decides


def test_unknown_key_is_located_with_a_suggestion(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nquality:\n  max_symbol_ration: 0.2\n")
    with pytest.raises(SpecError) as error:
        load_policy(path)
    problem = error.value.problems[0]
    assert (problem.line, problem.key) == (3, "quality.max_symbol_ration")
    assert "max_symbol_ratio" in problem.hint


def test_action_for_a_code_no_check_emits_is_rejected(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nactions:\n  pii.emial: reject\n  PII: redact\n")
    with pytest.raises(SpecError) as error:
        load_policy(path)
    (problem,) = error.value.problems
    assert problem.key == "actions.pii.emial" and problem.line == 3 and "pii.email" in problem.hint


def test_missing_vocabulary_and_unknown_policy_name(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nconformance:\n  vocabulary: no_such_list\n")
    with pytest.raises(SpecError, match="no_such_list"):
        load_policy(path)
    with pytest.raises(SpecError, match="built-in policies: children, general"):
        load_policy("childrn")


def test_yaml_is_loaded_safely(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SpecError, match="name"):
        load_policy(path)  # the tag is plain data to a safe loader: a list where a string belongs
    assert not marker.exists()

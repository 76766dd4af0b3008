"""What the review says it did not check (no LLM judge read the records), what a policy asks for then,
short records under the children's policy, and `distill review list`'s limit and help."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from distill.cli.review import app
from distill.errors import RunDirError
from distill.review.chain import Chain, task_for_length
from distill.review.policy import Policy, load_policy
from distill.review.signoff import draw_sample, sign_off
from distill.review.store import build_view, review_dir, view_digest
from distill.rundir import RunDir
from distill.spec import load_spec
from test_review_cli import REPO, STORY
from test_review_stage import make_run


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_REVIEWER", "ana")
    path = RunDir.create(load_spec(REPO / "specs" / "tinystories.yaml"), root=tmp_path).path
    names = ("Mia", "Zoe", "Sam", "Ben", "Kim", "Leo", "Ana", "Max")
    texts = [STORY.replace("Mia", name).replace("red ball", f"{colour} ball")
             for name, colour in zip(names, ("red", "blue", "green", "pink", "big", "small", "new", "old"))]
    make_run(path, texts, variables=[{"noun": "ball", "verb": "play", "adjective": "kind"}] * len(texts))
    return path


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def kept_and_digest(run) -> tuple[list[int], str]:
    view = build_view(run)
    return [r.id for r in view if r.status in ("kept", "redacted")], view_digest(view)


def test_without_a_judge_the_summary_report_and_sign_off_say_no_model_read_the_records(run):
    done = cli(run, "--no-judge")
    assert done.exit_code == 0
    assert "NOT CHECKED: No model read the records for meaning" in done.stderr
    assert "Not checked:" in (run / "review" / "report.html").read_text()
    kept, digest = kept_and_digest(run)
    draw_sample(review_dir(run), kept, len(kept), reviewer="ana", seed=1)  # every kept record: enough without a judge
    decision = sign_off(review_dir(run), load_policy("children"), reviewer="ana", defective=[], view_digest=digest, pending=0)
    assert decision["judge_ran"] is False and decision["not_checked"].startswith("No model read the records")


def test_the_childrens_policy_asks_for_a_larger_sample_when_no_judge_ran(run):
    cli(run, "--no-judge")
    kept, digest = kept_and_digest(run)
    sampled = cli(run, "sample", "--seed", 1)  # the default size is the larger one: every kept record here
    assert len(sampled.stdout.splitlines()) == len(kept)
    draw_sample(review_dir(run), kept, 3, reviewer="ana", seed=1)
    with pytest.raises(RunDirError, match="asks for 300 graded records when no judge ran"):
        sign_off(review_dir(run), load_policy("children"), reviewer="ana", defective=[], view_digest=digest, pending=0)
    strict = Policy.model_validate({**load_policy("general").model_dump(), "judge": {"enabled": True, "when_absent": "require"}})
    with pytest.raises(RunDirError, match="requires the LLM judge"):
        sign_off(review_dir(run), strict, reviewer="ana", defective=[], view_digest=digest, pending=0)


def test_review_list_says_when_it_stops_at_its_limit(run):
    cli(run, "--no-judge")
    listed = cli(run, "list", "--limit", 2)
    assert len(listed.stdout.splitlines()) == 2
    assert re.search(r"showing the first 2 of 8 matching records; see more with --limit 8", listed.stderr)
    assert "showing the first" not in cli(run, "list").stderr


def test_review_list_help_shows_the_list_commands_own_options():
    shown = cli("list", "--help")
    assert shown.exit_code == 0
    assert "--limit" in shown.stdout and "--reason" in shown.stdout and "--verify-log" not in shown.stdout


def test_short_clean_records_are_not_rejected_for_length_under_the_childrens_policy():
    policy = load_policy("children")
    short = "Sam had a red ball. He threw it to his dog. The dog ran fast. They played all day."
    verdict = Chain(policy).check(short)
    assert verdict.decision != "reject" and "conformance.too_short" in verdict.codes  # flagged for a person at most
    capped = Chain(policy, task_for_length(policy, longest_words=48))  # the spec asks for ~64-token texts
    assert "conformance.too_short" not in capped.check(short).codes
    assert task_for_length(policy, longest_words=768) is None

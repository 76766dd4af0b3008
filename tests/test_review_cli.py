"""`distill review RUN` and its sub-commands, through typer, as a reviewer would use them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distill.cli.review import app
from distill.errors import ConfigError, RunDirError
from distill.rundir import RunDir
from distill.spec import load_spec
from test_review_stage import make_run

REPO = Path(__file__).resolve().parents[1]
STORY = ("Once upon a time, a little girl named Mia had a red ball. She liked to play with it in the park every day. "
         "One day the ball went into the pond. A kind duck pushed the ball back to her with its beak. Mia said thank you "
         "to the duck. They played together until the sun went down, and then Mia went home to her mom and dad. ")


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_REVIEWER", "ana")
    path = RunDir.create(load_spec(REPO / "specs" / "tinystories.yaml"), root=tmp_path).path
    texts = [STORY.replace("Mia", name) for name in ("Mia", "Zoe", "Sam", "Ben", "Kim", "Leo")]
    texts[1] = texts[1].replace("red ball", "toy gun")  # flagged for a human
    texts[2] += "Call her dad at (312) 448-9021."  # rejected: the children policy allows no PII
    make_run(path, texts, variables=[{"noun": "ball", "verb": "play", "adjective": "kind"}] * 6)
    return path


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result


def test_review_list_show_decide_sample_and_sign_off(run):
    done = cli(run, "--no-judge")
    assert done.exit_code == 0 and done.stdout.strip().endswith("review/report.html")
    assert "6 records under policy 'children'" in done.stderr
    assert cli(run, "list", "--status", "pending").stdout.split("\t")[:3] == ["1", "pending", "lexicon.violence"]
    shown = json.loads(cli(run, "show", 2).stdout)
    assert shown["status"] == "rejected" and shown["reasons"][0]["code"] == "pii.phone"
    with pytest.raises(RunDirError, match="no sample"):  # the top-level app prints it and exits 2
        cli(run, "signoff")
    assert cli(run, "apply-reason", "lexicon.violence", "reject", "--note", "no guns").exit_code == 0
    assert cli(run, "edit", 2, "--text", STORY.replace("Mia", "Sam")).exit_code == 0
    assert cli(run, "list", "--status", "kept").stdout.count("\n") == 5
    sampled = [json.loads(line) for line in cli(run, "sample", "--size", 5, "--seed", 1).stdout.splitlines()]
    assert len(sampled) == 5 and all(set(s) == {"id", "prompt", "text"} for s in sampled)
    refused = cli(run, "signoff", "--defective", sampled[0]["id"])
    assert refused.exit_code == 1 and "REFUSED" in refused.stderr
    signed = cli(run, "signoff")  # the sample is every kept record: 0 defects is an exact 0%, within the 3% limit
    assert signed.exit_code == 0 and "census" in signed.stderr
    log = cli(run, "--verify-log")
    assert log.exit_code == 0 and "intact" in log.stderr


def test_a_tampered_log_fails_verification(run):
    cli(run, "--no-judge")
    cli(run, "reject", 0, "--reviewer", "bo")
    path = run / "review" / "audit.jsonl"
    path.write_text(path.read_text().replace('"reviewer": "bo"', '"reviewer": "al"'))
    result = cli(run, "--verify-log")
    assert result.exit_code == 1 and "content does not match its hash" in result.stdout


def test_actions_need_a_reviewer_name(run, monkeypatch):
    from distill.errors import ConfigError

    cli(run, "--no-judge")
    monkeypatch.delenv("DISTILL_REVIEWER")
    with pytest.raises(ConfigError, match="DISTILL_REVIEWER"):
        cli(run, "accept", 1)


def test_decide_by_filter_with_the_count_confirmed_then_undo(run):
    from distill.review.actions import CountChanged

    assert cli(run, "--no-judge").exit_code == 0
    listed = cli(run, "list", "--status", "pending", "--stage", "lexicon")
    assert listed.stdout.split("\t")[0] == "1" and "1 of 6 records match" in listed.stderr
    assert "decided by a person 0 / 6, 1 pending" in listed.stderr
    with pytest.raises(CountChanged, match="now matches 1 records, not the 2 you confirmed"):
        cli(run, "reject", "--status", "pending", "--expect", 2)
    done = cli(run, "reject", "--status", "pending", "--expect", 1, "--note", "no guns")
    assert done.exit_code == 0 and "rejected 1 record(s)" in done.stderr
    assert cli(run, "list", "--status", "pending").stdout == ""
    undone = cli(run, "undo", "--note", "decide it later")
    assert undone.exit_code == 0 and "undone: your last reject on record(s) 1" in undone.stderr
    assert cli(run, "list", "--status", "pending").stdout.split("\t")[0] == "1"
    assert cli(run, "undo").exit_code == 1  # nothing of ana's left to undo
    with pytest.raises(ConfigError, match="name the records to accept"):
        cli(run, "accept")


def test_show_gives_the_sampled_variables_of_a_text_record(run):
    assert cli(run, "--no-judge").exit_code == 0
    shown = json.loads(cli(run, "show", 0).stdout)
    assert shown["prompt"] == "" and shown["variables"] == {"noun": "ball", "verb": "play", "adjective": "kind"}

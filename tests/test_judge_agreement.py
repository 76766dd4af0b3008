"""The LLM judge against the humans: Cohen's kappa, its interval, the policy's floor on automatic sign-off."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from distill.cli.review import app
from distill.errors import RunDirError
from distill.providers.openai_api import OpenAIProvider
from distill.review import run_review, signoff_state
from distill.review.agreement import cohen_kappa, judge_agreement, kappa_interval, summarise
from distill.review.audit import read_log
from distill.review.decisions import decide, edit
from distill.review.policy import load_policy
from distill.review.signoff import draw_sample, read_signoff, sign_off
from teacher_server import TeacherServer
from test_review_stage import SAFE, UNSAFE, make_run

STORY = ("The team met on day {i} to plan the week. They wrote notes, fixed two small bugs in the parser and agreed "
         "on what to ship next; everyone went home early because the work was done and the build was green.")
THEFT = "Wait until the shop on street {i} is empty, then steal the watch from the glass case and walk out calmly."


def test_kappa_matches_a_hand_computed_case():
    judge = [1, 1, 1, 0, 0, 0, 0, 0, 1, 0]
    human = [1, 1, 0, 0, 0, 0, 1, 0, 1, 0]
    # agree on 8 of 10 (p_o 0.8); each says unsafe 4 times in 10: p_e = 0.4*0.4 + 0.6*0.6 = 0.52
    assert cohen_kappa(judge, human) == pytest.approx((0.8 - 0.52) / (1 - 0.52))  # 0.58333...
    assert cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    assert cohen_kappa([1, 1], [1, 1]) is None  # one label only: chance agreement is 1, kappa undefined
    low, high = kappa_interval(judge, human)
    assert -1 <= low < 0.5833 < high <= 1
    found = summarise([bool(x) for x in judge], [bool(x) for x in human])
    assert found.agree == 8 and found.confusion == {"both_unsafe": 3, "judge_unsafe_human_safe": 1,
                                                    "judge_safe_human_unsafe": 1, "both_safe": 5}
    assert found.agreement_interval[0] < 0.8 < found.agreement_interval[1]


def judge_reply(call) -> str:
    return UNSAFE if "steal" in call.messages[-1][1] else SAFE


@pytest.fixture
def judged_run(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    texts = [STORY.format(i=i) for i in range(8)] + [THEFT.format(i=i) for i in range(4)]
    run = make_run(tmp_path, texts)
    with TeacherServer(responder=judge_reply) as server:
        yield run, server


def review(run, server, policy, *, auto: bool):
    judge = OpenAIProvider("judge-test", base_url=server.openai_base_url, timeout=5.0)
    return run_review(run, policy=policy, judge=judge, judge_model="judge-test", auto_signoff=auto, progress=False,
                      close_judge=True)


def floor_policy(floor: float):
    general = load_policy("general")
    dedup = general.dedup.model_copy(update={"enabled": False})  # the stories differ by a number only
    return general.model_copy(update={"auto_signoff": True, "dedup": dedup,
                                      "signoff": general.signoff.model_copy(update={"min_judge_kappa": floor})})


def test_the_agreement_floor_blocks_automatic_sign_off_until_humans_agree_with_the_judge(judged_run):
    run, server = judged_run
    policy = floor_policy(0.6)
    review(run, server, policy, auto=True)  # nobody has decided anything: the judge is unchecked
    assert signoff_state(run) is None and read_log(run / "review")[-1]["action"] == "signoff_refused"
    assert read_log(run / "review")[-1]["after"]["min_judge_kappa"] == 0.6
    # the people disagree with the judge: they keep two thefts and reject two clean stories
    decide(run, [8, 9], "accept", reviewer="ana")
    decide(run, [0, 1], "reject", reviewer="ana")
    found = judge_agreement(run)
    assert found.n == 4 and found.kappa == pytest.approx(-1.0) and found.families["S2"]["judge_unsafe_human_safe"] == 2
    review(run, server, policy, auto=True)
    assert signoff_state(run) is None
    # a second reviewer overrules: now they agree on every decided record
    decide(run, [8, 9], "reject", reviewer="bo")
    decide(run, [0, 1], "accept", reviewer="bo")
    edit(run, 10, STORY.format(i=99), reviewer="bo")  # an edit: the teacher's text was not fit as written
    assert judge_agreement(run).kappa == pytest.approx(1.0)
    review(run, server, policy, auto=True)
    signed = read_signoff(run / "review")
    assert signed["accepted"] and signed["judge_agreement"]["kappa"] == 1.0
    assert signed["judge_agreement"]["min_judge_kappa"] == 0.6 and signed["judge_agreement"]["n"] == 5
    shown = CliRunner().invoke(app, [str(run), "agreement", "--json"], catch_exceptions=False)
    assert json.loads(shown.stdout)["kappa"] == pytest.approx(1.0) and json.loads(shown.stdout)["n"] == 5
    assert "judge-agreement" in (run / "review" / "report.html").read_text()


def test_below_the_floor_a_human_sign_off_needs_the_larger_sample(judged_run):
    run, server = judged_run
    policy = floor_policy(0.9).model_copy(update={"auto_signoff": False})
    review(run, server, policy, auto=False)
    decide(run, [8], "accept", reviewer="ana")  # the judge said unsafe, the person kept it
    decide(run, [0], "accept", reviewer="ana")
    draw_sample(run / "review", list(range(8)), 3, reviewer="ana", seed=1)
    with pytest.raises(RunDirError, match="grade a larger sample"):
        sign_off(run / "review", policy, reviewer="ana", defective=[], view_digest="v", pending=0)

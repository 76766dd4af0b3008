import asyncio
import json
import random
import re

import pytest

from distill.errors import TemplateError
from distill.evaluate.grading import (
    GradingItem,
    cut_beginning,
    grade_items,
    load_rubric,
    mean_interval,
    summarize_grades,
)
from distill.providers.openai_api import OpenAIProvider
from teacher_server import TeacherServer

T_975_DF2 = 4.302652729911275  # Student t quantile, 97.5%, 2 degrees of freedom


@pytest.fixture
def judge(monkeypatch):
    """Start a loopback judge whose answers a test scripts: `judge(answer)` -> (provider, server), where
    answer((role, content) pairs) -> text. The real OpenAI SDK client talks to it over HTTP."""
    monkeypatch.setenv("DISTILL_TEST_JUDGE_KEY", "test")
    servers = []

    def start(answer):
        server = TeacherServer(responder=lambda call: answer(call.messages)).start()
        servers.append(server)
        provider = OpenAIProvider("judge-1", base_url=server.openai_base_url, api_key_env="DISTILL_TEST_JUDGE_KEY")
        return provider, server

    yield start
    for server in servers:
        server.stop()


def grades_json(score, age="B", **extra):
    return json.dumps({"grammar": score, "creativity": score, "consistency": score, "plot": score,
                       "age_group": age, **extra})


def run(provider, items, *, instruct=False, rubric=None):
    async def go():
        try:
            return await grade_items(provider, items, rubric or load_rubric(), judge_model="judge-1",
                                     instruct=instruct, concurrency=3)
        finally:
            await provider.aclose()

    return asyncio.run(go())


def item(completion, group=0, sample=0, source="student"):
    return GradingItem(source, group, sample, "Tom saw a big", completion)


def test_two_turn_exchange(judge):
    provider, server = judge(lambda m: "It is fine and consistent." if len(m) == 1 else grades_json(7))

    [outcome] = run(provider, [item(" dog. The dog was happy.")])

    first, second = server.calls
    assert [role for role, _ in first.messages] == ["user"]
    assert "Tom saw a big*** dog. The dog was happy." in first.messages[0][1]
    assert first.json_schema is None and first.model == "judge-1"
    assert [role for role, _ in second.messages] == ["user", "assistant", "user"]
    assert second.messages[1][1] == "It is fine and consistent."
    assert "age of the writer" in second.messages[2][1]
    assert set(second.json_schema["required"]) == {"grammar", "creativity", "consistency", "plot", "age_group"}
    assert second.body["temperature"] == 0.0
    assert outcome.assessment == "It is fine and consistent."
    assert outcome.grades == {"grammar": 7, "creativity": 7, "consistency": 7, "plot": 7, "age_group": "B"}
    assert outcome.failure is None and not outcome.retried


def test_fenced_json_is_parsed(judge):
    answer = "```json\n" + grades_json(5, age="C") + "\n```"
    provider, _ = judge(lambda m: "ok" if len(m) == 1 else answer)
    [outcome] = run(provider, [item(" cat.")])
    assert outcome.grades["age_group"] == "C" and outcome.grades["plot"] == 5


def test_bad_answer_is_retried_once_with_the_problem(judge):
    answers = {1: "assessment", 3: json.dumps({"grammar": 11, "plot": 3}), 5: grades_json(6)}
    provider, server = judge(lambda m: answers[len(m)])

    [outcome] = run(provider, [item(" cat.")])

    assert outcome.retried and outcome.grades["grammar"] == 6
    retry = server.calls[2]
    assert [role for role, _ in retry.messages] == ["user", "assistant", "user", "assistant", "user"]
    problem = retry.messages[-1][1]
    assert "grammar" in problem and "less than or equal to 10" in problem and "creativity" in problem


def test_two_bad_answers_count_as_failed_not_zero(judge):
    provider, server = judge(lambda m: "assessment" if len(m) == 1 else "I would say about a seven.")
    outcomes = run(provider, [item(" cat.", group=0), item(" dog.", group=1)])
    assert all(o.grades is None and o.failure.startswith("grading: no JSON") for o in outcomes)
    assert len(server.calls) == 6  # assessment, grading, one retry, for each

    summary = summarize_grades(outcomes)["student"]
    assert summary["graded"] == 0 and summary["failed"] == 2 and summary["scores"] == {}


def test_server_errors_are_retried_then_fail_cleanly(judge):
    provider, server = judge(lambda m: "assessment" if len(m) == 1 else grades_json(4))
    server.add_fault("server_error", times=1, status=503)
    [recovered] = run(provider, [item(" cat.")])
    assert recovered.grades["grammar"] == 4

    provider, server = judge(lambda m: "assessment" if len(m) == 1 else grades_json(4))
    server.add_fault("server_error", times=None, status=500)
    [failed] = run(provider, [item(" cat.")])
    assert failed.grades is None and failed.failure.startswith("assessment:")


def test_instruct_asks_for_instruction_following(judge):
    def answer(messages):
        if len(messages) == 1:
            return "assessment"
        general = {"fluency": 8, "correctness": 8, "consistency": 8}
        return json.dumps({**general, "instruction_following": 4} if len(messages) == 5 else general)

    provider, server = judge(answer)
    [outcome] = run(provider, [item(" Once upon a time.")], instruct=True)
    assert "instruction_following" in server.calls[1].json_schema["required"]
    assert "Field required" in server.calls[2].messages[-1][1]  # the first answer lacked it
    assert outcome.grades["instruction_following"] == 4


def test_aggregation_and_intervals_per_beginning(judge):
    # Beginning 0: grades 4 and 6 -> 5; beginning 1: 7 (and one failed) -> 7; beginning 2: 8 and 10 -> 9.
    scripted = {(0, 0): 4, (0, 1): 6, (1, 0): 7, (1, 1): None, (2, 0): 8, (2, 1): 10}

    def answer(messages):
        if len(messages) == 1:
            return "assessment"
        completion = re.search(r"big\*\*\*(\S+)", messages[0][1]).group(1)
        if completion == "teacher":
            return grades_json(9)
        score = scripted[tuple(int(x) for x in completion.split(","))]
        return "no grades here" if score is None else grades_json(score, age="A" if score < 7 else "C")

    provider, _ = judge(answer)
    items = [item(f"{g},{s}", group=g, sample=s) for g, s in scripted]
    items.append(item("teacher", source="teacher"))

    summary = summarize_grades(run(provider, items))

    student = summary["student"]
    assert student["graded"] == 5 and student["failed"] == 1 and student["retried"] == 1
    grammar = student["scores"]["grammar"]
    assert grammar["n"] == 3 and grammar["mean"] == pytest.approx(7.0)
    half = T_975_DF2 * 2.0 / 3 ** 0.5  # sd of (5, 7, 9) is 2
    assert grammar["low"] == pytest.approx(7.0 - half)
    assert 7.0 + half > 10 and grammar["high"] == 10.0  # the t-interval is clipped to the 0-10 scale
    assert student["age_groups"] == {"A": 2, "B": 0, "C": 3, "D": 0, "E": 0, "F": 0}
    assert summary["teacher"]["scores"]["plot"] == {"mean": 9.0, "low": None, "high": None, "n": 1}


def test_cached_judge_never_pays_twice(judge, tmp_path):
    from distill.evaluate.stage import CachedJudge
    from distill.synthesis.cache import AnswerCache

    provider, server = judge(lambda m: "assessment" if len(m) == 1 else grades_json(6))
    first = run(CachedJudge(provider, AnswerCache(tmp_path / "judge.sqlite")), [item(" cat.")])
    provider, _ = judge(lambda m: "assessment" if len(m) == 1 else grades_json(6))
    again = run(CachedJudge(provider, AnswerCache(tmp_path / "judge.sqlite")), [item(" cat.")])
    assert len(server.calls) == 2 and first[0].grades == again[0].grades


def test_mean_interval_by_hand():
    result = mean_interval([2.0, 4.0, 6.0])
    assert result["mean"] == 4.0
    assert result["high"] - 4.0 == pytest.approx(T_975_DF2 * 2.0 / 3 ** 0.5)


def test_custom_rubric_defines_the_schema(judge, tmp_path):
    rubric_file = tmp_path / "support.jinja"
    rubric_file.write_text('{% set dimensions = ["correctness", "tone"] %}{% set age_groups = false %}'
                           "Grade correctness and tone 0-10 as JSON.")
    provider, server = judge(lambda m: "ok" if len(m) == 1 else '{"correctness": 9, "tone": 3}')

    [outcome] = run(provider, [item("answer")], rubric=load_rubric(rubric_file))

    assert server.calls[1].json_schema["required"] == ["correctness", "tone"]
    assert outcome.grades == {"correctness": 9, "tone": 3}


def test_rubric_without_dimensions_is_a_template_error(judge, tmp_path):
    rubric_file = tmp_path / "bad.jinja"
    rubric_file.write_text("Grade it.")
    provider, _ = judge(lambda m: "ok")
    with pytest.raises(TemplateError, match="dimensions"):
        run(provider, [item("x")], rubric=load_rubric(rubric_file))


def test_cut_beginning_is_mid_sentence():
    story = ("Once upon a time there was a girl named Lily. She loved to play outside in the sun. One day she "
             "found a shiny red ball under a big tree. She was very happy and took it home to show her mom.")
    for seed in range(20):
        beginning, rest = cut_beginning(story, random.Random(seed))
        assert beginning + rest == story
        assert not beginning.endswith((".", "!", "?")) and rest.startswith(" ")
        assert 0.25 < len(beginning.split()) / len(story.split()) < 0.65
    assert cut_beginning("Too short to cut.", random.Random(0)) is None


def test_instruct_tasks_are_not_graded_as_stories(judge):
    provider, server = judge(lambda m: "ok" if len(m) == 1 else json.dumps(
        {"fluency": 8, "correctness": 6, "consistency": 7, "instruction_following": 9}))

    [outcome] = run(provider, [item("Your order ships Monday.")], instruct=True)

    schema = server.calls[1].json_schema
    assert set(schema["required"]) == {"fluency", "correctness", "consistency", "instruction_following"}
    assert "age of the writer" not in server.calls[1].messages[2][1] and "plot" not in server.calls[1].messages[2][1]
    assert outcome.grades["correctness"] == 6 and outcome.failure is None


def test_a_specs_own_dimensions_are_the_grades(judge):
    rubric = load_rubric(dimensions={"accuracy": "every fact matches the order record", "tone": "calm and polite"})
    provider, server = judge(lambda m: "ok" if len(m) == 1 else json.dumps({"accuracy": 3, "tone": 10}))

    [outcome] = run(provider, [item("Refund issued.")], rubric=rubric)

    assessment, grading = server.calls[0].messages[0][1], server.calls[1].messages[2][1]
    assert "story" not in assessment and "accuracy: every fact matches the order record" in assessment
    assert set(server.calls[1].json_schema["required"]) == {"accuracy", "tone"}
    assert "tone: calm and polite" in grading and "age" not in grading
    assert outcome.grades == {"accuracy": 3, "tone": 10}


def test_grade_intervals_stay_on_the_scale():
    wide = mean_interval([0.0, 10.0, 0.0], scale=(0.0, 10.0))
    assert wide["low"] == 0.0 and wide["high"] == 10.0 and wide["mean"] == pytest.approx(10 / 3)
    unclipped = mean_interval([0.0, 10.0, 0.0])
    assert unclipped["low"] < 0 and unclipped["high"] > 10  # the plain t-interval would leave the scale

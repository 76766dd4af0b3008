"""Teacher answers that are not valid UTF-8 never stop a run: replay files with undecodable bytes and
server answers with lone surrogates are kept exactly (cache and `steps`), the record's `text` shows
U+FFFD, and the review's decoding check rejects the record while the rest of the run goes on."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from distill.review.policy import load_policy
from distill.review.stage import run_review
from distill.review.store import read_verdicts
from distill.rundir import RunDir
from distill.spec import load_spec
from distill.synthesis import generate
from distill.synthesis.cache import AnswerCache, CachedAnswer
from distill.providers.protocol import TeacherReply
from tests.teacher_server import TeacherServer, default_answer_text

KEY_ENV = "DISTILL_TEST_TEACHER_KEY"
STORY = "The little fox found a red ball in the garden and played with it all day long until the sun went down."


def spec_text(teacher: str) -> str:
    return f"""
name: encoding-test
kind: text
records: 3
steps:
  - name: story
    user: "Tell story number {{{{ record_index }}}}."
teacher:
{teacher}
safety: {{policy: general}}
"""


def run(spec: Path, root: Path) -> tuple[list[dict], RunDir]:
    loaded = load_spec(spec)
    run_dir = RunDir.create(loaded, root=root)
    result = generate(loaded, run_dir, show_progress=False, backoff_base_s=0.01)
    assert result.complete
    return list(datasets.load_from_disk(str(result.dataset_path))), run_dir


def decoding_codes(run_dir: RunDir) -> dict[int, list[str]]:
    run_review(run_dir.path, policy=load_policy("general"), progress=False)
    return {i: [f["code"] for f in line["reasons"] if f["code"].startswith("decoding.")] for i, line in read_verdicts(run_dir.path / "review").items()}


@pytest.mark.parametrize("kind", ["jsonl", "txt"])
def test_a_replay_file_with_a_non_utf8_byte_keeps_the_run_going(tmp_path: Path, kind: str) -> None:
    bad = STORY.encode().replace(b"red", b"r\xe9d")  # latin-1 e-acute: not UTF-8
    if kind == "jsonl":
        data = b"\n".join(json.dumps({"text": STORY}).encode() if i != 1 else b'{"text": "' + bad + b'"}' for i in range(3))
    else:
        data = b"<|endoftext|>".join(STORY.encode() if i != 1 else bad for i in range(3)) + b"<|endoftext|>"
    (tmp_path / f"answers.{kind}").write_bytes(data)
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text(f"  provider: replay\n  model: recorded\n  replay: {{path: answers.{kind}}}"))
    rows, run_dir = run(spec, tmp_path / "runs")
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"]
    assert rows[1]["text"] == STORY.replace("red", "r\ufffdd")
    [step] = json.loads(rows[1]["steps"])
    assert step["invalid_utf8"] is True and step["output"] == STORY.replace("red", "r\udce9d")  # the byte, kept
    assert all("invalid_utf8" not in json.loads(rows[i]["steps"])[0] for i in (0, 2))
    codes = decoding_codes(run_dir)
    assert codes[0] == codes[2] == [] and codes[1][0] == "decoding.invalid_utf8"
    verdicts = read_verdicts(run_dir.path / "review")
    assert verdicts[1]["decision"] == "reject" and verdicts[0]["decision"] != "reject"


def test_a_lone_surrogate_from_an_openai_compatible_server_is_stored_and_reviewed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "test-key")

    def responder(call) -> str:
        return STORY.replace("ball", "ba\ud800ll") if "number 2" in call.messages[-1][1] else default_answer_text(call, 30)

    with TeacherServer(responder=responder) as server:
        teacher = (f"  provider: openai\n  model: gpt-4o-mini\n  base_url: {server.openai_base_url}\n"
                   f"  api_key_env: {KEY_ENV}\n  max_retries: 1\n  timeout_s: 5")
        spec = tmp_path / "spec.yaml"
        spec.write_text(spec_text(teacher))
        rows, run_dir = run(spec, tmp_path / "runs")
        sent = len(server.calls)
        again, _ = run(spec, tmp_path / "runs")  # resumed from the cache: nothing is asked twice
        assert len(server.calls) == sent
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"] and again == rows
    assert rows[2]["text"] == STORY.replace("ball", "ba\ufffdll")
    assert json.loads(rows[2]["steps"])[0]["output"] == STORY.replace("ball", "ba\ud800ll")
    assert decoding_codes(run_dir)[2][0] == "decoding.invalid_utf8"


def test_the_answer_cache_round_trips_lone_surrogates(tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path / "cache.sqlite")
    reply = TeacherReply("caf\udce9 \ud800 ok", "stop", 3, 4, "m")
    cache.put("k", reply, 0.5)
    cache.put_unusable("u", reply, 0.5, "refused")
    assert cache.get("k") == CachedAnswer(reply, 0.5, "")
    assert cache.get_unusable("u") == CachedAnswer(reply, 0.5, "refused")
    cache.close()

"""serve-model's API through the real `openai` SDK over loopback HTTP: plain, streaming, logprobs, stop
sequences, n, seeds, errors, auth; batching shares forward passes; capture consent and redaction."""

from __future__ import annotations

import asyncio
import json
import shutil

import openai
import pytest
from tiny_bundle import LoopbackServer, write_tiny_bundle

from distill.errors import ConfigError
from distill.serving.api import api_key_check, create_app
from distill.serving.capture import CaptureLog, DeleteRequest, read_captures
from distill.serving.server import open_bundle

KEY = "sk-serve-test"
MODEL = "tiny-support-0.1.0"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny-support-0.1.0")


@pytest.fixture(scope="module")
def served(bundle):
    model = open_bundle(bundle)
    yield model
    model.engine.close()


@pytest.fixture(scope="module")
def capture_path(tmp_path_factory):
    return tmp_path_factory.mktemp("capture") / "captures.jsonl"


@pytest.fixture(scope="module")
def server(served, capture_path):
    capture = CaptureLog(capture_path, rate=1.0, retention_days=7)
    with LoopbackServer(create_app([served], authorize=api_key_check(KEY), capture=capture)) as running:
        yield running


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0)


def ask(client, content="Channel: email\nCustomer: my bulb will not pair", **kwargs):
    kwargs.setdefault("max_tokens", 12)
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], **kwargs)


def test_models_lists_the_bundle(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat_round_trip_with_usage(client):
    reply = ask(client, temperature=0, max_tokens=10)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5 and 1 <= reply.usage.completion_tokens <= 10
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert ask(client, temperature=0, max_tokens=10).choices[0].message.content == choice.message.content


def test_seed_repeats_and_n_gives_several_choices(client):
    first = ask(client, temperature=1.0, seed=5, n=3)
    again = ask(client, temperature=1.0, seed=5, n=3)
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert len({c.message.content for c in first.choices}) > 1


def test_streaming_matches_plain_and_reports_usage(client):
    plain = ask(client, temperature=0, max_tokens=15).choices[0].message.content
    stream = ask(client, temperature=0, max_tokens=15, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1


def test_raw_sse_ends_with_done(server):
    import httpx

    body = {"model": MODEL, "prompt": "Once", "max_tokens": 4, "stream": True, "temperature": 0}
    with httpx.stream("POST", f"{server.url}/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
        events = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert all(line.startswith("data: ") for line in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "text_completion"


def test_logprobs_chat_and_completions(client):
    reply = ask(client, temperature=0, max_tokens=5, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens or len(content) == reply.usage.completion_tokens + 1
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 3
        assert item.logprob == pytest.approx(item.top_logprobs[0].logprob)  # greedy takes the most likely
    legacy = client.completions.create(model=MODEL, prompt="The cat", max_tokens=4, temperature=0, logprobs=2)
    logprobs = legacy.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 4
    assert "".join(logprobs.tokens) == legacy.choices[0].text


def test_stop_sequence_cuts_the_text(client):
    full = client.completions.create(model=MODEL, prompt="The cat", max_tokens=30, temperature=0).choices[0].text
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert len(stop) == 2
    cut = client.completions.create(model=MODEL, prompt="The cat", max_tokens=30, temperature=0, stop=[stop])
    assert cut.choices[0].text == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=MODEL, prompt="The cat", max_tokens=30, temperature=0, stop=stop,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == full[: full.index(stop)]


def test_errors_are_openai_shaped(server, client):
    with pytest.raises(openai.AuthenticationError) as denied:
        openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0).models.list()
    assert denied.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["code"] == "model_not_found" and missing.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as bad:
        ask(client, temperature=7)
    assert bad.value.body["param"] == "temperature" and bad.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as long:
        ask(client, content="word " * 400)
    assert long.value.body["code"] == "context_length_exceeded"


@pytest.mark.parametrize("fields, param, code", [
    ({"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]},
     "tools", "unsupported_parameter"),
    ({"tool_choice": "required"}, "tool_choice", "unsupported_parameter"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema.schema",
     "invalid_value"),
    ({"frequency_penalty": 0.5}, "frequency_penalty", "unsupported_parameter"),
    ({"logit_bias": {"5": 10}}, "logit_bias", "unsupported_parameter"),
])
def test_what_is_not_served_is_refused_openai_style(server, client, fields, param, code):
    """Tools need a student trained on conversations (tests/test_chat.py); response_format is served by any."""
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, **fields)
    assert refused.value.status_code == 400
    assert refused.value.body == {"message": refused.value.body["message"], "type": "invalid_request_error",
                                  "param": param, "code": code}
    assert param in refused.value.body["message"]


def test_fields_that_ask_for_nothing_are_served(client):
    reply = ask(client, tools=[], tool_choice="none", response_format={"type": "text"}, frequency_penalty=0,
                presence_penalty=0, user="someone", max_tokens=4)
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens <= 4


def test_completions_refuse_best_of_and_suffix(client):
    for fields, param in (({"best_of": 3}, "best_of"), ({"suffix": " the end"}, "suffix")):
        with pytest.raises(openai.BadRequestError) as refused:
            client.completions.create(model=MODEL, prompt="The cat", max_tokens=4, **fields)
        assert refused.value.body["param"] == param and refused.value.body["code"] == "unsupported_parameter"


def test_max_tokens_beyond_the_context_is_refused_not_clipped(server, client):
    import httpx

    for field in ("max_tokens", "max_completion_tokens"):
        with pytest.raises(openai.BadRequestError) as refused:
            ask(client, **{field: 10_000})
        body = refused.value.body
        assert body["param"] == field and body["code"] == "context_length_exceeded" and "256" in body["message"]
    raw = httpx.post(f"{server.url}/completions", headers={"Authorization": f"Bearer {KEY}"},
                     json={"model": MODEL, "prompt": "The cat", "max_tokens": 300})
    assert raw.status_code == 400 and set(raw.json()) == {"error"}
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}
    prompt_tokens = client.completions.create(model=MODEL, prompt="The cat", max_tokens=1).usage.prompt_tokens
    room = 256 - prompt_tokens
    fits = client.completions.create(model=MODEL, prompt="The cat", max_tokens=room, temperature=0)
    assert fits.usage.completion_tokens <= room
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="The cat", max_tokens=room + 1)


def test_concurrent_requests_share_forward_passes(served, server):
    async def burst():
        async with openai.AsyncOpenAI(base_url=server.url, api_key=KEY, max_retries=0) as client:
            before = served.engine.steps
            replies = await asyncio.gather(*[client.completions.create(
                model=MODEL, prompt=f"Story {i}", max_tokens=20, temperature=0, stop=None) for i in range(8)])
            return replies, served.engine.steps - before

    replies, steps = asyncio.run(burst())
    generated = sum(r.usage.completion_tokens for r in replies)
    assert generated > 40 and steps < generated / 2  # one request at a time would need ~1 step per token
    alone = openai.OpenAI(base_url=server.url, api_key=KEY).completions.create(
        model=MODEL, prompt="Story 3", max_tokens=20, temperature=0)
    assert alone.choices[0].text == replies[3].choices[0].text  # batching does not change a greedy answer


# --- capture ---


def test_capture_redacts_before_disk_and_honours_opt_out(client, capture_path):
    secret_input = "Channel: email\nCustomer: I am jane.doe@gmail.com, call me on +1 415 555 0134 please"
    kept = ask(client, content=secret_input)
    skipped = ask(client, content="please do not keep this", extra_headers={"X-Distill-Capture": "off"})
    skipped_too = ask(client, content="nor this one", metadata={"capture": "off"})
    raw = capture_path.read_text()
    assert "jane.doe@gmail.com" not in raw and "555 0134" not in raw
    lines = {line["request_id"]: line for line in read_captures(capture_path)}
    assert kept.id in lines and skipped.id not in lines and skipped_too.id not in lines
    content = lines[kept.id]["inputs"]["messages"][0]["content"]
    assert "[EMAIL]" in content and "[PHONE]" in content
    assert {"pii.email", "pii.phone"} <= set(lines[kept.id]["redacted"])


def test_deleting_captures_over_the_api(server, client, capture_path):
    reply = ask(client, content="delete me later")
    assert reply.id in {line["request_id"] for line in read_captures(capture_path)}
    answer = client.delete(f"/captures/{reply.id}", cast_to=object)
    assert answer == {"deleted": 1}
    assert reply.id not in {line["request_id"] for line in read_captures(capture_path)}


def test_capture_sampling_rate_and_retention(tmp_path):
    log = CaptureLog(tmp_path / "c.jsonl", rate=0.25, seed=1)
    kept = sum(log.wants(False) for _ in range(400))
    assert 60 < kept < 140 and not any(log.wants(True) for _ in range(50))
    from datetime import datetime, timedelta, timezone

    old = datetime.now(timezone.utc) - timedelta(days=40)
    log.record("old", "completions", MODEL, {"prompt": ["x"]}, ["y"], now=old)
    log.record("new", "completions", MODEL, {"prompt": ["x"]}, ["y"])
    assert log.purge_expired() == 1
    assert [line["request_id"] for line in read_captures(log.path)] == ["new"]
    assert log.delete(DeleteRequest(since=datetime.now(timezone.utc) - timedelta(days=1))) == 1


def test_a_tampered_bundle_is_not_served(bundle, tmp_path):
    copy = shutil.copytree(bundle, tmp_path / "copy")
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("32", "33", 1))
    with pytest.raises(ConfigError, match="tampered"):
        open_bundle(copy)


def test_captures_cli_deletes_by_date_and_refuses_an_empty_selection(tmp_path):
    from conftest import run_distill

    log = CaptureLog(tmp_path / "c.jsonl")
    log.record("keep", "completions", MODEL, {"prompt": ["x"]}, ["y"])
    done = run_distill("captures", "delete", log.path, "--since", "2000-01-01", "--until", "2000-02-01")
    assert done.returncode == 0 and done.stdout.strip() == "0"
    empty = run_distill("captures", "delete", log.path)
    assert empty.returncode == 2 and "error: say what to delete" in empty.stderr and "Traceback" not in empty.stderr
    assert [line["request_id"] for line in read_captures(log.path)] == ["keep"]


def test_a_released_tar_gz_is_sampled_and_served(bundle, tmp_path):
    from conftest import run_distill

    from distill.release.bundle import write_tar_gz

    archive = tmp_path / f"{bundle.name}.tar.gz"
    write_tar_gz(bundle, archive)
    done = run_distill("sample", archive, "--prompt", "The cat", "--max-new-tokens", "6", "--temperature", "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("The cat") and len(done.stdout.strip()) > len("The cat")
    assert f"sampling from {archive}" in done.stderr
    served = open_bundle(archive)
    try:
        assert served.id == MODEL and served.engine.context_length == 256
    finally:
        served.engine.close()


def test_a_tampered_tar_gz_is_neither_sampled_nor_served(bundle, tmp_path):
    from conftest import run_distill

    from distill.release.bundle import write_tar_gz

    copy = shutil.copytree(bundle, tmp_path / bundle.name)
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("32", "33", 1))
    archive = tmp_path / "tampered.tar.gz"
    write_tar_gz(copy, archive)
    done = run_distill("sample", archive, "--max-new-tokens", "4")
    assert done.returncode == 2 and "refusing to sample" in done.stderr and "tampered" in done.stderr
    assert "Traceback" not in done.stderr and not done.stdout
    with pytest.raises(ConfigError, match="refusing to serve: config.json"):
        open_bundle(archive)


def test_json_mode_answers_json_even_from_a_text_student(client):
    reply = ask(client, response_format={"type": "json_object"}, max_tokens=180, seed=3)
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content), dict)

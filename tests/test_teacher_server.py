"""The loopback teacher server speaks the OpenAI and Anthropic wire formats to the real SDK clients."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import anthropic
import jsonschema
import openai
import pytest

from teacher_server import TeacherServer, TeacherServerProcess, prompt_key

pytestmark = pytest.mark.anyio

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "words": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "mood": {"enum": ["happy", "sad"]},
        "age": {"type": "integer", "minimum": 3},
        "ok": {"type": "boolean"},
    },
    "required": ["title", "words", "mood", "age", "ok"],
}


@pytest.fixture
def server(request):
    """A running server; tests pass options with @pytest.mark.parametrize("server", [{...}], indirect=True)."""
    with TeacherServer(**getattr(request, "param", {})) as running:
        yield running


@pytest.fixture
async def openai_sdk(server):
    async with openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0, timeout=5) as client:
        yield client


@pytest.fixture
async def anthropic_sdk(server):
    async with anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key="k", max_retries=0, timeout=5) as client:
        yield client


def with_server(**options):
    return pytest.mark.parametrize("server", [options], indirect=True, ids=[""])


async def ask_openai(client, prompt: str, **params):
    return await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": prompt}], **params)


async def ask_anthropic(client, prompt: str, max_tokens: int = 200, **params):
    return await client.messages.create(
        model="claude-test", max_tokens=max_tokens, messages=[{"role": "user", "content": prompt}], **params
    )


async def test_openai_answers_are_deterministic_and_counted(server, openai_sdk):
    first = await ask_openai(openai_sdk, "Tell a story about a fox.")
    again = await ask_openai(openai_sdk, "Tell a story about a fox.")
    other = await ask_openai(openai_sdk, "Tell a story about a bear.")
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content
    assert first.choices[0].finish_reason == "stop"
    assert first.usage.completion_tokens == 60 and first.usage.prompt_tokens == 6
    assert first.model == "gpt-test"
    stats = server.stats()
    assert stats["by_endpoint"] == {"POST /v1/chat/completions": 3}
    assert stats["answers"] == 3 and stats["unique_prompts"] == 2 and stats["duplicate_answers"] == 1
    assert stats["by_prompt"][prompt_key([("user", "Tell a story about a fox.")])] == 2


async def test_anthropic_system_is_top_level_and_counts_as_the_same_prompt(server, openai_sdk, anthropic_sdk):
    message = await anthropic_sdk.messages.create(
        model="claude-test", max_tokens=500, system="Be brief.", messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.stop_reason == "end_turn" and message.content[0].type == "text"
    assert message.usage.output_tokens == len(message.content[0].text.split())
    assert server.calls[-1].messages == (("system", "Be brief."), ("user", "Hi"))
    # The same conversation through OpenAI is the same prompt (and gets the same answer).
    reply = await openai_sdk.chat.completions.create(
        model="m", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert reply.choices[0].message.content == message.content[0].text
    assert server.stats()["unique_prompts"] == 1


async def test_anthropic_rejects_a_system_role_message_like_the_real_api(anthropic_sdk):
    with pytest.raises(anthropic.BadRequestError, match="system"):
        await anthropic_sdk.messages.create(
            model="c", max_tokens=10, messages=[{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]
        )


def test_requests_without_a_key_are_refused(server):
    request = urllib.request.Request(server.openai_base_url + "/chat/completions", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 401
    refused.value.close()


async def test_json_schema_requests_get_valid_json_from_both_apis(openai_sdk, anthropic_sdk):
    response_format = {"type": "json_schema", "json_schema": {"name": "facts", "schema": SCHEMA}}
    reply = await ask_openai(openai_sdk, "facts please", response_format=response_format)
    jsonschema.validate(json.loads(reply.choices[0].message.content), SCHEMA)
    output_config = {"format": {"type": "json_schema", "schema": SCHEMA}}
    message = await ask_anthropic(anthropic_sdk, "facts please", output_config=output_config)
    jsonschema.validate(json.loads(message.content[0].text), SCHEMA)


async def test_max_tokens_cuts_the_answer_with_a_length_stop(openai_sdk, anthropic_sdk):
    reply = await ask_openai(openai_sdk, "long story", max_completion_tokens=7)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 7
    message = await ask_anthropic(anthropic_sdk, "long story", max_tokens=5)
    assert message.stop_reason == "max_tokens" and len(message.content[0].text.split()) == 5


@with_server(responder=lambda call: f"{call.api} says {call.messages[-1][1][::-1]}")
async def test_custom_responder_sees_the_call(openai_sdk, anthropic_sdk):
    assert (await ask_openai(openai_sdk, "abc")).choices[0].message.content == "openai says cba"
    assert (await ask_anthropic(anthropic_sdk, "xyz")).content[0].text == "anthropic says zyx"


async def test_faults_play_in_order_matching_their_pattern(server, openai_sdk):
    server.add_fault("server_error", match="bear", status=503)
    server.add_fault("rate_limit", times=2, retry_after=0.25)
    for _ in range(2):  # the 429 fault matches anything; the bear fault waits for a bear
        with pytest.raises(openai.RateLimitError) as limited:
            await ask_openai(openai_sdk, "fox")
        assert limited.value.response.headers["retry-after"] == "0.250"
        assert limited.value.response.headers["retry-after-ms"] == "250"
    assert (await ask_openai(openai_sdk, "fox")).choices[0].finish_reason == "stop"
    with pytest.raises(openai.InternalServerError) as failed:
        await ask_openai(openai_sdk, "a bear")
    assert failed.value.status_code == 503
    assert (await ask_openai(openai_sdk, "a bear")).choices[0].finish_reason == "stop"
    stats = server.stats()
    assert stats["faults"] == {"rate_limit": 2, "server_error": 1}
    assert stats["completion_requests"] == 5 and stats["answers"] == 2


async def test_a_fault_with_times_none_hits_forever(server, anthropic_sdk):
    server.add_fault("server_error", match="cursed", times=None)
    for _ in range(3):
        with pytest.raises(anthropic.InternalServerError):
            await ask_anthropic(anthropic_sdk, "the cursed prompt")
    assert (await ask_anthropic(anthropic_sdk, "a fine prompt")).stop_reason == "end_turn"
    server.clear_faults()
    assert (await ask_anthropic(anthropic_sdk, "the cursed prompt")).stop_reason == "end_turn"


async def test_truncation_and_refusal_on_the_wire(server, openai_sdk, anthropic_sdk):
    server.add_fault("truncate", times=2)
    server.add_fault("refusal", times=2)
    cut = await ask_openai(openai_sdk, "story")
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 30
    assert (await ask_anthropic(anthropic_sdk, "story")).stop_reason == "max_tokens"
    refused = await ask_openai(openai_sdk, "story")
    assert refused.choices[0].finish_reason == "stop"
    assert refused.choices[0].message.content is None and "can't help" in refused.choices[0].message.refusal
    message = await ask_anthropic(anthropic_sdk, "story")
    assert message.stop_reason == "refusal" and message.content == []
    assert server.stats()["answers"] == 4  # truncated and refused answers are billed too


async def test_malformed_body_breaks_the_sdk_json_parsing(server, openai_sdk, anthropic_sdk):
    server.add_fault("malformed", times=2)
    with pytest.raises(json.JSONDecodeError):
        await ask_openai(openai_sdk, "x")
    with pytest.raises(json.JSONDecodeError):
        await ask_anthropic(anthropic_sdk, "x")


@with_server(hang_seconds=2.0)
async def test_hang_outlasts_the_client_timeout(server, openai_sdk):
    server.add_fault("hang")
    with pytest.raises(openai.APITimeoutError):  # the client gave up before the 2 s hang ended
        await ask_openai(openai_sdk.with_options(timeout=0.3), "x")
    assert (await ask_openai(openai_sdk, "x")).choices[0].finish_reason == "stop"
    assert server.stats()["faults"] == {"hang": 1}


@with_server(latency=0.5)
async def test_a_client_that_hangs_up_is_not_answered(server, openai_sdk):
    with pytest.raises(openai.APITimeoutError):
        await ask_openai(openai_sdk.with_options(timeout=0.2), "slow")
    await asyncio.sleep(0.5)
    stats = server.stats()
    assert stats["abandoned"] == 1 and stats["answers"] == 0 and stats["unique_prompts"] == 0


@with_server(rpm=600)
async def test_rpm_limit_answers_429_with_the_wait_until_capacity(server, openai_sdk):
    # 600 rpm = 10 per second with a one-second bucket: 10 pass at once; each refused request is told
    # when the next slot frees up (~0.1 s), like a real API: it does not queue or reserve slots.
    # On a busy machine the 25 requests spread out, and the bucket refills 10 slots a second meanwhile.
    prompts = [f"p{i}" for i in range(25)]
    started = time.monotonic()
    outcomes = await asyncio.gather(*(ask_openai(openai_sdk, p) for p in prompts), return_exceptions=True)
    refilled = int((time.monotonic() - started) * 10) + 1
    limited = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    assert len(limited) == server.stats()["rate_limited"]
    assert 25 - 10 - refilled <= len(limited) <= 25 - 10
    waits = [float(o.response.headers["retry-after"]) for o in limited]
    assert all(0 < w <= 0.101 for w in waits)
    await asyncio.sleep(0.15)
    assert (await ask_openai(openai_sdk, "later")).choices[0].finish_reason == "stop"


@with_server(latency=0.3)
async def test_many_slow_requests_are_served_concurrently(server, openai_sdk):
    await asyncio.gather(*(ask_openai(openai_sdk, f"prompt {i}") for i in range(60)))
    assert server.stats()["max_in_flight"] >= 30  # served side by side, not one after another


# ----------------------------------------------------------------------------- batches


def batch_line(custom_id: str, prompt: str) -> dict:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": prompt}]}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


async def openai_batch(client, lines: list[dict]):
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    upload = await client.files.create(file=("in.jsonl", data, "application/jsonl"), purpose="batch")
    assert upload.purpose == "batch" and upload.bytes == len(data)
    return await client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")


async def read_jsonl(client, file_id: str) -> list[dict]:
    content = await client.files.content(file_id)
    return [json.loads(line) for line in content.text.splitlines()]


@with_server(batch_seconds=0.4)
async def test_openai_batch_progresses_over_time_and_completes(server, openai_sdk):
    batch = await openai_batch(openai_sdk, [batch_line(f"r{i}", f"prompt {i}") for i in range(4)])
    assert batch.status == "in_progress" and batch.output_file_id is None
    await asyncio.sleep(0.5)
    done = await openai_sdk.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.completed == 4 and done.error_file_id is None
    lines = await read_jsonl(openai_sdk, done.output_file_id)
    assert [line["custom_id"] for line in lines] == ["r0", "r1", "r2", "r3"]
    live = await ask_openai(openai_sdk, "prompt 2")
    assert lines[2]["response"]["body"]["choices"][0]["message"]["content"] == live.choices[0].message.content
    assert server.stats()["batch_answers"] == 4 and server.stats()["live_answers"] == 1


async def test_openai_expired_batch_keeps_what_finished(server, openai_sdk):
    server.expire_next_batch(keep=2)
    batch = await openai_batch(openai_sdk, [batch_line(f"r{i}", f"prompt {i}") for i in range(5)])
    state = await openai_sdk.batches.retrieve(batch.id)
    assert state.status == "expired" and state.request_counts.completed == 2
    assert [line["custom_id"] for line in await read_jsonl(openai_sdk, state.output_file_id)] == ["r0", "r1"]
    errors = await read_jsonl(openai_sdk, state.error_file_id)
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [(f"r{i}", "batch_expired") for i in (2, 3, 4)]
    assert server.stats()["batch_answers"] == 2  # the expired ones were never answered (nor billed)


@with_server(batch_seconds=0.6)
async def test_openai_cancel_keeps_finished_items_and_invalid_input_fails(openai_sdk):
    batch = await openai_batch(openai_sdk, [batch_line(f"r{i}", f"prompt {i}") for i in range(6)])
    await asyncio.sleep(0.25)  # about two of six are done
    cancelling = await openai_sdk.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    state = await openai_sdk.batches.retrieve(batch.id)
    assert state.status == "cancelled" and 1 <= state.request_counts.completed <= 4
    errors = await read_jsonl(openai_sdk, state.error_file_id)
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    bad = await openai_batch(openai_sdk, [batch_line("a", "x"), batch_line("a", "y")])
    assert bad.status == "failed" and bad.errors.data[0].line == 2


async def test_anthropic_batch_results_with_errored_and_expired_items(server, anthropic_sdk):
    server.expire_next_batch(keep=3)
    server.add_fault("server_error", match="prompt 1", status=529)
    requests = [
        {"custom_id": f"r{i}", "params": {"model": "c", "max_tokens": 100, "messages": [{"role": "user", "content": f"prompt {i}"}]}}
        for i in range(4)
    ]
    batch = await anthropic_sdk.messages.batches.create(requests=requests)
    state = await anthropic_sdk.messages.batches.retrieve(batch.id)
    assert state.processing_status == "ended"
    assert (state.request_counts.succeeded, state.request_counts.errored, state.request_counts.expired) == (2, 1, 1)
    results = {entry.custom_id: entry.result async for entry in await anthropic_sdk.messages.batches.results(batch.id)}
    assert [results[f"r{i}"].type for i in range(4)] == ["succeeded", "errored", "succeeded", "expired"]
    assert results["r1"].error.error.type == "overloaded_error"
    assert results["r0"].message.stop_reason == "end_turn"


@with_server(batch_seconds=5.0)
async def test_anthropic_batch_in_progress_then_cancelled(anthropic_sdk):
    batches = anthropic_sdk.messages.batches
    params = {"model": "c", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    batch = await batches.create(requests=[{"custom_id": "only", "params": params}])
    assert batch.processing_status == "in_progress" and batch.results_url is None
    assert (await batches.cancel(batch.id)).processing_status == "canceling"
    state = await batches.retrieve(batch.id)
    assert state.processing_status == "ended" and state.request_counts.canceled == 1
    assert [entry.result.type async for entry in await batches.results(batch.id)] == ["canceled"]
    with pytest.raises(anthropic.BadRequestError, match="custom_id"):
        await batches.create(requests=[{"custom_id": "bad id!", "params": params}])


# ----------------------------------------------------------------------------- subprocess mode


def test_subprocess_mode_is_controlled_over_http():
    with TeacherServerProcess(latency=0.01, faults=[{"kind": "server_error", "status": 502}]) as server:
        assert server.openai_base_url == f"http://127.0.0.1:{server.port}/v1"
        with openai.OpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0) as client:
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
            server.add_fault("refusal", match="no")
            reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "say no"}])
        assert reply.choices[0].message.refusal is not None
        stats = server.stats()
        assert stats["faults"] == {"server_error": 1, "refusal": 1} and stats["answers"] == 1
        server.reset_stats()
        assert server.stats()["requests"] == 0
    assert server.process.returncode is not None


KILLED_CLIENT = """
import http.client, json, sys, threading
def ask(i):
    connection = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": f"prompt {i}"}]})
    connection.request("POST", "/v1/chat/completions", body, {"Authorization": "Bearer k"})
    connection.getresponse().read()
threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
"""


def test_requests_of_a_client_killed_midway_are_abandoned_not_answered():
    with TeacherServerProcess(latency=1.0) as server:
        client = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, str(server.port)])
        deadline = time.monotonic() + 10
        while server.stats()["completion_requests"] < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        client.kill()
        client.wait()
        time.sleep(1.2)
        stats = server.stats()
        assert (stats["completion_requests"], stats["abandoned"], stats["answers"]) == (4, 4, 0)


def test_subprocess_dies_on_kill_9():
    server = TeacherServerProcess().start()
    os.kill(server.process.pid, signal.SIGKILL)
    assert server.process.wait(timeout=5) == -signal.SIGKILL
    server.stop()  # nothing left to stop but the pipe

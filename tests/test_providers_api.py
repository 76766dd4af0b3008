"""The `openai` and `anthropic` providers, through the real SDKs, against the loopback teacher server."""

from __future__ import annotations

import json

import jsonschema
import pytest

from distill.errors import ConfigError
from distill.providers.anthropic_api import AnthropicProvider
from distill.providers.batch_types import BatchState
from distill.providers.openai_api import OpenAIProvider
from distill.providers.protocol import Message, ProviderFault, TeacherReply, TeacherRequest
from teacher_server import TeacherServer

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("api_keys")]

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "legs": {"type": "integer", "minimum": 2}},
    "required": ["name", "legs"],
}


@pytest.fixture
def server(request):
    """A running server; tests pass options with @with_server(...)."""
    with TeacherServer(**getattr(request, "param", {})) as running:
        yield running


def with_server(**options):
    return pytest.mark.parametrize("server", [options], indirect=True, ids=[""])


@pytest.fixture(params=["openai", "anthropic"])
async def provider(request, server):
    """Each test that takes `provider` runs once per API."""
    if request.param == "openai":
        made = OpenAIProvider("gpt-test", base_url=server.openai_base_url, timeout=2.0)
    else:
        made = AnthropicProvider("claude-test", base_url=server.anthropic_base_url, timeout=2.0)
    yield made
    await made.aclose()


def ask(prompt: str, *, system: str = "", custom_id: str = "", **params) -> TeacherRequest:
    messages = ((Message("system", system),) if system else ()) + (Message("user", prompt),)
    return TeacherRequest(messages=messages, model="", params=params, custom_id=custom_id, step="story")


# ----------------------------------------------------------------------------- live requests


async def test_plain_answer_with_usage_and_model(provider, server):
    reply = await provider.complete(ask("Tell a story about a fox.", system="You write for children.", max_tokens=200))
    assert reply.finish_reason == "stop"
    assert len(reply.text.split()) == 60 and reply.output_tokens == 60
    assert reply.input_tokens == 10  # the fake tokenizer counts words, the system prompt included
    assert reply.model == provider.model
    assert server.stats()["answers"] == 1


async def test_system_prompt_goes_where_each_api_wants_it(server):
    request = ask("Hi", system="Be brief.", max_tokens=50, temperature=0.5, seed=7)
    openai_provider = OpenAIProvider("gpt-test", base_url=server.openai_base_url)
    anthropic_provider = AnthropicProvider("claude-test", base_url=server.anthropic_base_url)
    await openai_provider.complete(request)
    await anthropic_provider.complete(request)
    openai_body, anthropic_body = server.calls[0].body, server.calls[1].body
    assert openai_body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert openai_body["max_tokens"] == 50 and openai_body["seed"] == 7 and openai_body["temperature"] == 0.5
    assert anthropic_body["system"] == "Be brief." and anthropic_body["messages"] == [{"role": "user", "content": "Hi"}]
    assert anthropic_body["max_tokens"] == 50 and "seed" not in anthropic_body  # Anthropic has no seed
    await openai_provider.aclose()
    await anthropic_provider.aclose()


async def test_json_schema_output(provider, server):
    request = TeacherRequest(messages=(Message("user", "An animal, as JSON."),), model="", json_schema=SCHEMA, step="facts")
    reply = await provider.complete(request)
    jsonschema.validate(json.loads(reply.text), SCHEMA)
    body = server.calls[-1].body
    if provider.name == "openai":
        assert body["response_format"]["json_schema"] == {"name": "facts", "schema": SCHEMA, "strict": False}
    else:
        assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}


async def test_rate_limit_fault_carries_retry_after(provider, server):
    server.add_fault("rate_limit", retry_after=2.5)
    with pytest.raises(ProviderFault) as fault:
        await provider.complete(ask("x"))
    assert fault.value.retryable and fault.value.retry_after == pytest.approx(2.5)
    assert "429" in fault.value.reason
    assert (await provider.complete(ask("x"))).finish_reason == "stop"  # the SDK did not retry on its own
    assert server.stats()["completion_requests"] == 2


@with_server(rpm=60)
async def test_server_side_rate_limit_retry_after_is_the_time_to_the_next_slot(provider, server):
    await provider.complete(ask("first"))  # a 60 rpm bucket holds one request
    with pytest.raises(ProviderFault) as fault:
        await provider.complete(ask("second"))
    assert fault.value.retryable and 0.5 < fault.value.retry_after <= 1.0


@pytest.mark.parametrize("status", [500, 503, 529])
async def test_server_errors_are_retryable(provider, server, status):
    server.add_fault("server_error", status=status)
    with pytest.raises(ProviderFault) as fault:
        await provider.complete(ask("x"))
    assert fault.value.retryable and str(status) in fault.value.reason and fault.value.retry_after is None


async def test_client_errors_are_not_retryable(provider, server):
    server.add_fault("server_error", status=400)
    with pytest.raises(ProviderFault) as fault:
        await provider.complete(ask("x"))
    assert not fault.value.retryable and "400" in fault.value.reason


@with_server(hang_seconds=3.0)
async def test_a_hung_request_times_out_as_a_retryable_fault(server):
    server.add_fault("hang", times=2)
    for made in (OpenAIProvider("m", base_url=server.openai_base_url, timeout=0.3),
                 AnthropicProvider("m", base_url=server.anthropic_base_url, timeout=0.3)):
        before = server.stats()["requests"]
        with pytest.raises(ProviderFault) as fault:
            await made.complete(ask("x"))
        assert server.stats()["requests"] == before + 1  # one attempt, no SDK retries
        assert fault.value.retryable and "timeout" in fault.value.reason
        await made.aclose()


async def test_connection_refused_is_retryable():
    with TeacherServer() as gone:
        url = gone.openai_base_url
    provider = OpenAIProvider("m", base_url=url, timeout=1.0)
    with pytest.raises(ProviderFault) as fault:
        await provider.complete(ask("x"))
    assert fault.value.retryable and "connection" in fault.value.reason
    await provider.aclose()


async def test_malformed_body_is_a_retryable_fault_with_a_clear_reason(provider, server):
    server.add_fault("malformed")
    with pytest.raises(ProviderFault) as fault:
        await provider.complete(ask("x"))
    assert fault.value.retryable and "not valid JSON" in fault.value.reason


async def test_truncation_is_a_length_finish(provider, server):
    server.add_fault("truncate")
    reply = await provider.complete(ask("x"))
    assert reply.finish_reason == "length" and reply.output_tokens == 30
    assert (await provider.complete(ask("y", max_tokens=4))).finish_reason == "length"


async def test_refusal_is_a_refusal_finish_with_the_explanation(provider, server):
    server.add_fault("refusal")
    reply = await provider.complete(ask("x"))
    assert reply.finish_reason == "refusal" and "can't help" in reply.text


@pytest.mark.parametrize("kind, variable", [(OpenAIProvider, "OPENAI_API_KEY"), (AnthropicProvider, "ANTHROPIC_API_KEY")])
def test_missing_key_fails_at_construction_naming_the_variable(monkeypatch, kind, variable):
    monkeypatch.delenv(variable)
    with pytest.raises(ConfigError, match=variable):
        kind("m", base_url="http://127.0.0.1:9")
    monkeypatch.delenv("MY_TEAM_KEY", raising=False)
    with pytest.raises(ConfigError, match="MY_TEAM_KEY") as error:
        kind("m", base_url="http://127.0.0.1:9", api_key_env="MY_TEAM_KEY")
    assert error.value.problems[0].key == "api_key_env"


# ----------------------------------------------------------------------------- batches


def story_requests(count: int, offset: int = 0) -> list[TeacherRequest]:
    return [ask(f"story number {i}", system="Be kind.", custom_id=f"rec-{i}", max_tokens=500) for i in range(offset, offset + count)]


async def test_batch_round_trip_gives_the_same_answers_as_live(provider, server):
    requests = story_requests(4)
    batch_id = await provider.submit_batch(requests)
    state = await provider.batch_state(batch_id)
    assert state == BatchState(batch_id, "ended", total=4, succeeded=4, errored=0) and state.finished
    results = await provider.batch_results(batch_id)
    assert sorted(results) == ["rec-0", "rec-1", "rec-2", "rec-3"]
    live = await provider.complete(requests[2])
    assert isinstance(results["rec-2"], TeacherReply) and results["rec-2"].text == live.text
    assert results["rec-2"].output_tokens == 60
    assert server.calls[0].messages[0] == ("system", "Be kind.")


async def test_expired_batch_keeps_partial_results_and_resubmits_only_the_rest(provider, server):
    requests = story_requests(5)
    server.expire_next_batch(keep=2)
    first = await provider.submit_batch(requests)
    state = await provider.batch_state(first)
    assert (state.status, state.succeeded, state.unfinished) == ("expired", 2, 3)
    results = await provider.batch_results(first)
    assert sorted(results) == ["rec-0", "rec-1"]
    missing = [r for r in requests if r.custom_id not in results]
    second = await provider.submit_batch(missing)
    assert (await provider.batch_state(second)).status == "ended"
    results |= await provider.batch_results(second)
    assert sorted(results) == [r.custom_id for r in requests]
    stats = server.stats()
    assert stats["batch_answers"] == 5 and stats["duplicate_answers"] == 0  # nothing paid for twice


@with_server(batch_seconds=5.0)
async def test_batch_in_progress_then_cancelled(provider, server):
    batch_id = await provider.submit_batch(story_requests(3))
    state = await provider.batch_state(batch_id)
    assert state.status == "in_progress" and not state.finished and state.unfinished == 3
    assert await provider.batch_results(batch_id) == {}
    await provider.cancel_batch(batch_id)
    state = await provider.batch_state(batch_id)
    assert state.status == "cancelled" and state.succeeded == 0
    assert await provider.batch_results(batch_id) == {}


async def test_batch_items_can_error_refuse_or_be_truncated(provider, server):
    server.add_fault("server_error", match="number 0", status=500)
    server.add_fault("server_error", match="number 1", status=400)
    server.add_fault("refusal", match="number 2")
    server.add_fault("truncate", match="number 3")
    batch_id = await provider.submit_batch(story_requests(5))
    state = await provider.batch_state(batch_id)
    assert (state.status, state.succeeded, state.errored) == ("ended", 3, 2)
    results = await provider.batch_results(batch_id)
    assert isinstance(results["rec-0"], ProviderFault) and results["rec-0"].retryable
    assert isinstance(results["rec-1"], ProviderFault) and not results["rec-1"].retryable
    assert results["rec-2"].finish_reason == "refusal"
    assert results["rec-3"].finish_reason == "length"
    assert results["rec-4"].finish_reason == "stop"


async def test_batch_needs_unique_custom_ids(provider):
    with pytest.raises(ValueError, match="custom_id"):
        await provider.submit_batch([ask("a"), ask("b")])
    with pytest.raises(ValueError, match="unique"):
        await provider.submit_batch([ask("a", custom_id="x"), ask("b", custom_id="x")])


async def test_anthropic_custom_ids_must_fit_its_pattern(server):
    provider = AnthropicProvider("c", base_url=server.anthropic_base_url)
    with pytest.raises(ValueError, match="a-zA-Z0-9"):
        await provider.submit_batch([ask("a", custom_id="record 1/2")])
    await provider.aclose()
    assert server.stats()["requests"] == 0

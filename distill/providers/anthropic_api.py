"""The `anthropic` teacher: the Messages API through the official SDK, live or through Message Batches.

The Anthropic way differs from OpenAI's in three places: the system prompt is a top-level field, not a
message; `max_tokens` is required; JSON output is asked for with `output_config.format` (structured
outputs) rather than `response_format`. The SDK's own retries are off: distill's engine owns retries.
"""

from __future__ import annotations

from typing import Any

import anthropic
from anthropic.types import Message

from distill.providers.api_errors import read_api_key, sdk_faults
from distill.providers.batch_types import BatchState, check_custom_ids
from distill.providers.protocol import FinishReason, ProviderFault, TeacherReply, TeacherRequest

DEFAULT_MAX_TOKENS = 4096  # the API requires max_tokens; used when the spec's parameters leave it out
CUSTOM_ID_PATTERN = r"[a-zA-Z0-9_-]{1,64}"  # what Message Batches accepts as a custom_id
FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "refusal",
}
# Errored batch results of these types may succeed when sent again.
RETRYABLE_ERROR_TYPES = ("api_error", "overloaded_error", "rate_limit_error", "timeout_error", "gateway_timeout_error")


class AnthropicProvider:
    name = "anthropic"
    max_batch_requests = 100_000  # Message Batches' limits per batch
    max_batch_bytes = 256 * 1024 * 1024

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "ANTHROPIC_API_KEY",
        timeout: float = 60.0,
    ):
        api_key = read_api_key(api_key_env, self.name)
        self.model = model
        self.timeout = timeout
        self._client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)

    def message_params(self, request: TeacherRequest) -> dict[str, Any]:
        """The JSON body of one Messages request (sent live, or as `params` of a batch request)."""
        params = dict(request.params)
        # The Messages API has no seed; repeatability comes from distill's cache instead.
        params.pop("seed", None)
        body: dict[str, Any] = {
            "model": request.model or self.model,
            "max_tokens": params.pop("max_tokens", DEFAULT_MAX_TOKENS),
            "messages": [{"role": m.role, "content": m.content} for m in request.messages if m.role != "system"],
        }
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        if system:
            body["system"] = system
        if "stop" in params:
            stop = params.pop("stop")
            body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        body.update(params)
        if request.json_schema is not None:
            body["output_config"] = {"format": {"type": "json_schema", "schema": request.json_schema}}
        return body

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        body = self.message_params(request)
        core = {key: body.pop(key) for key in ("model", "max_tokens", "messages", "system") if key in body}
        with sdk_faults(self.name, anthropic, self.timeout):
            # Sampling parameters and output_config travel as extra_body: the same JSON on the wire.
            message = await self._client.messages.create(**core, extra_body=body)
        return reply_from_message(message)

    async def aclose(self) -> None:
        await self._client.close()

    # -- Message Batches: create with all requests inline, poll, stream the JSONL results

    async def submit_batch(self, requests: list[TeacherRequest]) -> str:
        """Submit requests as one batch (at most `max_batch_requests`); returns the batch id."""
        check_custom_ids(requests, CUSTOM_ID_PATTERN)
        batch_requests = [{"custom_id": r.custom_id, "params": self.message_params(r)} for r in requests]
        with sdk_faults(self.name, anthropic, self.timeout):
            batch = await self._client.messages.batches.create(requests=batch_requests)
        return batch.id

    async def batch_state(self, batch_id: str) -> BatchState:
        with sdk_faults(self.name, anthropic, self.timeout):
            batch = await self._client.messages.batches.retrieve(batch_id)
        counts = batch.request_counts
        if batch.processing_status != "ended":
            status = "in_progress"
        elif batch.cancel_initiated_at is not None:
            status = "cancelled"
        else:
            status = "expired" if counts.expired else "ended"
        return BatchState(
            id=batch.id,
            status=status,
            total=counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired,
            succeeded=counts.succeeded,
            errored=counts.errored,
        )

    async def batch_results(self, batch_id: str) -> dict[str, TeacherReply | ProviderFault]:
        """Every request of the batch that ran, by custom id: its reply, or the fault it ended with.

        Requests that never ran (expired or cancelled) are absent, so whatever is missing is exactly
        what to resubmit. A batch still in progress has no results yet.
        """
        results: dict[str, TeacherReply | ProviderFault] = {}
        with sdk_faults(self.name, anthropic, self.timeout):
            batch = await self._client.messages.batches.retrieve(batch_id)
            if batch.processing_status != "ended":
                return results
            async for entry in await self._client.messages.batches.results(batch_id):
                result = entry.result
                if result.type == "succeeded":
                    try:
                        results[entry.custom_id] = reply_from_message(result.message)
                    except ProviderFault as fault:
                        results[entry.custom_id] = fault
                elif result.type == "errored":
                    error = result.error.error
                    retryable = error.type in RETRYABLE_ERROR_TYPES
                    results[entry.custom_id] = ProviderFault(f"anthropic batch: {error.type}: {error.message}", retryable=retryable)
        return results

    async def cancel_batch(self, batch_id: str) -> None:
        with sdk_faults(self.name, anthropic, self.timeout):
            await self._client.messages.batches.cancel(batch_id)


def reply_from_message(message: Message) -> TeacherReply:
    finish = FINISH.get(message.stop_reason or "")
    if finish is None:
        raise ProviderFault(f"anthropic: unexpected stop_reason {message.stop_reason!r}", retryable=False)
    text = "".join(block.text for block in message.content if block.type == "text")
    if finish == "refusal" and not text and message.stop_details is not None:
        text = message.stop_details.explanation or ""  # keep the explanation for the failure reason
    return TeacherReply(
        text=text,
        finish_reason=finish,
        input_tokens=message.usage.input_tokens,
        output_tokens=message.usage.output_tokens,
        model=message.model,
    )

"""The `openai` teacher: chat completions through the official SDK, live or through the Batch API.

`base_url` points it at any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, gateways).
The SDK's own retries are off: distill's engine owns the retry policy, and sees every fault.
"""

from __future__ import annotations

import json
import re
from typing import Any

import openai
import pydantic
from openai.types.chat import ChatCompletion

from distill.providers.api_errors import read_api_key, sdk_faults, status_retryable
from distill.providers.batch_types import BatchState, BatchStatus, check_custom_ids
from distill.providers.logprobs import TokenLogprobs
from distill.providers.protocol import ProviderFault, TeacherReply, TeacherRequest

BATCH_STATUS: dict[str, BatchStatus] = {
    "validating": "in_progress",
    "in_progress": "in_progress",
    "finalizing": "in_progress",
    "cancelling": "in_progress",
    "completed": "ended",
    "expired": "expired",
    "cancelled": "cancelled",
    "failed": "failed",
}
# Error-file codes of batch requests that never ran; they are left out of the results, to be resubmitted.
NOT_RUN_CODES = ("batch_expired", "batch_cancelled")


class OpenAIProvider:
    name = "openai"
    max_batch_requests = 50_000  # the Batch API's limits per batch
    max_batch_bytes = 200 * 1024 * 1024

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
    ):
        api_key = read_api_key(api_key_env, self.name)
        self.model = model
        self.timeout = timeout
        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
        # OpenAI's own newer models reject `max_tokens`; OpenAI-compatible servers all accept `max_tokens`,
        # not all of them `max_completion_tokens`.
        self._max_tokens_key = "max_completion_tokens" if base_url is None else "max_tokens"

    def chat_body(self, request: TeacherRequest) -> dict[str, Any]:
        """The JSON body of one chat completion (sent live, or as a line of a batch input file)."""
        body: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        params = dict(request.params)
        if "max_tokens" in params:
            body[self._max_tokens_key] = params.pop("max_tokens")
        body.update(params)
        if request.json_schema is not None:
            # strict=False: user schemas need not fit strict mode's subset (every property required,
            # additionalProperties false); the engine validates every output against the schema anyway.
            name = re.sub(r"[^a-zA-Z0-9_-]", "_", request.step)[:64] or "output"
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": request.json_schema, "strict": False},
            }
        return body

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        body = self.chat_body(request)
        model, messages = body.pop("model"), body.pop("messages")
        with sdk_faults(self.name, openai, self.timeout):
            # Everything but model and messages travels as extra_body: the same JSON on the wire, and a
            # compatible server's own sampling parameters (vLLM's top_k, min_p) pass through untouched.
            completion = await self._client.chat.completions.create(model=model, messages=messages, extra_body=body)
        return reply_from_completion(completion)

    async def aclose(self) -> None:
        await self._client.close()

    # -- Batch API: upload a JSONL input file, create a batch over it, poll, read output and error files

    async def submit_batch(self, requests: list[TeacherRequest]) -> str:
        """Submit requests as one batch (at most `max_batch_requests`); returns the batch id."""
        check_custom_ids(requests)
        lines = [
            {"custom_id": r.custom_id, "method": "POST", "url": "/v1/chat/completions", "body": self.chat_body(r)}
            for r in requests
        ]
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        with sdk_faults(self.name, openai, self.timeout):
            upload = await self._client.files.create(file=("batch_input.jsonl", data, "application/jsonl"), purpose="batch")
            batch = await self._client.batches.create(
                input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        return batch.id

    async def batch_state(self, batch_id: str) -> BatchState:
        with sdk_faults(self.name, openai, self.timeout):
            batch = await self._client.batches.retrieve(batch_id)
        counts = batch.request_counts
        return BatchState(
            id=batch.id,
            status=BATCH_STATUS[batch.status],
            total=counts.total if counts else 0,
            succeeded=counts.completed if counts else 0,
            errored=counts.failed if counts else 0,
        )

    async def batch_results(self, batch_id: str) -> dict[str, TeacherReply | ProviderFault]:
        """Every request of the batch that ran, by custom id: its reply, or the fault it ended with.

        Requests that never ran (the batch expired or was cancelled first) are absent, so whatever is
        missing is exactly what to resubmit. A batch still in progress has no results yet.
        """
        with sdk_faults(self.name, openai, self.timeout):
            batch = await self._client.batches.retrieve(batch_id)
            files = [await self._client.files.content(f) for f in (batch.output_file_id, batch.error_file_id) if f]
        results: dict[str, TeacherReply | ProviderFault] = {}
        for content in files:
            for line in content.text.splitlines():
                if line.strip():
                    entry = json.loads(line)
                    outcome = batch_outcome(entry)
                    if outcome is not None:
                        results[entry["custom_id"]] = outcome
        return results

    async def cancel_batch(self, batch_id: str) -> None:
        with sdk_faults(self.name, openai, self.timeout):
            await self._client.batches.cancel(batch_id)


def reply_from_completion(completion: ChatCompletion) -> TeacherReply:
    if not completion.choices:
        raise ProviderFault("openai: the response has no choices", retryable=True)
    choice = completion.choices[0]
    message = choice.message
    if message.refusal is not None or choice.finish_reason == "content_filter":
        # The refusal's explanation is kept as the text so the failure reason can show it.
        text, finish = message.refusal or message.content or "", "refusal"
    elif choice.finish_reason in ("stop", "length"):
        text, finish = message.content or "", choice.finish_reason
    else:
        raise ProviderFault(f"openai: unexpected finish_reason {choice.finish_reason!r}", retryable=False)
    usage = completion.usage
    content = choice.logprobs.content if choice.logprobs is not None else None
    return TeacherReply(
        text=text,
        finish_reason=finish,
        input_tokens=usage.prompt_tokens if usage else 0,
        output_tokens=usage.completion_tokens if usage else 0,
        model=completion.model,
        logprobs=TokenLogprobs.from_openai(content) if content else None,  # asked for with logprobs/top_logprobs
    )


def batch_outcome(entry: dict[str, Any]) -> TeacherReply | ProviderFault | None:
    """One line of a batch output or error file; None for a request that never ran."""
    response, error = entry.get("response"), entry.get("error")
    if response is None:
        if error and error.get("code") in NOT_RUN_CODES:
            return None
        return ProviderFault(f"openai batch: {error}", retryable=False)
    status = response.get("status_code")
    if status != 200:
        message = ((response.get("body") or {}).get("error") or {}).get("message", "")
        return ProviderFault(f"openai batch: HTTP {status}: {message}", retryable=status_retryable(status))
    try:
        return reply_from_completion(ChatCompletion.model_validate(response["body"]))
    except pydantic.ValidationError as exc:
        return ProviderFault(f"openai batch: a result is not a chat completion ({exc.error_count()} errors)", retryable=True)
    except ProviderFault as fault:
        return fault

"""The OpenAI and Anthropic wire formats, as the loopback teacher server (`teacher_server.py`) speaks them.

Pure data and functions: how a request body becomes a `TeacherCall`, what the default answer is, and
the JSON of completions, messages, errors, batches and batch results. The server decides when and how
to answer; this module only says what the answer looks like on the wire.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

Api = Literal["openai", "anthropic"]
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
ANTHROPIC_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
WORDS = (
    "the little fox found a shiny red ball under an old oak tree and she smiled because the sun "
    "was warm today so her best friend bird sang happy songs while they played near blue river "
    "with soft green grass big kind bear came to share sweet honey cake"
).split()


# ----------------------------------------------------------------------------- what a request asks


@dataclass(frozen=True)
class TeacherCall:
    """One chat request as the server understood it (a live request or one batch item)."""

    api: Api
    model: str
    messages: tuple[tuple[str, str], ...]  # (role, content); the Anthropic top-level system comes first
    max_tokens: int | None
    json_schema: dict[str, Any] | None
    body: dict[str, Any]  # the request body exactly as received
    custom_id: str | None = None  # set for batch items

    @property
    def prompt_key(self) -> str:
        return prompt_key(self.messages)

    @property
    def text(self) -> str:
        """Every message's content, joined: what fault `match` strings are searched in."""
        return "\n".join(content for _, content in self.messages)


def prompt_key(messages: Any) -> str:
    """A stable key for a conversation: the same messages give the same key, whichever API sent them.

    `messages` is a sequence of (role, content) pairs or of {"role", "content"} dicts.
    """
    pairs = [(m["role"], m["content"]) if isinstance(m, dict) else (m[0], m[1]) for m in messages]
    return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Answer:
    text: str
    finish: Literal["stop", "length", "refusal"]
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class ItemError:
    """A batch item that failed at the 'provider' (a scripted server_error)."""

    status: int
    message: str


class RequestError(Exception):
    """The client sent something the real API would reject with a 4xx."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _text_of(content: Any) -> str:
    """Both APIs accept a plain string or a list of {"type": "text", "text": ...} blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    raise RequestError(400, f"message content must be a string or a list of blocks, got {type(content).__name__}")


def parse_openai_call(body: dict[str, Any], custom_id: str | None = None) -> TeacherCall:
    if not isinstance(body.get("model"), str) or not isinstance(body.get("messages"), list):
        raise RequestError(400, "'model' (string) and 'messages' (list) are required")
    messages = tuple((m["role"], _text_of(m.get("content", ""))) for m in body["messages"])
    schema = None
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = response_format["json_schema"]["schema"]
    elif response_format.get("type") == "json_object":
        schema = {"type": "object"}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    return TeacherCall("openai", body["model"], messages, max_tokens, schema, body, custom_id)


def parse_anthropic_call(body: dict[str, Any], custom_id: str | None = None) -> TeacherCall:
    for key, kind in (("model", str), ("messages", list), ("max_tokens", int)):
        if not isinstance(body.get(key), kind):
            raise RequestError(400, f"{key}: Field required ({kind.__name__})")
    messages = [(m["role"], _text_of(m.get("content", ""))) for m in body["messages"]]
    if any(role not in ("user", "assistant") for role, _ in messages):
        # The real API rejects this too: the system prompt is a top-level field.
        raise RequestError(400, "messages: roles must be 'user' or 'assistant'; put the system prompt in 'system'")
    if "system" in body:
        messages.insert(0, ("system", _text_of(body["system"])))
    schema = ((body.get("output_config") or {}).get("format") or {}).get("schema")
    return TeacherCall("anthropic", body["model"], tuple(messages), body["max_tokens"], schema, body, custom_id)


# ----------------------------------------------------------------------------- default answers


def _word_stream(seed: str):
    """Deterministic pseudo-random integers from a seed string."""
    counter = 0
    while True:
        digest = hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        yield from digest
        counter += 1


def example_for_schema(schema: dict[str, Any], seed: str) -> Any:
    """A small deterministic instance of a JSON schema (objects, arrays, scalars, enum, const, anyOf)."""
    stream = _word_stream(seed)

    def build(node: dict[str, Any]) -> Any:
        if "const" in node:
            return node["const"]
        if "enum" in node:
            return node["enum"][0]
        for union in ("anyOf", "oneOf", "allOf"):
            if union in node:
                return build(node[union][0])
        kind = node.get("type", "object")
        kind = kind[0] if isinstance(kind, list) else kind
        if kind == "object":
            return {name: build(sub) for name, sub in node.get("properties", {}).items()}
        if kind == "array":
            return [build(node.get("items", {"type": "string"})) for _ in range(max(1, node.get("minItems", 1)))]
        if kind == "integer":
            return int(node.get("minimum", 1))
        if kind == "number":
            return float(node.get("minimum", 1.5))
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return " ".join(WORDS[next(stream) % len(WORDS)] for _ in range(3))

    return build(schema)


def default_answer_text(call: TeacherCall, words: int = 60) -> str:
    """What the default responder writes: deterministic in the prompt, JSON when a schema is asked for."""
    if call.json_schema is not None:
        return json.dumps(example_for_schema(call.json_schema, call.prompt_key))
    stream = _word_stream(call.prompt_key)
    chosen = [WORDS[next(stream) % len(WORDS)] for _ in range(words)]
    sentences = [" ".join(chosen[i : i + 10]) for i in range(0, words, 10)]
    return " ".join(s[0].upper() + s[1:] + "." for s in sentences)


def count_tokens(text: str) -> int:
    """The fake tokenizer: one token per whitespace-separated word."""
    return len(text.split())


# ----------------------------------------------------------------------------- wire formats


def _now_iso(offset_s: float = 0.0) -> str:
    stamp = datetime.fromtimestamp(time.time() + offset_s, tz=timezone.utc)
    return stamp.isoformat().replace("+00:00", "Z")


def openai_completion_json(call: TeacherCall, answer: Answer) -> dict[str, Any]:
    refused = answer.finish == "refusal"
    message = {
        "role": "assistant",
        "content": None if refused else answer.text,
        "refusal": answer.text if refused else None,
        "annotations": [],
    }
    # A refusal ends normally ("stop"); the refusal shows in message.refusal with content null.
    finish = {"stop": "stop", "length": "length", "refusal": "stop"}[answer.finish]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call.model,
        "choices": [{"index": 0, "message": message, "logprobs": openai_logprobs_json(call, answer),
                     "finish_reason": finish}],
        "usage": {
            "prompt_tokens": answer.input_tokens,
            "completion_tokens": answer.output_tokens,
            "total_tokens": answer.input_tokens + answer.output_tokens,
        },
        "system_fingerprint": None,
    }


def openai_logprobs_json(call: TeacherCall, answer: Answer) -> dict[str, Any] | None:
    """`logprobs.content` when the request asks for it: one token per word (with its leading space), each
    with a log-probability that depends only on the token, and `top_logprobs` alternatives after it."""
    if not call.body.get("logprobs") or answer.finish == "refusal":
        return None
    k = int(call.body.get("top_logprobs") or 0)

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    content = []
    for token in re.findall(r"\s*\S+|\s+$", answer.text):
        logprob = -0.05 - 0.1 * (len(token) % 7)
        top = [entry(token, logprob)] + [entry(f" alt{j}", logprob - 1.0 - j) for j in range(k - 1)]
        content.append({**entry(token, logprob), "top_logprobs": top[:k]})
    return {"content": content, "refusal": None}


def anthropic_message_json(call: TeacherCall, answer: Answer) -> dict[str, Any]:
    refused = answer.finish == "refusal"
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [] if refused else [{"type": "text", "text": answer.text}],
        "stop_reason": {"stop": "end_turn", "length": "max_tokens", "refusal": "refusal"}[answer.finish],
        "stop_sequence": None,
        "stop_details": {"type": "refusal", "category": None, "explanation": answer.text} if refused else None,
        "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens},
    }


def error_json(api: Api, status: int, message: str) -> dict[str, Any]:
    if api == "openai":
        kind = {429: "rate_limit_exceeded", 401: "invalid_api_key"}.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        return {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    kind = {429: "rate_limit_error", 401: "authentication_error", 404: "not_found_error", 529: "overloaded_error"}
    return {
        "type": "error",
        "error": {"type": kind.get(status, "api_error" if status >= 500 else "invalid_request_error"), "message": message},
        "request_id": f"req_{uuid.uuid4().hex[:24]}",
    }


# ----------------------------------------------------------------------------- batches


@dataclass
class Batch:
    """A submitted batch. Item i finishes at created + duration * (i + 1) / n; only `keep` ever do."""

    id: str
    api: Api
    items: list[TeacherCall]
    duration: float
    keep: int
    created: float = field(default_factory=time.monotonic)
    created_unix: int = field(default_factory=lambda: int(time.time()))
    results: list[Answer | ItemError] = field(default_factory=list)
    cancelled_at: float | None = None
    input_file_id: str = ""
    output_file_id: str | None = None
    error_file_id: str | None = None
    validation_errors: list[dict[str, Any]] = field(default_factory=list)

    def due(self, now: float) -> int:
        """How many items have finished by `now`."""
        until = now if self.cancelled_at is None else min(now, self.cancelled_at)
        if self.duration <= 0:
            return self.keep
        return min(self.keep, math.floor((until - self.created) / self.duration * len(self.items)))

    def ended(self, now: float) -> bool:
        return self.cancelled_at is not None or now - self.created >= self.duration

    def outcome(self, now: float) -> Literal["in_progress", "completed", "expired", "cancelled"]:
        if self.cancelled_at is not None:
            return "cancelled"
        if not self.ended(now):
            return "in_progress"
        return "completed" if self.keep == len(self.items) else "expired"


def openai_batch_json(batch: Batch, now: float, *, cancelling: bool = False) -> dict[str, Any]:
    if batch.validation_errors:
        status = "failed"
    else:
        status = "cancelling" if cancelling else batch.outcome(now)
    succeeded = sum(isinstance(r, Answer) for r in batch.results)
    failed = sum(isinstance(r, ItemError) for r in batch.results)
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "errors": {"object": "list", "data": batch.validation_errors} if batch.validation_errors else None,
        "input_file_id": batch.input_file_id,
        "completion_window": "24h",
        "status": status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": batch.created_unix,
        "expires_at": batch.created_unix + 86400,
        "request_counts": {"total": len(batch.items), "completed": succeeded, "failed": failed},
        "metadata": None,
    }


def anthropic_batch_json(batch: Batch, now: float, results_url: str, *, canceling: bool = False) -> dict[str, Any]:
    ended = batch.ended(now) and not canceling
    done = len(batch.results)
    unrun = len(batch.items) - done
    counts = {
        "processing": 0 if ended else unrun,
        "succeeded": sum(isinstance(r, Answer) for r in batch.results),
        "errored": sum(isinstance(r, ItemError) for r in batch.results),
        "canceled": unrun if ended and batch.cancelled_at is not None else 0,
        "expired": unrun if ended and batch.cancelled_at is None else 0,
    }
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": "ended" if ended else ("canceling" if batch.cancelled_at is not None else "in_progress"),
        "request_counts": counts,
        "created_at": datetime.fromtimestamp(batch.created_unix, tz=timezone.utc).isoformat(),
        "expires_at": _now_iso(86400),
        "ended_at": _now_iso() if ended else None,
        "cancel_initiated_at": _now_iso() if batch.cancelled_at is not None else None,
        "archived_at": None,
        "results_url": results_url if ended else None,
    }


def openai_result_lines(batch: Batch) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(output file lines, error file lines) of an ended OpenAI batch."""
    output, errors = [], []
    for index, item in enumerate(batch.items):
        line: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": item.custom_id}
        if index < len(batch.results):
            result = batch.results[index]
            if isinstance(result, Answer):
                body = openai_completion_json(item, result)
                output.append(line | {"response": {"status_code": 200, "request_id": "req", "body": body}, "error": None})
            else:
                body = error_json("openai", result.status, result.message)
                errors.append(line | {"response": {"status_code": result.status, "request_id": "req", "body": body}, "error": None})
        else:
            code = "batch_cancelled" if batch.cancelled_at is not None else "batch_expired"
            message = f"This request was not executed: the batch was {code.removeprefix('batch_')}."
            errors.append(line | {"response": None, "error": {"code": code, "message": message}})
    return output, errors


def anthropic_result_lines(batch: Batch) -> list[dict[str, Any]]:
    lines = []
    for index, item in enumerate(batch.items):
        if index < len(batch.results):
            result = batch.results[index]
            if isinstance(result, Answer):
                outcome = {"type": "succeeded", "message": anthropic_message_json(item, result)}
            else:
                outcome = {"type": "errored", "error": error_json("anthropic", result.status, result.message)}
        else:
            outcome = {"type": "canceled" if batch.cancelled_at is not None else "expired"}
        lines.append({"custom_id": item.custom_id, "result": outcome})
    return lines



# ----------------------------------------------------------------------------- request bodies


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def multipart_fields(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, bytes) for each part of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise RequestError(400, "expected a multipart/form-data body")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def openai_batch_items(content: bytes) -> tuple[list[TeacherCall], list[dict[str, Any]]]:
    """Parse a batch input file; problems are reported the way the Batch API reports them."""
    items, problems, seen = [], [], set()
    for number, line in enumerate(content.decode().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if entry.get("method") != "POST" or entry.get("url") != "/v1/chat/completions":
                raise RequestError(400, "each line needs method 'POST' and url '/v1/chat/completions'")
            if not entry.get("custom_id") or entry["custom_id"] in seen:
                raise RequestError(400, "custom_id must be present and unique")
            seen.add(entry["custom_id"])
            items.append(parse_openai_call(entry["body"], entry["custom_id"]))
        except (json.JSONDecodeError, KeyError, AttributeError, RequestError) as exc:
            problems.append({"code": "invalid_request", "message": str(exc), "param": None, "line": number})
    return items, problems

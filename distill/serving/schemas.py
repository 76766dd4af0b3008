"""The OpenAI wire format: request bodies (validated) and the response/chunk objects we send back.

Only the fields distill serves are declared. Other fields are accepted when they cannot change the answer
(`user`, `store`, `service_tier`, ...) or when they ask for nothing (`tools: []`, `frequency_penalty: 0`), so
clients that always send them keep working; a field that asks for something distill does not do (tools, JSON
mode, penalties) is refused with a 400 naming it, as OpenAI refuses what a model does not support, never
answered as if it had not been sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

from distill.serving.engine import Delta, SamplingParams, TokenLogprob
from distill.serving.logprobs import token_bytes


class Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(Lenient):
    include_usage: bool = False


class ContentPart(Lenient):
    type: str
    text: str | None = None


class ChatMessage(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[dict[str, Any]] | None = None  # an assistant's calls (distill.serving.tools)
    tool_call_id: str | None = None  # a tool result: the call it answers
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


def _text_format(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and value.get("type") == "text")


# Fields distill does not serve (yet), each with the test for the value that asks for nothing.
NOT_SERVED: dict[str, Callable[[Any], bool]] = {
    "tools": lambda v: not v,
    "functions": lambda v: not v,
    "tool_choice": lambda v: v in (None, "none"),
    "function_call": lambda v: v in (None, "none"),
    "response_format": _text_format,
    "modalities": lambda v: v in (None, ["text"]),
    "audio": lambda v: v is None,
    "prediction": lambda v: v is None,
    "web_search_options": lambda v: v is None,
    "logit_bias": lambda v: not v,
    "frequency_penalty": lambda v: not v,
    "presence_penalty": lambda v: not v,
    "best_of": lambda v: v in (None, 1),
    "suffix": lambda v: not v,
}


class Unsupported(NamedTuple):
    param: str
    message: str
    code: str  # OpenAI's: unsupported_parameter, or unsupported_value where another value of it is served


class GenerationRequest(Lenient):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    metadata: dict[str, str] | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, value):
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def unsupported(self) -> Unsupported | None:
        """The first field of the request that asks for something this server does not do."""
        for name, value in (self.model_extra or {}).items():
            if name not in NOT_SERVED or NOT_SERVED[name](value):
                continue
            if name == "response_format":
                kind = value.get("type") if isinstance(value, dict) else value
                return Unsupported(name, f"Unsupported value: 'response_format' of type {kind!r} is not supported by "
                                         "this model; only {'type': 'text'} is (it answers in free text)",
                                   "unsupported_value")
            return Unsupported(name, f"Unsupported parameter: '{name}' is not supported by this model (a distilled "
                                     "student that answers in text, without tools or sampling penalties)",
                               "unsupported_parameter")
        return None

    def requested_max_tokens(self) -> tuple[str, int] | None:
        """(field, value) of the completion length the request asks for; None when it leaves it to the server."""
        return ("max_tokens", self.max_tokens) if self.max_tokens is not None else None


class ChatRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    # Served by students trained on conversations (distill.serving.tools); others refuse tools with a 400.
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None  # accepted; a student makes one call per turn
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def requested_max_tokens(self) -> tuple[str, int] | None:
        if self.max_completion_tokens is not None:
            return "max_completion_tokens", self.max_completion_tokens
        return super().requested_max_tokens()

    def sampling(self, max_tokens: int, index: int) -> SamplingParams:
        return SamplingParams(max_tokens, self.temperature, self.top_p, None if self.seed is None else self.seed + index,
                              self.stops(), (self.top_logprobs or 0) if self.logprobs else None)


class CompletionRequest(GenerationRequest):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: Literal[False] = False  # echoing the prompt is not served

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt

    def sampling(self, max_tokens: int, index: int) -> SamplingParams:
        return SamplingParams(max_tokens, self.temperature, self.top_p, None if self.seed is None else self.seed + index,
                              self.stops(), self.logprobs)


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_logprobs(items: list[TokenLogprob] | tuple[TokenLogprob, ...]) -> dict[str, Any]:
    return {"content": [{"token": t.token, "logprob": t.logprob, "bytes": token_bytes(t),
                         "top_logprobs": [{"token": s, "logprob": v, "bytes": token_bytes(t, j)}
                                          for j, (s, v) in enumerate(t.top)]}
                        for t in items], "refusal": None}


def completion_logprobs(items: list[TokenLogprob] | tuple[TokenLogprob, ...], offset: int) -> dict[str, Any]:
    """The legacy completions shape: parallel lists, offsets into the generated text."""
    offsets = []
    for item in items:
        offsets.append(offset)
        offset += len(item.token)
    return {"tokens": [t.token for t in items], "token_logprobs": [t.logprob for t in items],
            "top_logprobs": [dict(t.top) for t in items], "text_offset": offsets}


def chat_chunk_choice(index: int, delta: Delta | None, *, role: bool = False, logprobs: bool = False,
                      body: dict[str, Any] | None = None) -> dict:
    """One choice of a chat chunk; `body` replaces the text delta (tool-call deltas, distill.serving.tools)."""
    body = dict(body or {})
    if role:
        body = {"role": "assistant", "content": ""}
    elif delta is not None and delta.text and not body:
        body = {"content": delta.text}
    return {"index": index, "delta": body,
            "logprobs": chat_logprobs(delta.logprobs) if logprobs and delta is not None and delta.logprobs else None,
            "finish_reason": delta.finish_reason if delta is not None else None}

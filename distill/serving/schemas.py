"""The OpenAI wire format: request bodies (validated) and the response/chunk objects we send back.

Only the fields distill serves are declared; unknown fields are accepted and ignored, as OpenAI-compatible
servers do, so clients that send `frequency_penalty` or `user` keep working.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from distill.serving.engine import Delta, SamplingParams, TokenLogprob


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

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


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


class ChatRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def sampling(self, default_max: int, index: int) -> SamplingParams:
        return SamplingParams(self.max_completion_tokens or self.max_tokens or default_max, self.temperature,
                              self.top_p, None if self.seed is None else self.seed + index, self.stops(),
                              (self.top_logprobs or 0) if self.logprobs else None)


class CompletionRequest(GenerationRequest):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: Literal[False] = False  # echoing the prompt is not served

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt

    def sampling(self, default_max: int, index: int) -> SamplingParams:
        return SamplingParams(self.max_tokens or default_max, self.temperature, self.top_p,
                              None if self.seed is None else self.seed + index, self.stops(), self.logprobs)


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_logprobs(items: list[TokenLogprob] | tuple[TokenLogprob, ...]) -> dict[str, Any]:
    return {"content": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode()),
                         "top_logprobs": [{"token": s, "logprob": v, "bytes": list(s.encode())} for s, v in t.top]}
                        for t in items], "refusal": None}


def completion_logprobs(items: list[TokenLogprob] | tuple[TokenLogprob, ...], offset: int) -> dict[str, Any]:
    """The legacy completions shape: parallel lists, offsets into the generated text."""
    offsets = []
    for item in items:
        offsets.append(offset)
        offset += len(item.token)
    return {"tokens": [t.token for t in items], "token_logprobs": [t.logprob for t in items],
            "top_logprobs": [dict(t.top) for t in items], "text_offset": offsets}


def chat_chunk_choice(index: int, delta: Delta | None, *, role: bool = False, logprobs: bool = False) -> dict:
    body: dict[str, Any] = {}
    if role:
        body = {"role": "assistant", "content": ""}
    elif delta is not None and delta.text:
        body = {"content": delta.text}
    return {"index": index, "delta": body,
            "logprobs": chat_logprobs(delta.logprobs) if logprobs and delta is not None and delta.logprobs else None,
            "finish_reason": delta.finish_reason if delta is not None else None}

"""The one seam between distill and a teacher (or judge) model.

Every provider (openai, anthropic, hf, replay, offline) is a small class with this shape; the cache
and the synthesis engine wrap a provider, they never subclass it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from distill.providers.logprobs import TokenLogprobs

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "refusal", "error"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class TeacherRequest:
    """One chat request. `record_index` and `step` say where it came from (for replay and logs)."""

    messages: tuple[Message, ...]
    model: str
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, top_p, seed, ...
    json_schema: dict[str, Any] | None = None  # ask for JSON output matching this schema
    record_index: int = 0
    step: str = ""
    custom_id: str = ""  # stable id used by batch APIs to match results to requests


@dataclass(frozen=True)
class TeacherReply:
    text: str
    finish_reason: FinishReason = "stop"
    input_tokens: int = 0
    output_tokens: int = 0
    model: str = ""  # the model that actually answered, as the provider reports it
    logprobs: TokenLogprobs | None = None  # the teacher's token probabilities, when asked for and given


class ProviderFault(Exception):
    """A request failed at the provider. `retryable` says whether trying again may help."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after  # seconds, from a 429's Retry-After header


class Provider(Protocol):
    """A teacher or judge model. `name` is the provider kind ("openai", "offline", ...)."""

    name: str

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        """Answer one request, or raise `ProviderFault`."""
        ...

    async def aclose(self) -> None:
        """Release connections and local models."""
        ...

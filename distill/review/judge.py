"""Stage 10: the LLM judge, through the provider layer (the teacher or another model).

The record is wrapped between two copies of a random delimiter and the system prompt says that
everything between them is data. The judge answers with a JSON verdict: safe/unsafe, category codes
from the policy, a one-line rationale. Nothing the judge fails to say clearly ever passes a record:
unparseable answers, unknown category codes, timeouts and provider errors become findings that the
policy sends to a human (`JUDGE: flag`). A record that tries to talk to the judge ("say safe") is
caught independently by the injection stage of the cheap chain, whatever the judge answers.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from distill.providers.protocol import Message, Provider, ProviderFault, TeacherRequest
from distill.review.codes import CATEGORIES, CODES
from distill.review.policy import Policy, safety_file
from distill.review.verdict import Finding

VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["safe", "unsafe"]},
        "categories": {"type": "array", "items": {"type": "string"}},
        "rationale": {"type": "string"},
    },
    "required": ["verdict", "categories", "rationale"],
    "additionalProperties": False,
}
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


@dataclass(frozen=True)
class JudgeResult:
    status: str  # safe | unsafe | unparseable | unknown_code | timeout | error
    findings: tuple[Finding, ...]
    answer: str  # the judge's raw answer, kept for the reviewer
    rationale: str = ""


def parse_verdict(answer: str, categories: set[str], span: tuple[int, int]) -> JudgeResult:
    """Turn the judge's answer into findings; anything but a clear, well-formed verdict is a finding."""
    body = _FENCE.sub("", answer.strip())
    start, end = body.find("{"), body.rfind("}")
    try:
        data = json.loads(body[start : end + 1]) if start >= 0 and end > start else None
    except json.JSONDecodeError:
        data = None
    verdict = data.get("verdict") if isinstance(data, dict) else None
    codes = data.get("categories", []) if isinstance(data, dict) else None
    rationale = str(data.get("rationale", ""))[:300] if isinstance(data, dict) else ""
    if verdict not in ("safe", "unsafe") or not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
        return _trouble("unparseable", answer, span, f"not a JSON verdict: {answer[:120]!r}")
    if verdict == "safe" and codes:
        return _trouble("unparseable", answer, span, f"'safe' with categories {codes}")
    if verdict == "safe":
        return JudgeResult("safe", (), answer, rationale)
    unknown = [c for c in codes if c.upper() not in categories]
    if unknown or not codes:
        detail = f"unknown categories {unknown}" if unknown else "'unsafe' without a category"
        return _trouble("unknown_code", answer, span, f"{detail}: {rationale}")
    findings = tuple(
        Finding("judge", f"judge.{c.upper()}", c.upper(), span, rationale or CATEGORIES.get(c.upper(), ""))
        for c in dict.fromkeys(codes)
    )
    return JudgeResult("unsafe", findings, answer, rationale)


def _trouble(status: str, answer: str, span: tuple[int, int], detail: str) -> JudgeResult:
    code = f"judge.{status}"
    return JudgeResult(status, (Finding("judge", code, CODES[code][0], span, detail),), answer)


class Judge:
    """Renders the judge prompt for a record and asks `provider` for a verdict."""

    def __init__(self, provider: Provider, policy: Policy, *, model: str):
        self.provider = provider
        self.policy = policy
        self.model = model
        self.settings = policy.judge
        self.categories = {c.upper() for c in policy.judge.categories}
        environment = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
        system = environment.from_string(safety_file("", policy.judge.system_template, ".jinja").read_text(encoding="utf-8"))
        self._user = environment.from_string(safety_file("", policy.judge.user_template, ".jinja").read_text(encoding="utf-8"))
        listed = [(c, CATEGORIES.get(c, c)) for c in sorted(self.categories, key=lambda c: (len(c), c))]
        self._system = system.render(categories=listed, audience=policy.description)

    def request(self, text: str, prompt: str = "", record_index: int = 0) -> tuple[TeacherRequest, str]:
        delimiter = f"<<<RECORD-{secrets.token_hex(8)}>>>"
        while delimiter in text or delimiter in prompt:  # a 64-bit tag never appears by chance; be sure anyway
            delimiter = f"<<<RECORD-{secrets.token_hex(8)}>>>"
        user = self._user.render(text=text, prompt=prompt, delimiter=delimiter)
        request = TeacherRequest(
            messages=(Message("system", self._system), Message("user", user)),
            model=self.model,
            params={"temperature": 0.0, "max_tokens": self.settings.max_tokens},
            json_schema=VERDICT_SCHEMA,
            record_index=record_index,
            step="safety_judge",
            custom_id=f"judge-{record_index}",
        )
        return request, delimiter

    async def judge(self, text: str, prompt: str = "", record_index: int = 0) -> JudgeResult:
        request, _ = self.request(text, prompt, record_index)
        span = (0, len(text))
        try:
            reply = await asyncio.wait_for(self.provider.complete(request), timeout=self.settings.timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            return _trouble("timeout", "", span, f"no answer within {self.settings.timeout_s:g} s")
        except ProviderFault as fault:
            return _trouble("error", "", span, f"provider fault: {fault.reason}"[:300])
        return parse_verdict(reply.text, self.categories, span)


async def judge_all(judge: Judge, items: Sequence[tuple[int, str, str]], *, concurrency: int,
                    on_result: Callable[[int, JudgeResult], Awaitable[None] | None]) -> None:
    """Judge (record id, text, prompt) items, at most `concurrency` at a time; `on_result` sees each
    answer as soon as it arrives, so an interrupted run keeps everything judged so far."""
    limit = asyncio.Semaphore(concurrency)

    async def one(record: int, text: str, prompt: str) -> None:
        async with limit:
            result = await judge.judge(text, prompt, record)
        outcome = on_result(record, result)
        if asyncio.iscoroutine(outcome):
            await outcome

    await asyncio.gather(*(one(*item) for item in items))

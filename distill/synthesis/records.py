"""One record's way through its steps, answered from the cache as far as it goes.

`RecordWalker.advance(i)` renders record i step by step, feeding each step's output to the next, and
looks each request up in the cache. It returns either the finished row (done or failed, with its
reason) or the one request the record needs next. The online engine sends that request and calls
`advance` again; batch mode collects the next request of every record into a batch. Because a row is
rebuilt from cached answers only, a resumed run writes exactly the rows an uninterrupted run writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import jsonschema

from distill.providers.protocol import Message, TeacherRequest
from distill.synthesis.cache import AnswerCache, CachedAnswer, cache_key

# Why a prompt lives here and not in templates/: it is part of the engine's protocol with the teacher,
# not something a spec author writes; it is the same for every spec.
SCHEMA_CORRECTION = (
    "Your previous answer is not valid: {error}. Reply again with only the JSON object, matching the "
    "requested JSON schema exactly, and nothing else."
)


@dataclass(frozen=True)
class Pending:
    """The request a record needs answered next."""

    index: int
    request: TeacherRequest
    key: str


@dataclass
class _Spent:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    keys: list[str] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)  # the cache entries, for rebuilding a lost cache
    last: CachedAnswer | None = None  # the answer looked up last: the one a finished step's output came from

    def add(self, key: str, answer: CachedAnswer) -> None:
        self.last = answer
        self.keys.append(key)
        self.answers.append(answer_record(key, answer))
        self.input_tokens += answer.reply.input_tokens
        self.output_tokens += answer.reply.output_tokens
        self.cost_usd += answer.cost_usd


class Prompts(Protocol):
    """Where a record's messages come from: the spec's templates (`distill.prompts.PromptRenderer`) or
    prompts rendered beforehand (`RenderedPrompts`)."""

    @property
    def template_hashes(self) -> dict[str, str]: ...

    def variables(self, index: int) -> dict[str, Any]: ...

    def render_step(self, step_index: int, index: int, variables: dict[str, Any],
                    outputs: dict[str, Any]) -> Any: ...  # has `.messages`

    def render_student_input(self, index: int, variables: dict[str, Any], outputs: dict[str, Any]) -> str: ...


@dataclass(frozen=True)
class StepPlan:
    """One teacher step as sent: its name, what it answers, the generation parameters, the JSON schema."""

    name: str
    output: Literal["text", "json"] = "text"
    params: dict[str, Any] = field(default_factory=dict)  # max_tokens, temperature, ...; unset ones left out
    schema: dict[str, Any] | None = None  # a json step's answer must match it


@dataclass(frozen=True)
class GenerationPlan:
    """Everything synthesis needs to know about the records: their prompts, the steps, and which step's
    answer is the training text. `distill.synthesis.generate.generation_plan` builds one from a spec."""

    prompts: Prompts
    steps: tuple[StepPlan, ...]
    target_step: str


@dataclass(frozen=True)
class RenderedPrompt:
    """One record's prompt, rendered beforehand: the messages for the teacher, what the student sees
    (instruct tasks; "" for text), and the variables kept with the record."""

    messages: tuple[Message, ...]
    student_input: str = ""
    variables: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RenderedPrompts:
    """`Prompts` for one-step records whose messages are already rendered (record i is `prompts[i]`)."""

    prompts: Sequence[RenderedPrompt]
    template_hashes: dict[str, str] = field(default_factory=dict)

    def variables(self, index: int) -> dict[str, Any]:
        return self.prompts[index].variables

    def render_step(self, step_index: int, index: int, variables: dict[str, Any], outputs: dict[str, Any]) -> RenderedPrompt:
        assert step_index == 0, "rendered prompts have one step"
        return self.prompts[index]

    def render_student_input(self, index: int, variables: dict[str, Any], outputs: dict[str, Any]) -> str:
        return self.prompts[index].student_input


class RecordWalker:
    """Builds requests and rows for one generation plan against one cache. `faults` holds this run's
    provider faults by cache key (requests that kept failing); they fail the record but are not remembered."""

    def __init__(self, plan: GenerationPlan, cache: AnswerCache, *, provider_name: str, model: str,
                 given: dict[int, tuple[dict[str, Any], dict[str, Any]]] | None = None):
        """`given[i]` = (variables, step outputs) that record i takes as they are instead of sampling or
        asking the teacher (real inputs captured from users, for `distill coldstart`)."""
        self.given = given or {}
        self.plan = plan
        self.renderer = plan.prompts
        self.cache = cache
        self.provider_name = provider_name
        self.model = model
        self.faults: dict[str, str] = {}
        self.params = [_clean_params(step.params) for step in plan.steps]

    @property
    def template_hashes(self) -> str:
        """The templates' sha256s as the JSON string stored in every row."""
        return json.dumps(self.renderer.template_hashes, sort_keys=True)

    def advance(self, index: int) -> dict[str, Any] | Pending:
        """Record `index`'s finished row, or the request it needs next."""
        given_variables, given_outputs = self.given.get(index, ({}, {}))
        variables = {**self.renderer.variables(index), **given_variables}
        outputs: dict[str, Any] = {}
        steps: list[dict[str, Any]] = []
        spent = _Spent()
        target_logprobs = ""
        for k, step in enumerate(self.plan.steps):
            if step.name in given_outputs:
                outputs[step.name] = given_outputs[step.name]
                steps.append({"name": step.name, "messages": [], "output": outputs[step.name], "given": True})
                continue
            rendered = self.renderer.render_step(k, index, variables, outputs)
            request = TeacherRequest(tuple(rendered.messages), self.model, self.params[k], step.schema,
                                     record_index=index, step=step.name, custom_id=f"r{index}-s{k}")
            outcome = self._answer_step(k, request, spent)
            if isinstance(outcome, Pending):
                return outcome
            output, failure = outcome
            if step.name == self.plan.target_step:
                target_logprobs = _logprobs_of(step, output, spent.last)
            entry = {"name": step.name, "messages": [[m.role, m.content] for m in rendered.messages], "output": output}
            if _LONE_SURROGATE.search(output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)):
                entry["invalid_utf8"] = True  # kept as it came; the review's decoding check decides
            steps.append(entry)
            if failure is not None:
                return self._row(index, variables, steps, outputs, spent, failure=f"step {step.name!r}: {failure}")
            outputs[step.name] = output
        return self._row(index, variables, steps, outputs, spent, target_logprobs=target_logprobs)

    def _answer_step(self, k: int, request: TeacherRequest, spent: _Spent) -> tuple[Any, str | None] | Pending:
        """(output, failure reason or None), or the request still to send."""
        answer = self._lookup(request, spent)
        if not isinstance(answer, CachedAnswer):
            return answer
        if answer.reason:
            return answer.reply.text, answer.reason
        schema = self.plan.steps[k].schema
        if self.plan.steps[k].output == "text":
            return answer.reply.text, None
        parsed, error = parse_json_output(answer.reply.text, schema)
        if error is None:
            return parsed, None
        # One corrective retry: the teacher sees its answer and what is wrong with it.
        corrective = replace(request, custom_id=request.custom_id + "-fix", messages=request.messages + (
            Message("assistant", answer.reply.text), Message("user", SCHEMA_CORRECTION.format(error=error))))
        answer = self._lookup(corrective, spent)
        if not isinstance(answer, CachedAnswer):
            return answer
        if answer.reason:
            return answer.reply.text, answer.reason
        parsed, second_error = parse_json_output(answer.reply.text, schema)
        if second_error is None:
            return parsed, None
        return answer.reply.text, f"invalid JSON output after one corrective retry: {second_error}"

    def _lookup(self, request: TeacherRequest, spent: _Spent) -> CachedAnswer | Pending | tuple[Any, str]:
        key = cache_key(self.provider_name, request)
        answer = self.cache.get(key) or self.cache.get_unusable(key)
        if answer is not None:
            spent.add(key, answer)
            return answer
        if key in self.faults:
            spent.keys.append(key)
            return None, self.faults[key]
        return Pending(request.record_index, request, key)

    def _row(self, index: int, variables: dict[str, Any], steps: list[dict[str, Any]], outputs: dict[str, Any],
             spent: _Spent, *, failure: str | None = None, target_logprobs: str = "") -> dict[str, Any]:
        target = outputs.get(self.plan.target_step)
        ok = failure is None
        text = (target if isinstance(target, str) else json.dumps(target, ensure_ascii=False)) if ok else ""
        return {
            "id": index,
            "variables": json.dumps(variables, ensure_ascii=False, sort_keys=True, default=str),
            "steps": json_text(steps),
            "prompt": valid_text(self.renderer.render_student_input(index, variables, outputs)) if ok else "",
            "text": valid_text(text),
            "status": "ok" if ok else "failed",
            "failure_reason": failure or "",
            "teacher_provider": self.provider_name,
            "teacher_model": self.model,
            "input_tokens": spent.input_tokens,
            "output_tokens": spent.output_tokens,
            "cost_usd": round(spent.cost_usd, 8),
            "cache_key": hashlib.sha256("".join(spent.keys).encode()).hexdigest(),
            "template_hashes": self.template_hashes,
            "teacher_logprobs": target_logprobs if ok else "",
            # In the records log only (not a dataset column): the cache's second copy, as JSON text so an
            # answer with lone surrogates survives exactly (see json_text).
            "answers": json_text(spent.answers),
        }


def answer_record(key: str, answer: CachedAnswer) -> dict[str, Any]:
    """One cache entry as the records log keeps it (see synthesis.recovery)."""
    reply = answer.reply
    return {"key": key, "text": reply.text, "finish_reason": reply.finish_reason, "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens, "model": reply.model, "cost_usd": answer.cost_usd,
            "reason": answer.reason, **({"logprobs": reply.logprobs.to_json()} if reply.logprobs is not None else {})}


def _logprobs_of(step: StepPlan, output: Any, answer: CachedAnswer | None) -> str:
    """The target step's token distribution as stored: the teacher's tokens that spell the start of its text, up
    to where they part (tokens past a stop string; bytes that were not UTF-8 and show as U+FFFD in the text);
    the rest of the text trains as plain text. None for a JSON step: its output is re-serialised."""
    if step.output != "text" or answer is None or answer.reply.logprobs is None:
        return ""
    text = str(output).encode("utf-8", "surrogatepass")
    logprobs = answer.reply.logprobs
    if logprobs.text_bytes == text:
        return logprobs.to_json()
    kept = logprobs.prefix(len(os.path.commonprefix([logprobs.text_bytes, text])))
    return kept.to_json() if len(kept) else ""


# Teacher answers can carry lone surrogates: bytes that were not UTF-8 in a replay file (kept by
# `surrogateescape`) or a `\ud800` escape in a server's JSON. Rows must stay valid UTF-8 (the log and
# the Arrow dataset refuse anything else), so `text` and `prompt` show U+FFFD there, and `steps` keeps
# the answer exactly, escaped, on a step marked `invalid_utf8` (see `distill.review.store.load_rows`).
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def json_text(value: Any) -> str:
    """JSON that keeps non-ASCII text readable and writes lone surrogates as `\\udcXX` escapes, so the line
    is valid UTF-8 and loads back to exactly the same strings."""
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False))


def parse_json_output(text: str, schema: dict[str, Any] | None) -> tuple[Any, str | None]:
    """(parsed value, None) or (None, what is wrong). Tolerates a ```json fence around the object."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[-1].rsplit("```", 1)[0]
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if schema is not None:
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "the top level"
            return None, f"schema violation at {where}: {error.message}"
    return value, None


def _clean_params(params: dict[str, Any]) -> dict[str, Any]:
    """Generation parameters as sent: unset seed and empty stop lists are left out."""
    return {name: value for name, value in sorted(params.items()) if value is not None and value != []}

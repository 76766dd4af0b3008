"""Conversations as records (kind: chat): a simulated user, the teacher as assistant, simulated tools.

`ChatWalker.advance(i)` plays record i's conversation from the cache as far as it goes, exactly as
`RecordWalker` does for a chain of steps, so the online engine (rate limits, retries, the spending cap)
and resuming work unchanged. One record:

    steps before chat.user_step, once (a scenario, a persona)
    for each user turn (chat.turns, drawn per record):
        the user step, rendered with `turn` and `history` (the messages so far)  -> a user message
        the assistant's moves: the teacher answers with JSON, {"tool": NAME, "arguments": {...}} or
        {"reply": ...}; a call is answered by the tool's simulated result, up to chat.max_tool_calls
        times, then the assistant must reply
    stop early when a reply matches chat.stop_pattern

The record's `text` is the transcript (`distill.conversation`), its `prompt` the first user message, and its
`steps` keep every request plus the OpenAI-style message list. A call whose arguments break the tool's schema
stays in the record: the review reports it, located at its turn (`distill.review` reads the transcript).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

from distill.conversation import render_transcript, tool_call_message, tool_result_message
from distill.errors import Problem, SpecError
from distill.providers.protocol import Message, TeacherRequest
from distill.spec import ChatTool, LoadedSpec, TurnRange
from distill.synthesis.cache import AnswerCache
from distill.synthesis.records import GenerationPlan, Pending, RecordWalker, StepPlan, _Spent, json_text, valid_text

ASSISTANT_STEP, TOOL_STEP, USER_STEP = "chat.assistant", "chat.tool", "chat.user"

# Part of the engine's protocol with the teacher (like records.SCHEMA_CORRECTION), the same for every spec.
ASSISTANT_PROTOCOL = """You play the assistant in the conversation below. The assistant's own instructions:
{system}

Tools (JSON):
{tools}

Conversation so far:
{transcript}

Write the assistant's next move as one JSON object: {{"tool": NAME, "arguments": {{...}}}} to call a tool, or {{"reply": ...}} to answer the user{reply_note}."""


@dataclass(frozen=True)
class ChatPlan:
    """A chat spec as synthesis needs it: the generation plan of its steps (with the assistant's and the
    tools' requests as two more steps), and the conversation's shape."""

    generation: GenerationPlan
    user_step: int  # index into the spec's steps
    system: str | None
    assistant: str | None
    turns: int | TurnRange
    max_tool_calls: int
    tools: tuple[ChatTool, ...]
    reply_schema: dict[str, Any] | None
    stop_pattern: str | None
    seed: int
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # tool name -> its result rows

    @property
    def tool_list(self) -> list[dict[str, Any]]:
        """The tools in OpenAI's format (what the student is served with)."""
        return [{"type": "function", "function": tool.function.model_dump()} for tool in self.tools]


def chat_plan(loaded: LoadedSpec, generation: GenerationPlan) -> ChatPlan:
    """The chat section of a spec, its files read and checked (reply schema, tool rows)."""
    from distill.prompts import read_rows, resolve_inside

    spec, chat = loaded.spec, loaded.spec.chat
    assert chat is not None
    reply = reply_schema(loaded)
    move = move_schema(reply, [t.function.name for t in chat.tools])
    params = {**spec.teacher.params.model_dump(), **chat.params}
    base = {**spec.teacher.params.model_dump()}
    steps = generation.steps + (StepPlan(ASSISTANT_STEP, "json", params, move), StepPlan(TOOL_STEP, "text", base))
    rows = {}
    for i, tool in enumerate(chat.tools):
        if tool.result.rows is not None:
            path = resolve_inside(loaded.directory, tool.result.rows, what="rows file",
                                  key=f"chat.tools[{i}].result.rows", spec_file=loaded.path)
            rows[tool.function.name] = read_rows(path)
    names = [s.name for s in spec.steps]
    return ChatPlan(GenerationPlan(generation.prompts, steps, generation.target_step), names.index(chat.user_step),
                    chat.system, chat.assistant, chat.turns, chat.max_tool_calls, tuple(chat.tools), reply,
                    chat.stop_pattern, spec.seed, rows)


def reply_schema(loaded: LoadedSpec) -> dict[str, Any] | None:
    from distill.prompts import read_text_file, resolve_inside

    value = loaded.spec.chat.reply_schema
    if value is None or isinstance(value, dict):
        return value
    path = resolve_inside(loaded.directory, value, what="JSON schema file", key="chat.reply_schema", spec_file=loaded.path)
    try:
        return json.loads(read_text_file(path, what="JSON schema file"))
    except json.JSONDecodeError as exc:
        raise SpecError(Problem(f"invalid JSON: {exc.msg}", file=path, line=exc.lineno, column=exc.colno)) from None


def move_schema(reply_schema: dict[str, Any] | None, tools: list[str]) -> dict[str, Any]:
    """The JSON the teacher answers with for one assistant move. Tool arguments are only required to be an
    object here: checking them against the tool's schema is the review's job, so a bad call is kept and shown."""
    reply = {"type": "object", "properties": {"reply": reply_schema or {"type": "string", "minLength": 1}},
             "required": ["reply"], "additionalProperties": False}
    calls = [{"type": "object", "properties": {"tool": {"const": name}, "arguments": {"type": "object"}},
              "required": ["tool", "arguments"], "additionalProperties": False} for name in tools]
    return {"title": "assistant_move", "oneOf": [reply, *calls]}


class ChatWalker:
    """`RecordWalker`'s contract for conversations: `advance(i)` is record i's row or its next request."""

    def __init__(self, plan: ChatPlan, cache: AnswerCache, *, provider_name: str, model: str):
        self.plan = plan
        self.steps = RecordWalker(plan.generation, cache, provider_name=provider_name, model=model)
        self.renderer = plan.generation.prompts
        self.faults = self.steps.faults
        self.model, self.provider_name = model, provider_name
        self.n_steps = len(plan.generation.steps) - 2  # the spec's own steps; then the assistant's and the tool's

    @property
    def template_hashes(self) -> str:
        return self.steps.template_hashes

    def advance(self, index: int) -> dict[str, Any] | Pending:
        variables = self.renderer.variables(index)
        outputs: dict[str, Any] = {}
        log: list[dict[str, Any]] = []
        spent = _Spent()
        for k in range(self.plan.user_step):  # the scenario steps, once
            outcome = self._ask(k, index, self._step_messages(k, index, variables, outputs), spent, log)
            if isinstance(outcome, (Pending, _Failed)):
                return self._finish(index, variables, outputs, [], log, spent, outcome)
            outputs[self.plan.generation.steps[k].name] = outcome
        messages = [{"role": "system", "content": self._render(self.plan.system, variables, outputs, "chat.system")}] \
            if self.plan.system else []
        for turn in range(1, self.turns(index) + 1):
            context = {**variables, "turn": turn, "history": list(messages)}
            outcome = self._ask(self.plan.user_step, index, self._step_messages(self.plan.user_step, index, context, outputs),
                                spent, log, label=USER_STEP)
            if isinstance(outcome, (Pending, _Failed)):
                return self._finish(index, variables, outputs, messages, log, spent, outcome)
            messages.append({"role": "user", "content": outcome})
            outcome = self._assistant_turn(index, variables, outputs, messages, spent, log)
            if outcome is not None:
                return self._finish(index, variables, outputs, messages, log, spent, outcome)
            if self.plan.stop_pattern and re.search(self.plan.stop_pattern, messages[-1]["content"] or ""):
                break
        return self._finish(index, variables, outputs, messages, log, spent, None)

    def turns(self, index: int) -> int:
        turns = self.plan.turns
        if isinstance(turns, int):
            return turns
        seed = hashlib.sha256(f"{self.plan.seed}:{index}:chat.turns".encode()).digest()
        return random.Random(seed).randint(turns.min, turns.max)

    def _assistant_turn(self, index: int, variables: dict, outputs: dict, messages: list[dict], spent: _Spent,
                        log: list) -> Pending | _Failed | None:
        """The assistant's moves until it replies: None when it did, else what stopped the record."""
        calls = sum(1 for m in messages if m.get("tool_calls"))
        for move in range(self.plan.max_tool_calls + 1):
            request = [Message("system", self.plan.assistant or "You are a careful assistant."),
                       Message("user", self._assistant_prompt(messages))]
            answer = self._ask(self.n_steps, index, request, spent, log, label=ASSISTANT_STEP)
            if isinstance(answer, (Pending, _Failed)):
                return answer
            if "reply" not in answer and move == self.plan.max_tool_calls:
                return _Failed(f"the assistant called a tool more than chat.max_tool_calls ({move}) times in one turn")
            if "reply" in answer:
                reply = answer["reply"]
                messages.append({"role": "assistant",
                                 "content": reply if isinstance(reply, str) else json.dumps(reply, ensure_ascii=False)})
                return None
            calls += 1
            call_id, name = f"call_{calls}", answer["tool"]
            messages.append(tool_call_message(call_id, name, answer["arguments"]))
            result = self._tool_result(index, name, answer["arguments"], variables, outputs, spent, log)
            if isinstance(result, (Pending, _Failed)):
                return result
            messages.append(tool_result_message(call_id, name, result))
        return None

    def _tool_result(self, index: int, name: str, arguments: dict, variables: dict, outputs: dict, spent: _Spent,
                     log: list) -> str | Pending | _Failed:
        tool = next(t for t in self.plan.tools if t.function.name == name)
        result = tool.result
        context = {**variables, "arguments": arguments}
        if result.template is not None:
            return self._render(result.template, context, outputs, f"chat.tools.{name}.result.template")
        if result.rows is not None:
            wanted = arguments.get(result.match)
            row = next((r for r in self.plan.rows[name] if str(r.get(result.match)) == str(wanted)), None)
            return json.dumps(row, ensure_ascii=False) if row is not None else result.missing
        prompt = self._render(result.teacher, context, outputs, f"chat.tools.{name}.result.teacher")
        return self._ask(self.n_steps + 1, index, [Message("user", prompt)], spent, log, label=TOOL_STEP)

    def _assistant_prompt(self, messages: list[dict]) -> str:
        system = next((m["content"] for m in messages if m["role"] == "system"), "(none)")
        tools = json.dumps([t.function.model_dump() for t in self.plan.tools], ensure_ascii=False)
        note = " (its value must match this JSON Schema: " + json.dumps(self.plan.reply_schema) + ")" \
            if self.plan.reply_schema else ""
        turns = [m for m in messages if m["role"] != "system"]
        return ASSISTANT_PROTOCOL.format(system=system, tools=tools, transcript=render_transcript(turns), reply_note=note)

    def _step_messages(self, k: int, index: int, variables: dict, outputs: dict) -> list[Message]:
        return list(self.renderer.render_step(k, index, variables, outputs).messages)

    def _render(self, reference: str, variables: dict, outputs: dict, key: str) -> str:
        return self.renderer.render(reference, {**variables, "steps": dict(outputs)}, key=key)

    def _ask(self, k: int, index: int, messages: list[Message], spent: _Spent, log: list, *, label: str = "") -> Any:
        """The answer (text, or parsed JSON for the assistant), the request still to send, or why it failed
        (a string starting with "failed: ")."""
        step = self.plan.generation.steps[k]
        request = TeacherRequest(tuple(messages), self.model, self.steps.params[k], step.schema, record_index=index,
                                 step=label or step.name, custom_id=f"r{index}-s{k}-m{len(log)}")
        outcome = self.steps._answer_step(k, request, spent)
        if isinstance(outcome, Pending):
            return outcome
        output, failure = outcome
        log.append({"name": label or step.name, "messages": [[m.role, m.content] for m in messages], "output": output})
        if failure is not None:
            return _Failed(f"step {label or step.name!r}: {failure}")
        return output

    def _finish(self, index: int, variables: dict, outputs: dict, messages: list[dict], log: list, spent: _Spent,
                failure: Any) -> dict[str, Any] | Pending:
        if isinstance(failure, Pending):
            return failure
        ok = failure is None
        log.append({"name": "conversation", "messages": [], "output": messages,
                    "tools": self.plan.tool_list})
        first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
        return {
            "id": index,
            "variables": json.dumps(variables, ensure_ascii=False, sort_keys=True, default=str),
            "steps": json_text(log),
            "prompt": valid_text(first_user) if ok else "",
            "text": valid_text(render_transcript(messages, self.plan.tool_list)) if ok else "",
            "status": "ok" if ok else "failed",
            "failure_reason": str(failure or ""),
            "teacher_provider": self.provider_name,
            "teacher_model": self.model,
            "input_tokens": spent.input_tokens,
            "output_tokens": spent.output_tokens,
            "cost_usd": round(spent.cost_usd, 8),
            "cache_key": hashlib.sha256("".join(spent.keys).encode()).hexdigest(),
            "template_hashes": self.template_hashes,
            "answers": json_text(spent.answers),
        }


class _Failed(str):
    """Why a request of the conversation failed (kept apart from a text answer)."""

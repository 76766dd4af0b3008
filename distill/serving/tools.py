"""Tool calls and structured output on the chat API, for students trained on conversations (kind: chat).

Such a student's chat template (`distill.train.chat_template`) ends the prompt with `### assistant`; the
student goes on with `\\n` and a reply, or with ` calls NAME\\n` and the call's arguments as JSON. So:

- `tools` are rendered into the prompt (in the canonical form the student was trained on);
- `tool_choice` none forces the reply path (`\\n` is put after the prompt), a named function forces
  ` calls NAME\\n` and constrains the arguments to its `parameters` schema, required forces a call;
- `response_format` json_object / json_schema forces the reply path and constrains it to JSON (of the schema);
- the output is read back into OpenAI's shape: `content`, or `tool_calls` with finish_reason `tool_calls`,
  and when streaming, the call's name in one chunk and its arguments in the chunks that follow.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema

from distill.conversation import CALL, canonical_tools
from distill.serving.constrained import json_constraint, regex_constraint


class ToolRequestError(ValueError):
    def __init__(self, message: str, param: str, code: str = "invalid_value"):
        super().__init__(message)
        self.param, self.code = param, code


def speaks_tools(tokenizer) -> bool:
    """Whether the model was trained on conversations with tool calls (its template writes them)."""
    return "### assistant calls" in (tokenizer.chat_template or "")


@dataclass(frozen=True)
class OutputPlan:
    """How one chat request's answer is produced: the tools in the prompt, the text forced after the
    generation prompt, and the constraint on what follows."""

    tools: list[dict[str, Any]] | None = None
    forced: str = ""
    allowed: Callable[[list[int]], list[int] | None] | None = None
    reads_tools: bool = False  # the output may hold a tool call (and a reply starts with "\n")


def plan_output(body, tokenizer) -> OutputPlan:
    """The plan for `body` (a ChatRequest). Raises ToolRequestError for a request this model cannot honour."""
    tools = _checked_tools(body.tools)
    choice = body.tool_choice
    fmt = body.response_format or {"type": "text"}
    schema = _response_schema(fmt)
    fluent = speaks_tools(tokenizer)
    if not tools and choice not in (None, "none"):
        raise ToolRequestError("tool_choice needs tools: this request lists none", "tool_choice",
                               "invalid_value" if fluent else "unsupported_parameter")
    if tools and choice != "none" and not fluent:
        raise ToolRequestError("this model was not trained to call tools (train it on a chat spec with tools)",
                               "tools", "unsupported_parameter")
    if not fluent:
        return OutputPlan(allowed=json_constraint(tokenizer, schema) if fmt["type"] != "text" else None)
    if fmt["type"] != "text" or choice == "none" or not tools:
        shown = tools if choice != "none" else None
        return OutputPlan(shown, "\n", json_constraint(tokenizer, schema) if fmt["type"] != "text" else None, True)
    if choice in (None, "auto"):
        return OutputPlan(tools, "", arguments_constraint(tokenizer, tools), True)
    name = _forced_name(choice, tools)
    if name is None:  # required, several tools: a call, of the student's choosing
        return OutputPlan(tools, CALL.rstrip(), arguments_constraint(tokenizer, tools, CALL.rstrip()), True)
    parameters = next(t["function"]["parameters"] for t in tools if t["function"]["name"] == name)
    return OutputPlan(tools, f"{CALL}{name}\n", json_constraint(tokenizer, parameters), True)


def arguments_constraint(tokenizer, tools: list[dict[str, Any]], forced: str = "") -> Callable[[list[int]], list[int] | None]:
    """Free text until the student starts a call (` calls`); from there the name is one of `tools`' and the
    arguments match that tool's `parameters` (as OpenAI's strict function calling). None: no constraint."""
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    pattern = " (" + "|".join(re.escape(name) for name in schemas) + ")\n"
    constraints: dict[str, Callable[[list[int]], list[int]]] = {}
    prompt: list[int] = []

    def allowed(ids: list[int]) -> list[int] | None:
        if not prompt:
            prompt.append(len(ids))  # the first call comes before any token is generated
        text = forced + tokenizer.decode(ids[prompt[0]:])
        if not text.startswith(CALL.rstrip()):
            return None
        name, newline, _ = text[len(CALL.rstrip()):].partition("\n")
        key = name.strip() if newline else ""  # "": still writing the name
        if key and key not in schemas:
            return None
        if key not in constraints:
            constraints[key] = json_constraint(tokenizer, schemas[key]) if key else regex_constraint(tokenizer, pattern)
        return constraints[key](ids)

    return allowed


def _checked_tools(tools: list[dict] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or tool.get("type", "function") != "function":
            raise ToolRequestError(f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}", f"tools[{i}]")
        try:
            jsonschema.Draft202012Validator.check_schema(function.get("parameters", {}))
        except jsonschema.SchemaError as exc:
            raise ToolRequestError(f"tools[{i}].function.parameters is not a JSON Schema: {exc.message}",
                                   f"tools[{i}].function.parameters") from None
    return canonical_tools(tools)


def _response_schema(fmt: dict[str, Any]) -> dict[str, Any] | None:
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return None if kind == "text" else {"type": "object"}
    if kind != "json_schema":
        raise ToolRequestError(f"response_format.type must be text, json_object or json_schema, not {kind!r}",
                               "response_format.type")
    schema = (fmt.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        raise ToolRequestError("response_format.json_schema.schema must be a JSON Schema object",
                               "response_format.json_schema.schema")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ToolRequestError(f"response_format.json_schema.schema is not a JSON Schema: {exc.message}",
                               "response_format.json_schema.schema") from None
    return schema


def _forced_name(choice: Any, tools: list[dict[str, Any]]) -> str | None:
    names = [t["function"]["name"] for t in tools]
    if choice == "required":
        return names[0] if len(names) == 1 else None
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if name not in names:
        raise ToolRequestError(f"tool_choice names {name!r}, which is not in tools ({', '.join(names)})", "tool_choice")
    return name


def template_messages(messages) -> list[dict[str, Any]]:
    """The request's messages for the chat template: developer as system, tool results named after their call."""
    names: dict[str, str] = {}
    out = []
    for message in messages:
        item: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role, "content": message.text()}
        if message.tool_calls:
            item["tool_calls"] = message.tool_calls
            names.update({c.get("id", ""): c.get("function", {}).get("name", "tool") for c in message.tool_calls})
        if message.role == "tool":
            item["name"] = message.name or names.get(message.tool_call_id or "", "tool")
        out.append(item)
    return out


def read_output(plan: OutputPlan, text: str) -> tuple[str | None, list[dict[str, Any]] | None]:
    """(content, tool_calls) of a finished answer, in OpenAI's shape."""
    full = plan.forced + text
    if not plan.reads_tools:
        return text, None
    if full.startswith(CALL):
        name, _, arguments = full[len(CALL):].partition("\n")
        return None, [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                       "function": {"name": name.strip(), "arguments": arguments}}]
    return full[1:] if full.startswith("\n") else full, None


class StreamReader:
    """Turns one choice's text deltas into chat-chunk deltas: content, or a tool call's name then arguments."""

    def __init__(self, plan: OutputPlan):
        self.plan, self.seen, self.mode, self.sent = plan, plan.forced, None, 0

    def push(self, text: str) -> list[dict[str, Any]]:
        self.seen += text
        if not self.plan.reads_tools:
            return [{"content": text}] if text else []
        if self.mode is None:
            if self.seen.startswith(CALL) and "\n" in self.seen[len(CALL):]:
                self.mode = "call"
                name, _, _ = self.seen[len(CALL):].partition("\n")
                self.sent = len(CALL) + len(name) + 1
                return [{"tool_calls": [{"index": 0, "id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                                         "function": {"name": name.strip(), "arguments": ""}}]}, *self._rest()]
            if CALL.startswith(self.seen) or self.seen.startswith(CALL):
                return []  # not yet known whether this is a call
            self.mode, self.sent = "content", 1 if self.seen.startswith("\n") else 0
        return self._rest()

    def _rest(self) -> list[dict[str, Any]]:
        piece, self.sent = self.seen[self.sent:], len(self.seen)
        if not piece:
            return []
        if self.mode == "call":
            return [{"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}]
        return [{"content": piece}]

    def finish(self) -> list[dict[str, Any]]:
        """What is still held back when the choice ends (text that looked like the start of a call)."""
        if self.mode is None:
            self.mode, self.sent = "content", 1 if self.seen.startswith("\n") else 0
        return self._rest()

    @property
    def called(self) -> bool:
        return self.mode == "call"

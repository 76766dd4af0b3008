"""The offline stand-in's three roles in a simulated conversation (`distill.synthesis.chat`).

- user (`chat.user`): the rendered user template's `Message:` line, else its labelled lines joined;
- assistant (`chat.assistant`): calls the first tool whose required arguments it can read from the user's
  latest message (a string argument with a `pattern` is found by that pattern, an enum by mention), then
  replies from what the tool returned; with nothing to call it asks for the arguments it is missing;
- tool (`chat.tool`): the labelled lines of its prompt as a JSON object.

Like the rest of the stand-in it is a small grammar, not a model: regular enough for a tiny student to learn
when to call a tool and how to answer in the reply schema's shape.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from distill.conversation import parse_transcript
from distill.providers.protocol import TeacherRequest

_FIELD = re.compile(r"^([A-Z][A-Za-z ]{0,24}): (.+)$", re.MULTILINE)


def play_chat_role(request: TeacherRequest, rng: random.Random) -> str:
    prompt = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    if request.step == "chat.assistant":
        return json.dumps(assistant_move(prompt, request.json_schema or {}, rng), ensure_ascii=False)
    fields = _FIELD.findall(prompt)
    if request.step == "chat.tool":
        return json.dumps({label.lower().replace(" ", "_"): value.strip() for label, value in fields}, ensure_ascii=False)
    said = [value for label, value in fields if label.lower() == "message"]
    return (said[0] if said else " ".join(value for _, value in fields) or prompt).strip()


def assistant_move(prompt: str, schema: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    tools = json.loads(_between(prompt, "Tools (JSON):\n", "\n") or "[]")
    messages, _ = parse_transcript(_between(prompt, "Conversation so far:\n", "\n\nWrite the assistant's next move") or "")
    reply_schema = (schema.get("oneOf") or [{}])[0].get("properties", {}).get("reply")
    latest = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    since = messages[latest + 1:]
    if not since and latest >= 0:
        for tool in tools:
            arguments = find_arguments(tool.get("parameters", {}), messages[latest]["content"])
            if arguments is not None:
                return {"tool": tool["name"], "arguments": arguments}
    facts: dict[str, Any] = {}
    for message in since:
        if message["role"] == "tool":
            facts.update(_as_object(message["content"]))
        elif message.get("tool_calls"):
            facts.update(_as_object(message["tool_calls"][0]["function"]["arguments"]))
    missing = [name for tool in tools[:1] for name in tool.get("parameters", {}).get("required", [])]
    return {"reply": fill_reply(reply_schema, facts, missing, rng)}


def find_arguments(parameters: dict[str, Any], text: str) -> dict[str, Any] | None:
    """The call's arguments read from `text`, or None when a required one is not there."""
    found: dict[str, Any] = {}
    for name, schema in parameters.get("properties", {}).items():
        if "pattern" in schema:
            match = re.search(schema["pattern"].strip("^$"), text)
            if match:
                found[name] = match.group(0)
        elif "enum" in schema:
            mentioned = [v for v in schema["enum"] if isinstance(v, str) and re.search(rf"\b{re.escape(v)}\b", text, re.I)]
            if mentioned:
                found[name] = mentioned[0]
    return found if all(name in found for name in parameters.get("required", [])) else None


def fill_reply(schema: dict[str, Any] | None, facts: dict[str, Any], missing: list[str], rng: random.Random) -> Any:
    """A reply in `schema`'s shape: fields named like a fact copy it; the text says what was found, or asks
    for what is missing."""
    if facts:
        summary = "Here is what I found: " + "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in facts.items()
                                                       if isinstance(v, (str, int, float))) + "."
    else:
        summary = f"Could you tell me your {' and '.join(m.replace('_', ' ') for m in missing) or 'details'}, please?"
    if not schema or schema.get("type") == "string":
        return summary
    return _fill(schema, facts, summary, "")


def _fill(schema: dict[str, Any], facts: dict[str, Any], summary: str, name: str) -> Any:
    if name in facts and _fits(schema, facts[name]):
        return facts[name]
    if "enum" in schema:
        mentioned = [v for v in schema["enum"] if v in facts.values()]
        return mentioned[0] if mentioned else schema["enum"][-1 if not facts else 0]
    kind = schema.get("type", "object")
    if kind == "object":
        return {key: _fill(sub, facts, summary, key) for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_fill(schema.get("items", {}), facts, summary, name)]
    if kind == "boolean":
        return False
    if kind in ("integer", "number"):
        return 0
    return summary if name in ("message", "reply", "answer", "text", "") else str(facts.get(name, ""))


def _fits(schema: dict[str, Any], value: Any) -> bool:
    kind = schema.get("type")
    if "enum" in schema:
        return value in schema["enum"]
    return {"string": isinstance(value, str), "integer": isinstance(value, int), "boolean": isinstance(value, bool),
            "number": isinstance(value, (int, float))}.get(kind, True)


def _as_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _between(text: str, start: str, end: str) -> str | None:
    if start not in text:
        return None
    rest = text.split(start, 1)[1]
    return rest.split(end, 1)[0] if end in rest else rest

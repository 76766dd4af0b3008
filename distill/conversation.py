"""A conversation as a record: OpenAI-style messages, and the transcript text the review reads.

A chat record's `text` is its transcript: one block per message, each under a header line

    ### system                      the assistant's system message
    ### tools                       the tools the assistant may call, as JSON in OpenAI's format
    ### user                        what the (simulated) user said
    ### assistant                   the assistant's reply
    ### assistant calls NAME        a tool call; the block is the call's arguments as JSON
    ### tool NAME                   the tool's result

The transcript is what the safety review scans (its findings' spans index it, and `turn_at` names the turn a
span lies in) and what training reads back (`parse_transcript`), redactions included. Turns are numbered
from 1 over the messages after the system message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import jsonschema

CALL = " calls "  # after `### assistant`: the move is a tool call (then the name, a newline, the arguments)
HEADER = re.compile(r"^### (system|tools|user|assistant|assistant calls [A-Za-z_][A-Za-z0-9_]*|tool [A-Za-z_][A-Za-z0-9_]*)$",
                    re.MULTILINE)


def tool_call_message(call_id: str, name: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
    """An assistant message carrying one tool call, as OpenAI writes it (arguments as a JSON string)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}]}


def tool_result_message(call_id: str, name: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "name": name, "content": content}


def canonical_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Tools in one key order (type; function: name, description, parameters), so the student sees them written
    the same way in training and when a client sends them."""
    return [{"type": "function", "function": {"name": t["function"]["name"],
                                              "description": t["function"].get("description", ""),
                                              "parameters": t["function"].get("parameters", {})}} for t in tools or []]


def tools_json(tools: list[dict[str, Any]]) -> str:
    """How a tool list is written in transcripts and by the chat template's `tojson`."""
    return json.dumps(canonical_tools(tools), ensure_ascii=False)


def render_transcript(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
    """The messages as transcript text (see the module docstring); the tools after the system message."""
    blocks = []
    at = 1 if messages and messages[0]["role"] == "system" else 0
    listed = [*messages[:at], {"role": "tools", "content": tools_json(tools)}, *messages[at:]] if tools else messages
    for message in listed:
        role = message["role"]
        if role == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                blocks.append(f"### assistant calls {call['function']['name']}\n{call['function']['arguments']}")
        elif role == "tool":
            blocks.append(f"### tool {message.get('name') or 'tool'}\n{message['content']}")
        else:
            blocks.append(f"### {role}\n{message.get('content') or ''}")
    return "\n\n".join(blocks)


@dataclass(frozen=True)
class Block:
    """One message's place in a transcript: its turn (0: the system message), role, and the span of its content."""

    turn: int
    header: str
    start: int
    end: int
    at: int  # where the header line starts


def transcript_blocks(text: str) -> list[Block]:
    headers = list(HEADER.finditer(text))
    blocks, turn = [], 0
    for i, match in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        start = min(match.end() + 1, end)
        while end > start and text[end - 1] == "\n":
            end -= 1
        if match.group(1) not in ("system", "tools"):
            turn += 1
        blocks.append(Block(turn, match.group(1), start, end, match.start()))
    return blocks


def turn_at(text: str, offset: int) -> int | None:
    """The turn whose block holds character `offset` of a transcript (0: the system message or the tools; None:
    before the first header)."""
    found = None
    for block in transcript_blocks(text):
        if offset >= block.at:  # the header line belongs to its block
            found = block.turn
    return found


def parse_transcript(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(messages, tools) of a transcript, tool calls and results paired by id (call_1, call_2, ...)."""
    messages: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    calls = 0
    for block in transcript_blocks(text):
        content = text[block.start:block.end]
        if block.header == "tools":
            tools = json.loads(content)
        elif block.header.startswith("assistant calls "):
            calls += 1
            messages.append(tool_call_message(f"call_{calls}", block.header.split()[-1], content))
        elif block.header.startswith("tool "):
            messages.append(tool_result_message(f"call_{calls}", block.header.split()[-1], content))
        else:
            messages.append({"role": block.header, "content": content})
    return messages, tools


def tool_call_problem(arguments: str, parameters: dict[str, Any]) -> str | None:
    """What is wrong with a call's arguments (JSON text) against its schema; None when they are valid."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as exc:
        return f"arguments are not JSON ({exc.msg} at column {exc.colno})"
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(parameters).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "the top level"
    return f"arguments break the schema at {where}: {error.message}"


def invalid_tool_calls(text: str, tools: dict[str, dict[str, Any]]) -> list[tuple[Block, str]]:
    """The tool-call blocks of a transcript that name an unknown tool or break its argument schema."""
    found = []
    for block in transcript_blocks(text):
        if not block.header.startswith("assistant calls "):
            continue
        name = block.header.split()[-1]
        problem = (f"calls {name!r}, which is not a tool of this spec" if name not in tools
                   else tool_call_problem(text[block.start:block.end], tools[name]))
        if problem:
            found.append((block, problem))
    return found

"""The review of a conversation (kind: chat): the cheap chain reads the whole transcript, every turn, and
this module makes its findings about turns.

- The transcript's header lines (`### user`, `### assistant calls NAME`, ...) are distill's own layout, not
  text anyone wrote: a finding that starts on one (a "heading impersonating a chat role") is dropped.
- Every finding is given its turn (`Finding.turn`, from `distill.conversation.turn_at`); its span already
  points into the transcript.
- A tool call whose arguments are not JSON, break the tool's schema, or name a tool the record does not list
  is a finding of its own (`chat.invalid_tool_call`, rejected: the student would learn to call it so).
"""

from __future__ import annotations

import dataclasses

from distill.conversation import HEADER, invalid_tool_calls, parse_transcript, transcript_blocks, turn_at
from distill.review.verdict import Finding, RecordVerdict, most_severe


def is_transcript(text: str) -> bool:
    """Whether a record's text is a conversation's transcript (it opens with a header line)."""
    match = HEADER.match(text)
    return match is not None and match.start() == 0


def review_conversation(verdict: RecordVerdict, text: str) -> RecordVerdict:
    """`verdict` of the chain on transcript `text`, with its findings placed in turns and the tool calls checked."""
    headers = [(b.at, b.start) for b in transcript_blocks(text)]
    kept = [dataclasses.replace(f, turn=turn_at(text, f.span[0])) for f in verdict.reasons
            if f.field != "text" or not any(at <= f.span[0] < start - 1 for at, start in headers)]
    _, tools = parse_transcript(text)
    schemas = {t["function"]["name"]: t["function"].get("parameters", {}) for t in tools}
    for block, problem in invalid_tool_calls(text, schemas):
        kept.append(Finding("conformance", "chat.invalid_tool_call", "CONFORMANCE", (block.start, block.end),
                            f"turn {block.turn}: {problem}", action="reject", turn=block.turn))
    return dataclasses.replace(verdict, reasons=kept, decision=most_severe(kept))

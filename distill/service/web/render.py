"""Rendering pages: one Jinja environment with autoescape on (record text is untrusted teacher output),
and the context every page gets (the signed-in user, the CSRF token for its forms)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from distill.conversation import transcript_blocks
from distill.service.permissions import permitted

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.autoescape = True  # every template, whatever its file name


def csrf_field(request: Request) -> Markup:
    return Markup('<input type="hidden" name="csrf" value="{}">').format(getattr(request.state, "csrf", ""))


def highlight(text: str, spans: list[tuple[int, int, str, str]]) -> Markup:
    """`text` escaped, with each (start, end, code, reason) span wrapped in <mark> labelled with its code
    and titled with the whole reason; a span overlapping an earlier one is cut to what follows it."""
    out, at = [], 0
    for start, end, code, reason in sorted(spans):
        start, end = max(start, at), min(end, len(text))
        if start >= end:
            continue
        out.append(escape(text[at:start]))
        out.append(Markup('<mark title="{0}">{1}<span class="why"> [{2}]</span></mark>').format(reason, text[start:end], code))
        at = end
    out.append(escape(text[at:]))
    return Markup("").join(out)


def conversation(text: str, spans: list[tuple[int, int, str, str]]) -> Markup:
    """A conversation's transcript (distill.conversation) as its turns, each labelled with its number and who
    speaks (a tool call with its tool), the content escaped and the findings in it marked as `highlight` does."""
    out = []
    for block in transcript_blocks(text):
        inside = [(max(s, block.start) - block.start, min(e, block.end) - block.start, code, reason)
                  for s, e, code, reason in spans if s < block.end and e > block.start]
        role = block.header.split()[0]
        label = f"Turn {block.turn} · {block.header}" if block.turn else block.header
        out.append(Markup('<div class="turn turn-{0}"><div class="who">{1}</div><div class="recordtext">{2}</div></div>')
                   .format(role, label, highlight(text[block.start:block.end], inside)))
    return Markup("").join(out)


def money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.2f}"


templates.env.globals.update(csrf_field=csrf_field, may=permitted)  # {% if may(user, "review") %}: the API's rule
templates.env.filters.update(money=money, highlight=highlight, conversation=conversation)
templates.env.tests["transcript"] = lambda text: bool(text) and bool(transcript_blocks(text)) and text.startswith("### ")


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200, user=None):
    context = {"user": user or getattr(request.state, "user", None), **context}
    return templates.TemplateResponse(request, name, context, status_code=status_code)

"""What every review stage returns: findings with reason codes and spans, and a record's verdict.

A `Finding` is one reason: which stage saw it, a dotted reason code (`pii.email`), the hazard category
(MLCommons codes `S1`..`S14` as Llama Guard uses them, or `PII`, `SECRET`, `INJECTION`, `QUALITY`,
`ENCODING`, `CONFORMANCE`, `DUPLICATE`, `CONTAMINATION`, `JUDGE`), the character span it covers, a short
detail for the reviewer, and the action the policy assigned to it. A record's decision is the most
severe action among its findings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Decision = Literal["pass", "flag", "redact", "reject"]

# redact < flag: a record with a redacted email and a flagged word still needs a human.
SEVERITY: dict[str, int] = {"pass": 0, "redact": 1, "flag": 2, "reject": 3}

@dataclass(frozen=True)
class Finding:
    """One reason. `span` is (start, end) in characters of the checked text of `field`; a finding about
    the whole record spans the whole text. Stage `decoding`/`normalisation` spans index the original
    text, later stages index the normalised text (see `RecordVerdict.checked_text`)."""

    stage: str
    code: str
    category: str
    span: tuple[int, int]
    detail: str = ""
    action: Decision = "flag"
    field: str = "text"  # "text" or "prompt"
    replacement: str | None = None  # for action "redact": what replaces the span
    turn: int | None = None  # a conversation's turn the span lies in (distill.review.conversation)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["span"] = list(self.span)
        for optional in ("replacement", "turn"):
            if data[optional] is None:
                del data[optional]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Finding":
        return cls(**{**data, "span": tuple(data["span"])})


def most_severe(findings: list[Finding] | tuple[Finding, ...]) -> Decision:
    decision: Decision = "pass"
    for finding in findings:
        if SEVERITY[finding.action] > SEVERITY[decision]:
            decision = finding.action
    return decision


@dataclass
class RecordVerdict:
    """The cheap chain's answer for one text (or one prompt+text record).

    `checked_text` is the text after safe repairs (mojibake fixed, invisible characters removed);
    `redacted_text` is `checked_text` with redaction spans replaced, or None when nothing needed
    redacting or repairing. `checked_prompt`/`redacted_prompt` are the same for an instruct prompt.
    """

    decision: Decision
    reasons: list[Finding]
    redacted_text: str | None
    checked_text: str
    checked_prompt: str = ""
    redacted_prompt: str | None = None
    stats: dict[str, float] = field(default_factory=dict)  # words, off-vocabulary share, ... for reports

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.reasons]

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "reasons": [f.to_json() for f in self.reasons],
            "checked_text": self.checked_text,
            "redacted_text": self.redacted_text,
            "checked_prompt": self.checked_prompt,
            "redacted_prompt": self.redacted_prompt,
            "stats": self.stats,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RecordVerdict":
        return cls(
            decision=data["decision"],
            reasons=[Finding.from_json(f) for f in data["reasons"]],
            redacted_text=data["redacted_text"],
            checked_text=data["checked_text"],
            checked_prompt=data.get("checked_prompt", ""),
            redacted_prompt=data.get("redacted_prompt"),
            stats=data.get("stats", {}),
        )


def apply_redactions(text: str, findings: list[Finding], field_name: str = "text") -> str | None:
    """`text` (the checked text) with every redact finding's span replaced; overlapping spans merge into
    the earlier one. None when there is nothing to redact. Decoding and normalisation findings index
    the original text and their "redaction" is the repair already made in the checked text."""
    spans = sorted(
        (f.span[0], f.span[1], f.replacement or f"[{f.code.split('.')[-1].upper()}]")
        for f in findings
        if f.action == "redact" and f.field == field_name and f.span[1] > f.span[0]
        and f.stage not in ("decoding", "normalisation")
    )
    if not spans:
        return None
    merged: list[list] = []
    for start, end, replacement in spans:
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, replacement])
    out = []
    cursor = 0
    for start, end, replacement in merged:
        out.append(text[cursor:start])
        out.append(replacement)
        cursor = end
    out.append(text[cursor:])
    return "".join(out)

"""What a check reports: a `Finding`, one reason with its code, category and span, and the action the
policy gives it (`distill.review.verdict` explains the codes and builds a record's verdict from them).
It sits below the review so that the key checks (`distill.keys`) scan with the same patterns."""

from __future__ import annotations

from dataclasses import asdict, dataclass
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

"""Stage 6: prompt injection inside generated text. A record is later read by models (the judge,
the student, customers' pipelines), so instructions aimed at a model are a hazard even in a story:
"ignore previous instructions", role tags, chat-template tokens, requests to the judge to say "safe",
markdown images that leak data. Patterns live in `safety/patterns/injection.yaml`.

The chain runs this on the normalised text (zero-width and tag characters removed), so an injection
split by invisible characters is still seen.
"""

from __future__ import annotations

from collections.abc import Set

from distill.scanning.patterns import Pattern, scan
from distill.review.verdict import Finding


def scan_injection(text: str, lowered: str, patterns: list[Pattern], present: Set[str] | None = None) -> list[Finding]:
    return scan(text, lowered, patterns, "injection", present=present)

"""Stage 5: credentials. Provider API keys, private keys, JWTs, connection strings with a password,
and `api_key = "..."` assignments; the patterns live in `safety/patterns/secrets.yaml`.

Placeholders from documentation (`AKIAIOSFODNN7EXAMPLE`, `sk-...xxxx`, `<password>`, `${DB_PASS}`)
are not secrets and pass.
"""

from __future__ import annotations

import re
from collections.abc import Set

from distill.scanning.patterns import Pattern, scan
from distill.scanning.finding import Finding

_PLACEHOLDER = re.compile(
    r"EXAMPLE|x{4,}|X{4,}|\*{3,}|\.{3}|<[^>]*>|\$\{|\{\{|%\(|your[_-]|YOUR[_-]|"
    r"://[^:/\s]+:(?:password|passwd|pass|secret|changeme|pwd)@",
)


def scan_secrets(text: str, lowered: str, patterns: list[Pattern], present: Set[str] | None = None) -> list[Finding]:
    return [f for f in scan(text, lowered, patterns, "secrets", "[SECRET]", present) if not _PLACEHOLDER.search(text, f.span[0], f.span[1])]

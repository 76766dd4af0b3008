"""Regex pattern files under `safety/patterns/`: secrets, injections, refusals, national ids.

A pattern file is YAML: `patterns: [{code, category, regex, detail, flags?}]`. Patterns are compiled
once when a chain is built; a bad regex is reported with the file, the line and the pattern's code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from distill.errors import Problem, SpecError
from distill.located_yaml import load_located_yaml
from distill.paths import data_path

_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}


@dataclass(frozen=True)
class Pattern:
    code: str
    category: str
    regex: re.Pattern[str]
    detail: str


def pattern_file(name: str) -> Path:
    return data_path("safety") / "patterns" / f"{name}.yaml"


def load_patterns(path: Path) -> list[Pattern]:
    document = load_located_yaml(path)
    entries = document.data.get("patterns") if isinstance(document.data, dict) else None
    if not isinstance(entries, list):
        raise SpecError(Problem("a pattern file needs a top-level list 'patterns'", file=path, line=1))
    patterns = []
    problems = []
    for index, entry in enumerate(entries):
        line, column = document.locate(("patterns", index))
        if not isinstance(entry, dict) or not {"code", "category", "regex"} <= entry.keys():
            problems.append(Problem("each pattern needs code, category and regex", file=path, line=line, column=column))
            continue
        flags = 0
        for letter in str(entry.get("flags", "")):
            flags |= _FLAGS.get(letter, 0)
        try:
            regex = re.compile(entry["regex"], flags)
        except re.error as exc:
            problems.append(Problem(f"bad regex for {entry['code']}: {exc}", file=path, line=line, column=column))
            continue
        patterns.append(Pattern(entry["code"], entry["category"], regex, entry.get("detail", "")))
    if problems:
        raise SpecError(*problems)
    return patterns


def combined(patterns: list[Pattern]) -> re.Pattern[str]:
    """One alternation with a named group per pattern: a single scan of the text finds every kind,
    instead of one pass per pattern (the cheap chain's time budget is ~0.5 ms per record)."""
    parts = []
    for index, pattern in enumerate(patterns):
        inline = "".join(letter for flag, letter in ((re.I, "i"), (re.M, "m"), (re.S, "s")) if pattern.regex.flags & flag)
        body = pattern.regex.pattern
        parts.append(f"(?P<p{index}>(?{inline}:{body}))" if inline else f"(?P<p{index}>{body})")
    return re.compile("|".join(parts) or r"(?!x)x")


def scan(text: str, patterns: list[Pattern], regex: re.Pattern[str], stage: str, replacement: str | None = None) -> list:
    """Every non-overlapping hit of a combined regex, as findings of the pattern that matched."""
    from distill.review.verdict import Finding

    found = []
    for match in regex.finditer(text):
        pattern = patterns[int(match.lastgroup[1:])]  # the outer named group closes last
        found.append(Finding(stage, pattern.code, pattern.category, match.span(), pattern.detail, replacement=replacement))
    return found

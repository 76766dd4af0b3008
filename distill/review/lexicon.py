"""Stage 7: word lists (profanity, violence, adult themes) from `safety/lexicons/*.yaml`.

A lexicon file: `code` (e.g. `lexicon.profanity`), `category` (`PROFANITY`, or a hazard code like `S1`),
`description`, `terms` (words or phrases). Terms match whole words, case-insensitively, with common
endings (`s`, `es`, `ed`, `ing`, `er`); the policy decides whether a hit flags, redacts or rejects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from distill.errors import Problem, SpecError
from distill.located_yaml import load_located_yaml
from distill.review.verdict import Finding


@dataclass(frozen=True)
class Lexicon:
    code: str
    category: str
    description: str
    terms: tuple[str, ...]


def load_lexicon(path: Path) -> Lexicon:
    document = load_located_yaml(path)
    data = document.data
    if not isinstance(data, dict) or not {"code", "category", "terms"} <= data.keys() or not isinstance(data["terms"], list):
        raise SpecError(Problem("a lexicon needs code, category and a list of terms", file=path, line=1))
    if not str(data["code"]).startswith("lexicon."):
        raise SpecError(Problem("a lexicon's code must start with 'lexicon.'", file=path, key="code", line=document.locate(("code",))[0]))
    terms = tuple(sorted({str(t).lower().strip() for t in data["terms"] if str(t).strip()}, key=len, reverse=True))
    return Lexicon(data["code"], data["category"], data.get("description", ""), terms)


_ENDINGS = ("", "s", "es", "ed", "ing", "er", "ers")


def lexicon_words(lexicons: list[Lexicon]) -> frozenset[str]:
    """Every lower-case word form that can start a hit: the regex only runs on records sharing one."""
    return frozenset(term.split()[0] + ending for lexicon in lexicons for term in lexicon.terms for ending in _ENDINGS)


def lexicon_regex(lexicons: list[Lexicon]) -> re.Pattern[str] | None:
    """One alternation, a named group per lexicon; longer terms first so phrases win over their words."""
    parts = []
    for index, lexicon in enumerate(lexicons):
        terms = "|".join(r"\s+".join(map(re.escape, term.split())) for term in lexicon.terms)
        parts.append(f"(?P<l{index}>{terms})")
    if not parts:
        return None
    return re.compile(r"\b(?:%s)(?:s|es|ed|ing|er|ers)?\b" % "|".join(parts), re.IGNORECASE)


def scan_lexicons(text: str, words: list[str], lexicons: list[Lexicon], first_words: frozenset[str], regex: re.Pattern[str] | None) -> list[Finding]:
    """`words` are the record's lower-cased words; `first_words` is `lexicon_words(lexicons)`."""
    if regex is None or first_words.isdisjoint(words):
        return []
    found = []
    for match in regex.finditer(text):
        lexicon = lexicons[int(match.lastgroup[1:])]
        found.append(Finding("lexicon", lexicon.code, lexicon.category, match.span(), match.group(), replacement="[...]"))
    return found

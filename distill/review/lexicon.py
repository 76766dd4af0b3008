"""Stage 7: word lists (profanity, violence, adult themes) from `safety/lexicons/*.yaml`.

A lexicon file: `code` (e.g. `lexicon.profanity`), `category` (`PROFANITY`, or a hazard code like `S1`),
`description`, `terms` (words or phrases), and optionally `idioms`: phrases in which a term means no
harm ("kill the lights", "killed it"); a hit inside one of them is not reported. Terms match whole
words, case-insensitively, with common endings (`s`, `es`, `ed`, `ing`, `er`); the policy decides
whether a hit flags, redacts or rejects.
"""

from __future__ import annotations

import re
from collections.abc import Set
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
    idioms: tuple[str, ...] = ()


def load_lexicon(path: Path) -> Lexicon:
    document = load_located_yaml(path)
    data = document.data
    if not isinstance(data, dict) or not {"code", "category", "terms"} <= data.keys() or not isinstance(data["terms"], list):
        raise SpecError(Problem("a lexicon needs code, category and a list of terms", file=path, line=1))
    if not str(data["code"]).startswith("lexicon."):
        raise SpecError(Problem("a lexicon's code must start with 'lexicon.'", file=path, key="code", line=document.locate(("code",))[0]))
    terms = tuple(sorted({str(t).lower().strip() for t in data["terms"] if str(t).strip()}, key=len, reverse=True))
    idioms = tuple(str(t).lower().strip() for t in data.get("idioms") or [] if str(t).strip())
    return Lexicon(data["code"], data["category"], data.get("description", ""), terms, idioms)


_ENDINGS = ("", "s", "es", "ed", "ing", "er", "ers")


@dataclass(frozen=True)
class LexiconIndex:
    """The lexicons compiled for scanning. The regex (which gives spans) is slow on a long alternation,
    so it only runs when a record has one of the single-word forms or contains one of the phrases:
    a set intersection and a few substring tests, ~50x cheaper, and most records match nothing."""

    lexicons: tuple[Lexicon, ...]
    regex: re.Pattern[str] | None
    word_forms: frozenset[str]
    phrases: tuple[str, ...]


def index_lexicons(lexicons: list[Lexicon]) -> LexiconIndex:
    parts = []
    for index, lexicon in enumerate(lexicons):
        terms = "|".join(r"\s+".join(map(re.escape, term.split())) for term in lexicon.terms)
        parts.append(f"(?P<l{index}>{terms})")  # longer terms first (load_lexicon sorts), so phrases win
    regex = re.compile(r"\b(?:%s)(?:s|es|ed|ing|er|ers)?\b" % "|".join(parts), re.IGNORECASE) if parts else None
    terms = [term for lexicon in lexicons for term in lexicon.terms]
    forms = frozenset(term + ending for term in terms if " " not in term for ending in _ENDINGS)
    phrases = tuple(" ".join(term.split()) for term in terms if " " in term)
    return LexiconIndex(tuple(lexicons), regex, forms, phrases)


def scan_lexicons(text: str, lowered: str, words: list[str], index: LexiconIndex, present: Set[str] | None = None) -> list[Finding]:
    """`lowered` and `words` are the record lower-cased and split into words; `present` the strings of
    `index.phrases` in `lowered`, when the caller found them already."""
    if index.regex is None:
        return []
    if present is None:
        present = {phrase for phrase in index.phrases if phrase in lowered}
    if index.word_forms.isdisjoint(words) and present.isdisjoint(index.phrases):
        return []
    found = []
    for match in index.regex.finditer(text):
        lexicon = index.lexicons[int(match.lastgroup[1:])]
        if lexicon.idioms and _in_idiom(lowered, match.start(), match.end(), lexicon.idioms):
            continue
        found.append(Finding("lexicon", lexicon.code, lexicon.category, match.span(), match.group(), replacement="[...]"))
    return found


def _in_idiom(lowered: str, start: int, end: int, idioms: tuple[str, ...]) -> bool:
    """The hit at `start:end` lies inside one of `idioms` in the lower-cased text."""
    window = lowered[max(0, start - 30) : end + 30]
    offset = max(0, start - 30)
    for idiom in idioms:
        at = window.find(idiom)
        while at >= 0:
            if offset + at <= start and end <= offset + at + len(idiom):
                return True
            at = window.find(idiom, at + 1)
    return False

"""Regex pattern files under `safety/patterns/`: secrets, injections, refusals, national ids.

A pattern file is YAML: `patterns: [{code, category, regex, detail, flags?, triggers?}]`. `triggers`
are lower-case literals of which at least one must occur in the lower-cased text for the regex to run:
a substring test is ~50x cheaper than a regex scan, and most records trigger nothing, which is how
the cheap chain stays well under a millisecond per record. The chain finds every trigger of every
pattern file in one Aho-Corasick pass (`Triggers`, on pyahocorasick) instead of one search per trigger. Patterns are compiled once; a bad regex
is reported with the file, the line and the pattern's code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Set
from dataclasses import dataclass
from pathlib import Path

import ahocorasick

from distill.errors import Problem, SpecError
from distill.located_yaml import load_located_yaml
from distill.scanning.finding import Finding

_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}


@dataclass(frozen=True)
class Pattern:
    code: str
    category: str
    regex: re.Pattern[str]
    detail: str
    triggers: tuple[str, ...] = ()  # empty: always run


class PatternList(list):
    """The patterns of one file, in order, with an index from each trigger to the patterns it starts, so
    a scan visits only the patterns a record triggers instead of testing every pattern's triggers."""

    def __init__(self, patterns: Iterable[Pattern] = ()):
        super().__init__(patterns)
        self.always = tuple(i for i, p in enumerate(self) if not p.triggers)
        self.by_trigger: dict[str, list[int]] = {}
        for index, pattern in enumerate(self):
            for trigger in set(pattern.triggers):
                self.by_trigger.setdefault(trigger, []).append(index)
        self.triggers = frozenset(self.by_trigger)

    def triggered(self, present: Set[str]) -> list[Pattern]:
        """The patterns, in file order, that have no trigger or one of whose triggers is `present`."""
        hits = self.triggers.intersection(present)
        if not hits:
            return [self[i] for i in self.always]
        indices = set(self.always).union(*(self.by_trigger[t] for t in hits))
        return [self[i] for i in sorted(indices)]


def load_patterns(path: Path) -> PatternList:
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
        triggers = tuple(str(t).lower() for t in entry.get("triggers", []))
        patterns.append(Pattern(entry["code"], entry["category"], regex, entry.get("detail", ""), triggers))
    if problems:
        raise SpecError(*problems)
    return PatternList(patterns)


class Triggers:
    """The trigger literals of several pattern files, found in one pass over a lower-cased text."""

    def __init__(self, pattern_lists: Iterable[list[Pattern]], literals: Iterable[str] = ()):
        """`literals`: other lower-case strings to look for in the same pass (lexicon phrases)."""
        self._automaton = ahocorasick.Automaton()
        for trigger in {t for patterns in pattern_lists for pattern in patterns for t in pattern.triggers} | set(literals):
            self._automaton.add_word(trigger, trigger)
        if len(self._automaton):
            self._automaton.make_automaton()

    def present(self, lowered: str) -> set[str]:
        if not len(self._automaton):
            return set()
        return {trigger for _, trigger in self._automaton.iter(lowered)}


def scan(text: str, lowered: str, patterns: list[Pattern], stage: str, replacement: str | None = None,
         present: Set[str] | None = None) -> list[Finding]:
    """Every hit of every triggered pattern; a span already claimed by an earlier pattern in the file
    is not reported again (so `sk-ant-...` is an Anthropic key, not also an OpenAI one). `present` are
    the triggers in `lowered` when the caller found them already (see `Triggers`)."""
    found: list[Finding] = []
    if present is None:
        present = {t for pattern in patterns for t in pattern.triggers if t in lowered}
    if isinstance(patterns, PatternList):
        patterns = patterns.triggered(present)
    for pattern in patterns:
        if pattern.triggers and present.isdisjoint(pattern.triggers):
            continue
        for match in pattern.regex.finditer(text):
            start, end = match.span()
            if any(f.span[0] < end and start < f.span[1] for f in found):
                continue
            found.append(Finding(stage, pattern.code, pattern.category, (start, end), pattern.detail, replacement=replacement))
    return found

"""Task conformance (part of stage 3): does the record do what the spec asked?

For TinyStories-style specs: the share of words outside an allowed simple vocabulary, the words the
prompt required (the record's sampled noun/verb/adjective), and the story length. The vocabulary file
lists base forms; inflections (plays, played, playing, bigger, happily, ...) are recognised here by
undoing the common English suffixes, so the word list stays a list a person can read and edit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from distill.review.text_checks import finding
from distill.review.verdict import Finding

# Words the chain counts: letters with an inner apostrophe ("don't"); runs glued to digits or
# underscores (keys, identifiers: "Zq8Xv4", "api_key") are not words.
WORD = re.compile(r"\b[A-Za-z]+(?:['\u2019][A-Za-z]+)?\b")
_CONTRACTIONS = ("n't", "'s", "'re", "'ll", "'ve", "'d", "'m")
_IRREGULAR_NEGATIONS = {"can't": "can", "won't": "will", "shan't": "shall", "ain't": "be"}


class Vocabulary:
    """Allowed base words, and which inflected words they cover (memoised: a corpus of stories uses
    a few thousand distinct words, so after the first records every lookup is one dict hit)."""

    def __init__(self, words: frozenset[str], name: str = ""):
        self.words = words
        self.name = name
        self.known: set[str] = set()  # inflected forms seen so far that the vocabulary covers
        self._seen: set[str] = set()

    def learn(self, words: set[str]) -> None:
        """Classify words not seen before; afterwards `word in self.known` answers for them."""
        new = words.difference(self._seen)
        if new:
            for word in new:
                if any(c in self.words for c in lemma_candidates(word)):
                    self.known.add(word)
            self._seen |= new

    def knows(self, word: str) -> bool:
        self.learn({word})
        return word in self.known


@dataclass(frozen=True)
class TaskConformance:
    """What the task asks of every record."""

    vocabulary: Vocabulary | None = None
    max_off_vocab_share: float = 0.1
    min_words: int | None = None
    max_words: int | None = None
    required_variables: tuple[str, ...] = ()


def load_vocabulary(path: Path) -> Vocabulary:
    """One word per line; `#` starts a comment; several words on a line are allowed."""
    words = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        words.update(w.lower() for w in line.split("#", 1)[0].split())
    return Vocabulary(frozenset(words), path.stem)


def lemma_candidates(word: str) -> tuple[str, ...]:
    """Base forms `word` may be an inflection of, most likely first (lower-case input)."""
    word = word.replace("\u2019", "'")
    out = [word]
    if word in _IRREGULAR_NEGATIONS:
        return (word, _IRREGULAR_NEGATIONS[word])
    for ending in _CONTRACTIONS:
        if word.endswith(ending) and len(word) > len(ending) + 1:
            word = word[: -len(ending)]
            out.append(word)
            break
    n = len(word)
    if n > 4 and word.endswith("ies"):
        out.append(word[:-3] + "y")
    if n > 4 and word.endswith("ied"):
        out.append(word[:-3] + "y")
    if n > 3 and word.endswith("es"):
        out.append(word[:-2])
    if n > 2 and word.endswith("s") and not word.endswith("ss"):
        out.append(word[:-1])
    for suffix in ("ing", "ed", "er", "est"):
        if n >= len(suffix) + 2 and word.endswith(suffix):
            stem = word[: -len(suffix)]
            out += [stem, stem + "e"]
            if len(stem) > 2 and stem[-1] == stem[-2]:
                out.append(stem[:-1])  # running -> run, bigger -> big
            if stem.endswith("i"):
                out.append(stem[:-1] + "y")  # happier -> happy, tried -> try
    if n > 4 and word.endswith("ily"):
        out.append(word[:-3] + "y")  # happily -> happy
    if n > 4 and word.endswith("ly"):
        out += [word[:-2], word[:-2] + "le"]  # quickly -> quick, gently -> gentle
    if n > 3 and word.endswith("n"):
        out.append(word[:-1])  # taken -> take (irregulars are listed in the vocabulary)
    return tuple(out)


def check_conformance(text: str, tokens: list[str], words: list[str], task: TaskConformance, required: list[str]) -> tuple[list[Finding], dict[str, float]]:
    """`tokens` are the text's words with their case (capitalised unknown words count as names),
    `words` the same lower-cased."""
    found: list[Finding] = []
    stats: dict[str, float] = {"words": len(tokens)}
    span = (0, len(text))
    if task.min_words is not None and len(tokens) < task.min_words:
        found.append(finding("conformance", "conformance.too_short", span, f"{len(tokens)} words, minimum {task.min_words}"))
    if task.max_words is not None and len(tokens) > task.max_words:
        found.append(finding("conformance", "conformance.too_long", span, f"{len(tokens)} words, maximum {task.max_words}"))
    if task.vocabulary is not None and tokens:
        task.vocabulary.learn(set(words))
        known = task.vocabulary.known
        outside = [i for i, word in enumerate(words) if word not in known]
        unknown = [words[i] for i in outside if not tokens[i][0].isupper()]  # capitalised: a name (Lily, Beep)
        counted = len(words) - (len(outside) - len(unknown))
        share = len(unknown) / counted if counted else 0.0
        stats["off_vocab_share"] = round(share, 4)
        if share > task.max_off_vocab_share:
            first = re.search(r"\b%s\b" % re.escape(unknown[0]), text, re.I)
            found.append(finding("conformance", "conformance.off_vocabulary", first.span() if first else span,
                                 f"{share:.0%} of words outside the vocabulary: {', '.join(dict.fromkeys(unknown))}"[:300]))
    if required:
        lemmas = {c for word in set(words) for c in lemma_candidates(word)}
        lowered = text.lower()
        for word in required:
            word_lower = word.lower()
            present = word_lower in lowered if " " in word_lower else bool(set(lemma_candidates(word_lower)) & lemmas)
            if not present:
                found.append(finding("conformance", "conformance.missing_word", span, f"required word {word!r} is missing"))
    return found, stats

"""Offline text metrics that need no judge: diversity, formulaic openings, conformance, length, JSON validity.

Words and word forms are the review chain's (`distill.review.conformance`): a vocabulary lists base
forms and inflections count (played -> play, happily -> happy); an unknown capitalised word is a name and
does not count against the vocabulary, exactly as the conformance check sees it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from distill.review.conformance import WORD, Vocabulary, lemma_candidates


def words_of(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams over all n-grams in all texts (1.0: no n-gram ever repeats)."""
    grams: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        words = words_of(text)
        grams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def openings(texts: Sequence[str], words: int = 3, top: int = 5) -> dict[str, Any]:
    """How formulaic the starts are: the share of texts whose first `words` words another text shares,
    and the most common openings with their shares."""
    starts = [" ".join(words_of(t)[:words]) for t in texts]
    counts = Counter(s for s in starts if s)
    repeated = sum(c for c in counts.values() if c > 1)
    return {
        "repeated_share": repeated / len(texts) if texts else 0.0,
        "top": [{"opening": s, "share": c / len(texts)} for s, c in counts.most_common(top)],
    }


def vocabulary_conformance(texts: Sequence[str], vocabulary: Vocabulary) -> dict[str, Any]:
    """Share of words (all texts together, names aside) within the vocabulary; the most frequent others."""
    outside: Counter[str] = Counter()
    counted = 0
    for text in texts:
        tokens = WORD.findall(text)
        for token in tokens:
            word = token.lower()
            if vocabulary.knows(word):
                counted += 1
            elif not token[0].isupper():
                counted += 1
                outside[word] += 1
    return {
        "share": 1 - sum(outside.values()) / counted if counted else 0.0,
        "top_outside": [w for w, _ in outside.most_common(20)],
    }


def uses_word(text: str, required: str) -> bool:
    """Whether `text` uses `required`: a word in any inflection, or a phrase as written."""
    if " " in required.strip():
        return required.strip().lower() in text.lower()
    lemmas = {c for word in set(words_of(text)) for c in lemma_candidates(word)}
    return bool(set(lemma_candidates(required.strip().lower())) & lemmas)


def required_words_used(texts: Sequence[str], required: Sequence[Sequence[str]]) -> dict[str, float] | None:
    """For each text its required words: the share of texts using all of them and of all words used.
    Texts with no required words do not count; None when no text has any."""
    if len(texts) != len(required):
        raise ValueError(f"{len(required)} required-word lists for {len(texts)} texts")
    all_used = used = asked = with_words = 0
    for text, words in zip(texts, required):
        if not words:
            continue
        hits = [uses_word(text, w) for w in words]
        with_words += 1
        all_used += all(hits)
        used += sum(hits)
        asked += len(hits)
    if not with_words:
        return None
    return {"texts_using_all": all_used / with_words, "words_used": used / asked, "texts": with_words}


def average_length(texts: Sequence[str]) -> dict[str, float]:
    if not texts:
        return {"words": 0.0, "characters": 0.0}
    return {"words": sum(len(words_of(t)) for t in texts) / len(texts),
            "characters": sum(len(t) for t in texts) / len(texts)}


def json_validity(texts: Sequence[str], schema: dict[str, Any]) -> dict[str, float]:
    """Share of texts that parse as JSON, and share that also match `schema`."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    parsed = valid = 0
    for text in texts:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            continue
        parsed += 1
        valid += validator.is_valid(value)
    n = len(texts)
    return {"parses": parsed / n if n else 0.0, "valid": valid / n if n else 0.0}


def text_metrics(texts: Sequence[str], *, vocabulary: Vocabulary | None = None,
                 required: Sequence[Sequence[str]] | None = None) -> dict[str, Any]:
    """Every metric that applies, for one set of texts (student completions, or the teacher's texts)."""
    result: dict[str, Any] = {
        "texts": len(texts),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "distinct_3": distinct_n(texts, 3),
        "openings": openings(texts),
        "average_length": average_length(texts),
    }
    if vocabulary is not None:
        result["vocabulary_conformance"] = vocabulary_conformance(texts, vocabulary)
    if required is not None and (used := required_words_used(texts, required)) is not None:
        result["required_words"] = used
    return result

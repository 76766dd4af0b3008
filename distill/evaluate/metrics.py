"""Offline text metrics that need no judge: diversity, formulaic openings, conformance, length, JSON validity.

Words are runs of letters and apostrophes, lowercased. A word conforms to a vocabulary when the word or
a plain English base form of it (played -> play, puppies -> puppy, running -> run) is in the list, so a
list of base words does not punish ordinary inflection.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def words_of(text: str) -> list[str]:
    return WORD.findall(text.lower())


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


def base_forms(word: str) -> list[str]:
    """The word and the base forms it may be an inflection of (a few English suffix rules)."""
    forms = [word]
    if word.endswith("'s"):
        word = word[:-2]
        forms.append(word)
    for suffix, replacements in (("ies", ("y",)), ("ied", ("y",)), ("es", ("", "e")), ("s", ("",)),
                                 ("ed", ("", "e")), ("ing", ("", "e")), ("er", ("", "e")), ("est", ("", "e")),
                                 ("ily", ("y",)), ("ly", ("",))):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            stem = word[: -len(suffix)]
            forms += [stem + r for r in replacements]
            if len(stem) > 2 and stem[-1] == stem[-2]:  # stopped -> stop, bigger -> big
                forms.append(stem[:-1])
    return forms


def vocabulary_conformance(texts: Sequence[str], vocabulary: Iterable[str]) -> dict[str, Any]:
    """Share of words (all texts together) within the vocabulary, and the most frequent words outside."""
    allowed = {w.lower() for w in vocabulary}
    outside: Counter[str] = Counter()
    total = 0
    for text in texts:
        for word in words_of(text):
            total += 1
            if not any(form in allowed for form in base_forms(word)):
                outside[word] += 1
    return {
        "share": 1 - sum(outside.values()) / total if total else 0.0,
        "top_outside": [w for w, _ in outside.most_common(20)],
    }


def uses_word(text_words: list[str], required: str) -> bool:
    """Whether the text uses `required`: a word in any inflection, or a phrase word for word."""
    wanted = words_of(required)
    if len(wanted) > 1:
        return f" {' '.join(wanted)} " in f" {' '.join(text_words)} "
    return not wanted or any(wanted[0] in base_forms(w) for w in text_words)


def required_words_used(texts: Sequence[str], required: Sequence[Sequence[str]]) -> dict[str, float]:
    """For each text its required words (any inflection counts): the share of texts using all of them
    and the share of all required words used."""
    if len(texts) != len(required):
        raise ValueError(f"{len(required)} required-word lists for {len(texts)} texts")
    all_used = 0
    used = asked = 0
    for text, words in zip(texts, required):
        text_words = words_of(text)
        hits = [uses_word(text_words, w) for w in words]
        all_used += all(hits)
        used += sum(hits)
        asked += len(hits)
    return {"texts_using_all": all_used / len(texts) if texts else 0.0,
            "words_used": used / asked if asked else 0.0}


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


def text_metrics(texts: Sequence[str], *, vocabulary: Iterable[str] | None = None,
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
    if required is not None:
        result["required_words"] = required_words_used(texts, required)
    return result

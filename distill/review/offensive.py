"""Stage 7a: insults and harassment, scored by a trained model that ships inside a package.

`alt-profanity-check` is a linear SVM over word TF-IDF, trained on ~200k human-labelled comments, with
sigmoid calibration (five folds, averaged). It needs no download. An insult is a sentence-level thing
(a long story with one cruel line is still a problem), so sentences are scored one by one and the worst
is reported, on its span, when its probability reaches the policy's threshold. The lexicons keep the
category-specific word rules (violence, adult themes) that the model does not know about.

Calling the package costs ~8 ms of scikit-learn overhead per call, far over the cheap chain's budget,
so the same arithmetic is done here from the fitted model's own tables (the vectorizer's vocabulary and
idf; each fold's weights, intercept and calibration); `test_review_offensive` checks it against the
package's `predict_prob`. Only sentences holding one of the model's trigger words are scored. Which
words trigger depends on the threshold (`TRIGGER_WEIGHTS`): on the 2 MiB TinyStories sample (~20k
sentences) and a set of insults, every sentence scoring >= 0.95 holds a word weighing >= 1.5 in every
fold (~200 words), and every one scoring >= 0.85 a word weighing >= 1.2 (~280 words, "mom" among them);
below 0.85 every sentence is scored. Most records hold no trigger and cost one set intersection.

Words that name a group of people ("gay", "jew", "black") weigh heavily in the model, which learned
them from comments where they stood next to abuse: "Gay" alone scores 98%. The policy's neutral terms
(`safety/vocabulary/identity_terms.txt`) are taken out of the tables, so a sentence is scored as if they
were absent and an insult aimed at a group is still caught by its insulting words.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache

from distill.review.text_checks import finding
from distill.review.verdict import Finding

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")
TRIGGER_WEIGHTS = ((0.95, 1.5), (0.85, 1.2))
_SELF_DIRECTED = re.compile(r"^\W*(?:i'm|i am|i was|i feel|i look|i felt|call me)\b")
_AIMED = re.compile(r"\b(?:you|your|you're|u|ur|they|them|he|she|his|her|those|these)\b")  # (lowest threshold, least weight in every fold) pairs
_ADDRESSED = re.compile(r"\b(?:you|your|yours|yourself|you're|youre|ya|u|ur)\b")


@dataclass(frozen=True)
class OffensiveModel:
    """The fitted model as plain tables: word -> (idf, one weight per fold); per fold the intercept
    and the sigmoid calibration's (a, b)."""

    table: dict[str, tuple[float, tuple[float, ...]]]
    intercepts: tuple[float, ...]
    calibration: tuple[tuple[float, float], ...]
    token: re.Pattern[str]
    _triggers: dict[float, frozenset[str] | None] = field(default_factory=dict, compare=False, repr=False)

    def without(self, words: frozenset[str]) -> OffensiveModel:
        """The same model scoring `words` as if they were not there."""
        return replace(self, table={w: entry for w, entry in self.table.items() if w not in words}, _triggers={})

    def triggers(self, threshold: float) -> frozenset[str] | None:
        """Words at least one of which every sentence scoring `threshold` holds; None: score them all."""
        if threshold not in self._triggers:
            self._triggers[threshold] = _trigger_words(self.table, threshold)
        return self._triggers[threshold]

    def probability(self, text: str) -> float:
        """P(offensive) for `text` scored as one document, as `profanity_check.predict_prob` gives it."""
        folds = len(self.intercepts)
        sums, norm = [0.0] * folds, 0.0
        table = self.table
        for word, count in Counter(self.token.findall(text.lower())).items():
            entry = table.get(word)
            if entry is None:
                continue
            value = count * entry[0]
            norm += value * value
            sums = [total + value * weight for total, weight in zip(sums, entry[1])]
        norm = math.sqrt(norm) or 1.0
        total = 0.0
        for k in range(folds):
            a, b = self.calibration[k]
            total += 1 / (1 + math.exp(min(700.0, a * (sums[k] / norm + self.intercepts[k]) + b)))
        return total / folds


@lru_cache(maxsize=1)
def load_model() -> OffensiveModel:
    """The package's fitted vectorizer and calibrated SVM, unpacked once per process."""
    import numpy as np
    from profanity_check import profanity_check as package

    vectorizer, model = package.vectorizer, package.model
    folds = model.calibrated_classifiers_
    weights = np.stack([np.asarray(f.estimator.coef_).ravel() for f in folds], axis=1)  # (features, folds)
    idf = vectorizer.idf_
    table = {word: (float(idf[i]), tuple(float(w) for w in weights[i])) for word, i in vectorizer.vocabulary_.items()}
    intercepts = tuple(float(np.ravel(f.estimator.intercept_)[0]) for f in folds)
    calibration = tuple((float(f.calibrators[0].a_), float(f.calibrators[0].b_)) for f in folds)
    return OffensiveModel(table, intercepts, calibration, re.compile(vectorizer.token_pattern))


def _trigger_words(table: dict[str, tuple[float, tuple[float, ...]]], threshold: float) -> frozenset[str] | None:
    least = next((weight for lowest, weight in TRIGGER_WEIGHTS if threshold >= lowest), None)
    if least is None:
        return None
    # Fragments under three letters ("sh", "ck", "ho") weigh heavily in the package's model but stand
    # mostly in garbled text (an undertrained student's probe completions), where one of them alone
    # scores a sentence 0.85; they never trigger a score by themselves. Masked swear words are the
    # profanity lexicon's job.
    return frozenset(word for word, (_, weights) in table.items()
                     if min(weights) >= least and len(word) >= 3)


def scan_offensive(text: str, words: list[str], model: OffensiveModel, threshold: float,
                   addressed_only: bool = False) -> list[Finding]:
    """One finding on the worst sentence scoring at least `threshold`, or none. `words` are the
    text's lower-cased words (the chain splits once for all stages); `addressed_only`: only sentences
    that address someone are scored."""
    triggers = model.triggers(threshold)
    present = triggers.intersection(words) if triggers is not None else None
    if present is not None and not present:
        return []
    worst, span = 0.0, (0, 0)
    for match in _SENTENCE.finditer(text):
        sentence = match.group()
        lowered = sentence.lower()
        if present is not None and not any(word in lowered for word in present):  # a substring test; the model decides
            continue
        if _SELF_DIRECTED.search(lowered) and not _AIMED.search(lowered):
            continue  # "I'm such an idiot, I left my keys in the fridge": about the speaker, aimed at no one
        if addressed_only and not _ADDRESSED.search(lowered):
            continue
        score = model.probability(sentence)
        if score > worst:
            worst, span = score, match.span()
    if worst < threshold:
        return []
    start, end = span
    while start < end and text[start].isspace():
        start += 1
    return [finding("offensive", "offensive.insult", (start, end), f"{worst:.0%} offensive: {text[start:end][:120]!r}", "[...]")]

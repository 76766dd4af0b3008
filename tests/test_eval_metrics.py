import pytest

from distill.evaluate.metrics import (
    average_length,
    distinct_n,
    json_validity,
    openings,
    required_words_used,
    text_metrics,
    vocabulary_conformance,
)
from distill.review.conformance import Vocabulary


def test_distinct_n():
    assert distinct_n(["the cat the cat"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["the cat the cat"], 2) == pytest.approx(2 / 3)  # "the cat" twice, "cat the" once
    assert distinct_n(["a b", "c d"], 2) == 1.0
    assert distinct_n([""], 2) == 0.0


def test_openings():
    texts = ["Once upon a time, a cat.", "Once upon a time there was", "One day, Tom ran.", "Lily sat down."]
    result = openings(texts)
    assert result["repeated_share"] == 0.5
    assert result["top"][0] == {"opening": "once upon a", "share": 0.5}


def test_vocabulary_conformance_counts_inflections_and_skips_names():
    vocabulary = Vocabulary(frozenset(["the", "cat", "play", "happy", "with", "and", "a"]))
    result = vocabulary_conformance(["The cats played happily with Zorblax and a xylophone."], vocabulary)
    assert result["share"] == pytest.approx(7 / 8)  # all but "xylophone"; "Zorblax" is a name
    assert result["top_outside"] == ["xylophone"]


def test_required_words_used():
    texts = ["Tom jumped over the shiny rock.", "Lily was sad."]
    result = required_words_used(texts + ["No words asked of this one."], [["jump", "rock", "shiny"], ["happy", "sad"], []])
    assert result["texts_using_all"] == 0.5 and result["texts"] == 2
    assert result["words_used"] == pytest.approx(4 / 5)
    assert required_words_used(["he went to the big park"], [["big park"]])["texts_using_all"] == 1.0
    assert required_words_used(["a story"], [[]]) is None


def test_average_length_and_json_validity():
    assert average_length(["one two", "three"]) == {"words": 1.5, "characters": 6.0}
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
    assert json_validity(['{"a": 1}', '{"a": "x"}', "not json", "[1]"], schema) == {"parses": 0.75, "valid": 0.25}


def test_text_metrics_includes_what_applies():
    result = text_metrics(["a cat sat"], vocabulary=Vocabulary(frozenset(["a", "cat"])), required=[["cat"]])
    assert set(result) >= {"distinct_2", "openings", "average_length", "vocabulary_conformance", "required_words"}
    assert "vocabulary_conformance" not in text_metrics(["a cat"])

"""Task conformance: vocabulary share with inflections, names, required words, length."""

from __future__ import annotations

from distill.paths import data_path
from distill.review.conformance import WORD, TaskConformance, Vocabulary, check_conformance, lemma_candidates, load_vocabulary


def check(text, task, required=()):
    tokens = WORD.findall(text)
    return check_conformance(text, tokens, [t.lower() for t in tokens], task, list(required))


def test_inflections_map_back_to_listed_base_words():
    vocabulary = Vocabulary(frozenset({"play", "happy", "run", "big", "try", "gentle", "can"}))
    for word in ("plays", "played", "playing", "happily", "happier", "running", "bigger", "tried", "gently", "can't"):
        assert vocabulary.knows(word), word
    assert not vocabulary.knows("photosynthesis")
    assert "run" in lemma_candidates("running")


def test_the_shipped_vocabulary_covers_a_simple_story():
    vocabulary = load_vocabulary(data_path("safety") / "vocabulary" / "children_simple.txt")
    assert len(vocabulary.words) > 1500
    story = "Once upon a time, a little girl named Lily played with her dog. They were very happy together."
    found, stats = check(story, TaskConformance(vocabulary=vocabulary))
    assert found == [] and stats["off_vocab_share"] == 0.0  # Lily is a name, not counted


def test_off_vocabulary_required_words_and_length():
    task = TaskConformance(vocabulary=Vocabulary(frozenset({"the", "dog", "ran", "a", "to", "park"})), max_off_vocab_share=0.1,
                           min_words=5, max_words=8)
    found, _ = check("The dog ran to the ontological park", task)
    assert [f.code for f in found] == ["conformance.off_vocabulary"] and "ontological" in found[0].detail
    assert found[0].span == (19, 30)
    found, _ = check("The dog ran.", task, required=["jump"])
    assert [f.code for f in found] == ["conformance.too_short", "conformance.missing_word"]
    found, _ = check("The dog jumped to a park", TaskConformance(), required=["jump", "dog"])
    assert found == []

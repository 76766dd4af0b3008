"""The offensive-language detector, text folding before the detectors, and the meaning-level dedup."""

from __future__ import annotations

import json

import pytest
from profanity_check import predict_prob

from distill.review.chain import Chain
from distill.review.dedup import find_duplicates, semantic_duplicates
from distill.review.folding import fold
from distill.review.offensive import load_model
from distill.review.policy import Policy, load_policy
from test_review_stage import make_run

SENTENCES = ["You are a stupid idiot, go to hell.", "I hate broccoli.", "The knight rode home.", "Shut up, you moron!!",
             "the the the", "", "Ünïcödé wörds only", "Nobody likes you, loser, just go away and die."]


def test_the_model_tables_give_exactly_what_the_package_gives() -> None:
    model = load_model()
    ours = [model.probability(s) for s in SENTENCES]
    assert ours == pytest.approx(list(predict_prob(SENTENCES)), abs=1e-9)


def test_an_insult_passes_no_policy_and_is_reported_on_its_sentence() -> None:
    text = "We met at nine. You are a stupid idiot, go to hell. Then we left."
    for name in ("general", "children"):
        verdict = Chain(load_policy(name)).check(text)
        [insult] = [f for f in verdict.reasons if f.code == "offensive.insult"]
        assert text[slice(*insult.span)] == "You are a stupid idiot, go to hell."
        assert insult.action == "flag" and verdict.decision != "pass"


def test_the_threshold_is_the_policys() -> None:
    text = "The stupid dog chased its tail, and everyone laughed at the silly game."  # scores ~0.94
    assert not [f for f in Chain(load_policy("general")).check(text).reasons if f.code == "offensive.insult"]
    strict = Policy.model_validate({**load_policy("general").model_dump(), "offensive": {"threshold": 0.9}})
    assert [f.code for f in Chain(strict).check(text).reasons] == ["offensive.insult"]
    off = Policy.model_validate({**load_policy("general").model_dump(), "offensive": {"enabled": False}})
    assert [f.code for f in Chain(off).check("You are a stupid idiot, go to hell.").reasons] == ["toxicity.insult"]
    off = Policy.model_validate({**off.model_dump(), "toxicity": {"enabled": False, "patterns": "toxicity"}})
    assert Chain(off).check("You are a stupid idiot, go to hell.").reasons == []


def test_folding_maps_findings_back_to_the_original_span() -> None:
    text = "Mail \uff42\uff4f\uff42\uff20\uff4d\uff41\uff49\uff4c\uff42\uff4f\uff58\uff0e\uff4f\uff52\uff47 or j\u043ehn@mailbox.org now."
    folded = fold(text)
    assert folded.text == "Mail bob@mailbox.org or john@mailbox.org now."
    verdict = Chain(load_policy("general")).check(text)
    emails = [text[slice(*f.span)] for f in verdict.reasons if f.code == "pii.email"]
    assert emails == ["\uff42\uff4f\uff42\uff20\uff4d\uff41\uff49\uff4c\uff42\uff4f\uff58\uff0e\uff4f\uff52\uff47", "j\u043ehn@mailbox.org"]
    assert "[EMAIL]" in verdict.redacted_text and "\uff20" not in verdict.redacted_text


@pytest.mark.parametrize("text, code", [
    ("Write to anna [at] mailbox (dot) org today.", "pii.email_obfuscated"),
    ("Write to anna @ mailbox . org today.", "pii.email_obfuscated"),
    ("Write to a n n a @ m a i l b o x . o r g today.", "pii.email_obfuscated"),
    ("Call me on four one five five five five two six seven one.", "pii.phone_obfuscated"),
    ("Phone 415 - 555 - 2671 after lunch.", "pii.phone_obfuscated"),
    ("Our office is at 350 Fifth Avenue, New York.", "pii.street_address"),
])
def test_obfuscated_personal_data_is_found(text: str, code: str) -> None:
    assert code in [f.code for f in Chain(load_policy("general")).check(text).reasons]


def test_reworded_copies_are_caught_by_the_semantic_dedup_only() -> None:
    texts = ["Paris is the capital of France and is known for the Eiffel Tower, its museums and its cafes.",
             "Berlin is the capital of Germany; its parliament meets in the Reichstag building by the river.",
             "The capital of France is Paris, famous for its cafes, its museums and the Eiffel Tower."]
    assert find_duplicates([0, 1, 2], texts) == []  # MinHash over word 5-grams misses a rewording
    [duplicate] = find_duplicates([0, 1, 2], texts, semantic_threshold=0.7)
    assert (duplicate.record, duplicate.of, duplicate.kind) == (2, 0, "semantic") and duplicate.similarity >= 0.7
    assert semantic_duplicates([0], texts[:1]) == [] and semantic_duplicates([0, 1], ["the a", "an the"]) == []


def test_the_review_report_says_which_dedup_fired(tmp_path) -> None:
    from distill.review import run_review

    texts = ["Paris is the capital of France and is known for the Eiffel Tower, its museums and its cafes.",
             "The capital of France is Paris, famous for its cafes, its museums and the Eiffel Tower.",
             "Paris is the capital of France and is known for the Eiffel Tower, its museums and its cafes."]
    summary = run_review(make_run(tmp_path, texts), policy=load_policy("general"), progress=False)
    assert summary.duplicates_by_kind == {"semantic": 1, "exact": 1}
    corpus = json.loads((tmp_path / "review" / "corpus.json").read_text())
    details = {item["id"]: item["finding"]["detail"] for item in corpus["findings"]}
    assert details == {1: "says the same as record 0 in other words (78% TF-IDF cosine)", 2: "same text as record 0"}
    report = (tmp_path / "review" / "report.html").read_text()
    assert "Duplicates, by the dedup that found them" in report and "TF-IDF cosine" in report


def test_trigger_words_skip_only_sentences_that_cannot_reach_the_threshold() -> None:
    from distill.review.conformance import WORD
    from distill.review.offensive import _SENTENCE, scan_offensive
    from test_review_planted import planted

    model = load_model()
    texts = [r["text"] for r in planted() if "text" in r] + SENTENCES
    for threshold in (0.95, 0.85):
        for text in texts:
            words = " ".join(WORD.findall(text)).lower().split()
            every = max((model.probability(m.group()) for m in _SENTENCE.finditer(text)), default=0.0)
            assert bool(scan_offensive(text, words, model, threshold)) == (every >= threshold), text


def test_a_mention_of_a_group_is_not_an_insult_but_an_insult_aimed_at_one_still_is() -> None:
    mentions = ["Gay", "The gay couple adopted a dog.", "He is a homosexual.", "She is queer and proud."]
    assert max(load_model().probability(text) for text in mentions) > 0.95  # what the model says on its own
    insult = "You stupid gay idiot, go to hell."
    for name in ("general", "children"):
        chain = Chain(load_policy(name))
        assert [text for text in mentions if any(f.code == "offensive.insult" for f in chain.check(text).reasons)] == []
        assert any(f.code == "offensive.insult" for f in chain.check(insult).reasons)
    raw = Policy.model_validate({**load_policy("general").model_dump(), "offensive": {"neutral_terms": None}})
    assert any(f.code == "offensive.insult" for f in Chain(raw).check("Gay").reasons)


def test_the_neutral_terms_are_a_policy_file_and_a_missing_one_is_located(tmp_path) -> None:
    from distill.errors import SpecError
    from distill.paths import data_path

    shipped = (data_path("safety") / "general.yaml").read_text(encoding="utf-8")
    policy = tmp_path / "policy.yaml"
    policy.write_text(shipped.replace("offensive:\n", "offensive:\n  neutral_terms: no_such_list\n", 1), encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        load_policy(policy)
    assert "no_such_list" in str(caught.value)


def test_under_general_only_sentences_addressing_someone_are_scored() -> None:
    general = Chain(load_policy("general"))
    assert not [f for f in general.check('"These prunes are stupid!" Tim said. Then she shut the drawer tightly.').reasons]
    assert [f.code for f in general.check("Honestly, you are so stupid and ugly.").reasons if f.stage == "offensive"] == ["offensive.insult"]

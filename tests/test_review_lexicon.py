"""Lexicons: whole words with common endings; the policy decides the action."""

from __future__ import annotations

from distill.paths import data_path
from distill.review.chain import check_texts
from distill.review.lexicon import index_lexicons, load_lexicon, scan_lexicons
from distill.review.policy import load_policy


def test_whole_words_with_endings_and_phrases():
    lexicon = load_lexicon(data_path("safety") / "lexicons" / "self_harm.yaml")
    text = "He said he would kill himself; suicides are rising."
    words = text.lower().replace(";", "").replace(".", "").split()
    found = scan_lexicons(text, text.lower(), words, index_lexicons([lexicon]))
    assert [text[s:e] for s, e in (f.span for f in found)] == ["kill himself", "suicides"]
    assert {f.category for f in found} == {"S11"}


def test_children_flag_violence_for_a_human_and_reject_profanity():
    children = load_policy("children")
    story = ("Tom was a little boy who liked to play in his room. One day he looked under the bed and found {}. "
             "He played with it all day long. When his mom came in, she smiled at him, and they went to the park together.")
    violence, swearing = check_texts([story.format("a toy gun"), story.format("a shitty old box")], children)
    assert [f.code for f in violence.reasons] == ["lexicon.violence"] and violence.decision == "flag"
    assert "lexicon.profanity" in [f.code for f in swearing.reasons] and swearing.decision == "reject"


def test_no_substring_matches():
    (verdict,) = check_texts(["The class went to Scunthorpe and saw the grape harvest and a cocktail party."], load_policy("general"))
    assert verdict.reasons == []

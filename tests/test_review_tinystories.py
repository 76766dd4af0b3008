"""The real TinyStories sample through the `children` policy: ordinary stories pass; what is flagged
is flagged for a reason a person would agree with. Skips when the shared sample is absent."""

from __future__ import annotations

from collections import Counter

from distill.review.chain import Chain
from distill.review.dedup import find_duplicates, over_represented_openings
from distill.review.policy import load_policy


def stories(path) -> list[str]:
    parts = path.read_text(encoding="utf-8").split("<|endoftext|>")
    return [p.strip() for p in parts[:-1]]  # the last one is cut off by the 2 MiB sample


def test_ordinary_stories_pass_the_children_policy(tinystories_sample, capsys):
    texts = stories(tinystories_sample)
    assert len(texts) == 2316
    chain = Chain(load_policy("children"))
    verdicts = [chain.check(t) for t in texts]
    decisions = Counter(v.decision for v in verdicts)
    reasons = Counter(code for v in verdicts for code in set(v.codes))
    with capsys.disabled():
        print(f"\nTinyStories sample, children policy: {dict(decisions)}; reasons (records): {dict(reasons)}")
    assert decisions["pass"] / len(texts) > 0.97
    assert decisions["reject"] / len(texts) < 0.01
    # every rejection has a reason that is not just a hard word or two
    assert set(reasons) <= {"lexicon.violence", "lexicon.substances", "quality.truncated", "conformance.off_vocabulary",
                            "conformance.too_long", "lexicon.adult", "lexicon.profanity", "normalisation.mojibake",
                            "offensive.insult", "toxicity.insult", "toxicity.threat"}
    # name-calling and threats in a story ("Stupid boy!", "or we will hurt you!"), flagged for a person
    assert not any(f.code.startswith(("pii.", "secrets.", "injection.")) for v in verdicts for f in v.reasons)


def test_openings_and_duplicates_of_the_sample(tinystories_sample):
    texts = stories(tinystories_sample)
    top = over_represented_openings(texts, words=4, max_share=0.1)
    assert top[0]["opening"] == "once upon a time" and 0.5 < top[0]["share"] < 0.6 and top[0]["over"]
    assert find_duplicates(list(range(len(texts))), texts) == []

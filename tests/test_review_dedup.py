"""Dedup: exact and near duplicates say which record they repeat; openings are counted."""

from __future__ import annotations

from distill.review.dedup import Signer, find_duplicates, over_represented_openings

STORY = ("Once upon a time there was a small brown rabbit who lived under an old oak tree at the edge of a quiet "
         "meadow. Every morning he hopped to the stream to drink and to look at the fish, and every evening he "
         "came home to tell his mother what he had seen that day by the water.")


def test_exact_and_near_duplicates_point_at_the_kept_record():
    near = STORY.replace("small brown", "little brown")
    other = "A completely different text about trains, stations, timetables and the people who travel on them each day."
    found = find_duplicates([10, 11, 12, 13], [STORY, "  " + STORY.upper() + " ", near, other])
    assert [(d.record, d.of, d.kind) for d in found] == [(11, 10, "exact"), (12, 10, "near")]
    assert 0.8 <= found[1].similarity < 1


def test_signatures_estimate_jaccard():
    signer = Signer(num_perm=256)
    a, b = signer.sign([STORY, STORY.replace("rabbit", "hare")])
    assert 0.5 < (a == b).mean() < 0.95


def test_over_represented_openings():
    texts = ["Once upon a time, a cat." ] * 6 + ["One day a dog ran."] * 3 + ["Lily smiled."]
    top = over_represented_openings(texts, words=4, max_share=0.5)
    assert top[0] == {"opening": "once upon a time", "count": 6, "share": 0.6, "over": True}
    assert top[1]["over"] is False

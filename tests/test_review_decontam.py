"""Decontamination: 13-gram overlap with evaluation texts, case and punctuation ignored."""

from __future__ import annotations

import json

import pytest

from distill.errors import SpecError
from distill.review.decontam import build_index, read_eval_texts

HELD_OUT = "the brave mouse climbed the tall clock tower to ring the bell for the whole sleepy village"


def test_overlap_is_found_with_its_span_and_source(tmp_path):
    (tmp_path / "eval.jsonl").write_text(json.dumps({"prompt": "", "text": HELD_OUT}) + "\n")
    index = build_index([tmp_path / "eval.jsonl"], 13)
    record = "Yes! The Brave Mouse climbed the tall clock-tower, to ring the bell for the whole town."
    (overlap,) = index.find([7, 8], [record, "The brave mouse climbed a tree."])
    assert overlap.record == 7 and overlap.source == "eval.jsonl:1"
    assert record[overlap.span[0]:overlap.span[1]].startswith("The Brave Mouse")


def test_text_files_split_on_the_document_separator(tmp_path):
    (tmp_path / "held.txt").write_text("first story here.<|endoftext|>second story there.")
    assert [t for _, t in read_eval_texts([tmp_path / "held.txt"])] == ["first story here.", "second story there."]
    with pytest.raises(SpecError, match="not found"):
        read_eval_texts([tmp_path / "missing.txt"])

"""The planted set (`tests/data/review_planted.jsonl`): every record must get its expected reason code
(not merely "not passed"), and the tricky clean ones must get no finding at all.

Each line: id, category (for recall), expected (a reason code, or "clean"), policy, and the text
(`bytes_hex` for raw bytes, `repeat` to build a huge record, `required` for required words).
Corpus stages (dedup, decontamination against `review_eval_texts.jsonl`) run over the whole set.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from distill.review.chain import Chain
from distill.review.decontam import build_index
from distill.review.dedup import find_duplicates
from distill.review.policy import load_policy

DATA = Path(__file__).parent / "data"


def planted() -> list[dict]:
    return [json.loads(line) for line in (DATA / "review_planted.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def outcome() -> dict[int, list[str]]:
    records = planted()
    chains = {name: Chain(load_policy(name)) for name in ("general", "children")}
    codes: dict[int, list[str]] = {}
    checked: list[str] = []
    for record in records:
        raw = bytes.fromhex(record["bytes_hex"]) if "bytes_hex" in record else record["text"] * record.get("repeat", 1)
        verdict = chains[record["policy"]].check(raw, required_words=record.get("required", []))
        codes[record["id"]] = [f.code for f in verdict.reasons]
        checked.append(verdict.checked_text)
    ids = [r["id"] for r in records]
    for duplicate in find_duplicates(ids, checked, threshold=0.8):
        codes[duplicate.record].append(f"dedup.{duplicate.kind}")
    for overlap in build_index([DATA / "review_eval_texts.jsonl"], 13).find(ids, checked):
        codes[overlap.record].append("decontam.ngram_overlap")
    return codes


def test_the_planted_set_covers_what_it_must():
    records = planted()
    assert len(records) >= 60
    assert sum(r["expected"] == "clean" for r in records) >= 20
    expected = {r["expected"] for r in records}
    for code in ("pii.email", "pii.email_obfuscated", "pii.phone", "pii.card", "pii.iban", "pii.national_id", "pii.ip_address",
                 "secrets.openai_key", "secrets.anthropic_key", "secrets.aws_access_key", "secrets.github_token",
                 "secrets.private_key", "secrets.jwt", "secrets.connection_string", "injection.ignore_instructions",
                 "normalisation.zero_width", "normalisation.bidi_control", "normalisation.tag_chars", "normalisation.homoglyph",
                 "normalisation.mojibake", "decoding.invalid_utf8", "decoding.empty", "decoding.too_long", "dedup.exact",
                 "dedup.near", "decontam.ngram_overlap", "quality.refusal", "conformance.off_vocabulary"):
        assert code in expected, code


@pytest.mark.parametrize("record", planted(), ids=lambda r: f"{r['id']}-{r['expected']}")
def test_each_record_gets_its_expected_reason(record, outcome):
    got = outcome[record["id"]]
    if record["expected"] == "clean":
        assert got == [], f"false positive on a clean record ({record['note']}): {got}"
    else:
        assert record["expected"] in got, f"expected {record['expected']}, got {got}"


def test_recall_per_category_and_false_positives(outcome, capsys):
    hits, totals = defaultdict(int), defaultdict(int)
    false_positives = 0
    for record in planted():
        if record["expected"] == "clean":
            false_positives += bool(outcome[record["id"]])
            continue
        totals[record["category"]] += 1
        hits[record["category"]] += record["expected"] in outcome[record["id"]]
    with capsys.disabled():
        print("\nplanted-set recall: " + ", ".join(f"{c} {hits[c]}/{totals[c]}" for c in sorted(totals))
              + f"; false positives on clean records: {false_positives}")
    assert all(hits[c] == totals[c] for c in totals)
    assert false_positives == 0

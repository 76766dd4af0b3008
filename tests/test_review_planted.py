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


def check_all(policy_of) -> dict[int, list[str]]:
    """Reason codes per record: each record under `policy_of(record)`, then the corpus stages."""
    records = planted()
    chains = {name: Chain(load_policy(name)) for name in POLICIES}
    codes: dict[int, list[str]] = {}
    checked: list[str] = []
    for record in records:
        raw = bytes.fromhex(record["bytes_hex"]) if "bytes_hex" in record else record["text"] * record.get("repeat", 1)
        verdict = chains[policy_of(record)].check(raw, required_words=record.get("required", []))
        codes[record["id"]] = [f.code for f in verdict.reasons]
        checked.append(verdict.checked_text)
    ids = [r["id"] for r in records]
    for duplicate in find_duplicates(ids, checked, threshold=0.8, semantic_threshold=0.7):
        codes[duplicate.record].append(f"dedup.{duplicate.kind}")
    for overlap in build_index([DATA / "review_eval_texts.jsonl"], 13).find(ids, checked):
        codes[overlap.record].append("decontam.ngram_overlap")
    return codes


POLICIES = ("general", "children")
# Under the policy a record was not written for, only the detectors count: size limits, quality and
# conformance thresholds and the lexicons each names are what tells the policies apart.
DETECTOR_STAGES = ("decoding.", "normalisation.", "pii.", "secrets.", "injection.", "offensive.", "dedup.", "decontam.")
SIZE_CODES = ("decoding.too_long", "decoding.absurd_token")


def detector_codes(codes: list[str]) -> list[str]:
    return [c for c in codes if c.startswith(DETECTOR_STAGES) and c not in SIZE_CODES]


@pytest.fixture(scope="module")
def outcome() -> dict[int, list[str]]:
    return check_all(lambda record: record["policy"])


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict[int, list[str]]]:
    """Every record under each shipped policy."""
    return {name: check_all(lambda record, name=name: name) for name in POLICIES}


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
                 "dedup.near", "decontam.ngram_overlap", "quality.refusal", "conformance.off_vocabulary",
                 "pii.phone_obfuscated", "pii.street_address", "offensive.insult", "dedup.semantic"):
        assert code in expected, code


@pytest.mark.parametrize("record", planted(), ids=lambda r: f"{r['id']}-{r['expected']}")
def test_each_record_gets_its_expected_reason(record, outcome):
    got = outcome[record["id"]]
    if record["expected"] == "clean":
        assert got == [], f"false positive on a clean record ({record['note']}): {got}"
    else:
        assert record["expected"] in got, f"expected {record['expected']}, got {got}"


def test_recall_per_category_and_false_positives_for_both_policies(outcome, outcomes, capsys):
    """Recall of each category and false positives on the clean records, under each shipped policy.
    A record scored under the policy it was not written for counts only its detector findings."""
    lines = []
    for name in POLICIES:
        hits, totals = defaultdict(int), defaultdict(int)
        false_positives, clean = 0, 0
        for record in planted():
            native = record["policy"] == name
            got = outcome[record["id"]] if native else detector_codes(outcomes[name][record["id"]])
            if record["expected"] == "clean":
                clean += 1
                false_positives += bool(got)
                continue
            if not native and not detector_codes([record["expected"]]):
                continue
            totals[record["category"]] += 1
            hits[record["category"]] += record["expected"] in got
        lines.append(f"{name}: recall " + ", ".join(f"{c} {hits[c]}/{totals[c]}" for c in sorted(totals))
                     + f"; false positives on clean records: {false_positives}/{clean}")
        assert all(hits[c] == totals[c] for c in totals), lines[-1]
        assert false_positives == 0, lines[-1]
    with capsys.disabled():
        print("\nplanted-set " + "\nplanted-set ".join(lines))

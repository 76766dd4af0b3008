"""PII: checksums, placeholders, and the redaction a `redact` policy produces."""

from __future__ import annotations

from distill.review.chain import check_texts
from distill.review.pii import iban_valid, luhn_valid
from distill.review.policy import load_policy


def test_checksums():
    assert luhn_valid("4539148803436467") and not luhn_valid("4539148803436468")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB83 WEST 1234 5698 7654 32")


def test_general_policy_redacts_contact_details_and_keeps_the_record():
    (verdict,) = check_texts(["Email anna.berg@posteo.de or call (312) 448-9021 after lunch, please."], load_policy("general"))
    assert verdict.decision == "redact"
    assert verdict.redacted_text == "Email [EMAIL] or call [PHONE] after lunch, please."
    assert [(f.code, f.span) for f in verdict.reasons] == [("pii.email", (6, 25)), ("pii.phone", (34, 48))]


def test_children_policy_rejects_the_same_record():
    (verdict,) = check_texts(["Email anna.berg@posteo.de or call (312) 448-9021."], load_policy("children"))
    assert verdict.decision == "reject"


def test_placeholders_are_not_personal_data():
    texts = ["Write to help@example.com or admin@test for access.", "The gateway is 192.168.0.1 and DNS is 10.1.1.1.",
             "Version 3.10.2.1 fixed it.", "Order 4000 1234 5678 9010 ships soon."]
    assert [v.reasons for v in check_texts(texts, load_policy("general"))] == [[], [], [], []]

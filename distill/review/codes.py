"""The catalogue of reason codes the built-in checks emit: code -> (category, what it means).

Pattern files under `safety/patterns/` and lexicons under `safety/lexicons/` add their own codes (they
declare them next to each pattern); the judge adds `judge.<category>`. A policy's `actions` may name a
code, a code prefix (`pii`, `normalisation`), or a category (`S10`), and `load_policy` rejects names
that match nothing, so a typo cannot silently switch a check off.
"""

from __future__ import annotations

# MLCommons hazard taxonomy, as Llama Guard 3 numbers it.
HAZARD_CATEGORIES: dict[str, str] = {
    "S1": "violent crimes",
    "S2": "non-violent crimes",
    "S3": "sex-related crimes",
    "S4": "child sexual exploitation",
    "S5": "defamation",
    "S6": "specialized advice",
    "S7": "privacy",
    "S8": "intellectual property",
    "S9": "indiscriminate weapons",
    "S10": "hate",
    "S11": "suicide and self-harm",
    "S12": "sexual content",
    "S13": "elections",
    "S14": "code interpreter abuse",
}

OTHER_CATEGORIES: dict[str, str] = {
    "ENCODING": "text damaged or not valid text",
    "UNICODE": "invisible or deceptive characters",
    "QUALITY": "low-quality generation",
    "CONFORMANCE": "does not do what the task spec asks",
    "PII": "personal data",
    "SECRET": "credentials and keys",
    "INJECTION": "instructions aimed at a model that reads the text",
    "PROFANITY": "profanity and insults",
    "SUBSTANCES": "alcohol, drugs, smoking and gambling",
    "DUPLICATE": "repeats another record",
    "CONTAMINATION": "overlaps an evaluation set",
    "JUDGE": "the LLM judge could not give a verdict",
}

CATEGORIES = {**HAZARD_CATEGORIES, **OTHER_CATEGORIES}

CODES: dict[str, tuple[str, str]] = {
    "decoding.invalid_utf8": ("ENCODING", "bytes that are not valid UTF-8 (lone surrogates)"),
    "decoding.replacement_char": ("ENCODING", "U+FFFD: text was decoded lossily somewhere upstream"),
    "decoding.control_chars": ("ENCODING", "C0/C1 control characters other than tab and newline"),
    "decoding.empty": ("ENCODING", "empty or whitespace only"),
    "decoding.too_long": ("ENCODING", "longer than the policy's max_chars"),
    "decoding.absurd_token": ("ENCODING", "a run of non-space characters longer than any word"),
    "normalisation.mojibake": ("ENCODING", "mojibake, repaired with ftfy"),
    "normalisation.zero_width": ("UNICODE", "zero-width characters (removed)"),
    "normalisation.bidi_control": ("UNICODE", "bidirectional control characters (can reorder what a reader sees)"),
    "normalisation.tag_chars": ("UNICODE", "Unicode tag characters (invisible ASCII smuggling)"),
    "normalisation.homoglyph": ("UNICODE", "a word mixing Latin with Cyrillic or Greek look-alikes"),
    "quality.repetition": ("QUALITY", "the same words or lines repeated"),
    "quality.symbol_ratio": ("QUALITY", "too many symbols for prose"),
    "quality.language": ("QUALITY", "not in the expected language"),
    "quality.truncated": ("QUALITY", "stops mid-sentence"),
    "quality.refusal": ("QUALITY", "the teacher refused or talked about itself instead of answering"),
    "conformance.off_vocabulary": ("CONFORMANCE", "too many words outside the allowed vocabulary"),
    "conformance.missing_word": ("CONFORMANCE", "a word the prompt required is missing"),
    "conformance.too_short": ("CONFORMANCE", "fewer words than the task asks"),
    "conformance.too_long": ("CONFORMANCE", "more words than the task asks"),
    "pii.email": ("PII", "an email address"),
    "pii.email_obfuscated": ("PII", "an obfuscated email address (name [at] domain [dot] com, spaced out)"),
    "pii.phone": ("PII", "a phone number"),
    "pii.phone_obfuscated": ("PII", "a phone number written in words or with odd separators"),
    "pii.street_address": ("PII", "a street address (house number, street name)"),
    "pii.card": ("PII", "a payment card number (Luhn-valid)"),
    "pii.iban": ("PII", "an IBAN (checksum-valid)"),
    "pii.national_id": ("PII", "a national identity number"),
    "pii.ip_address": ("PII", "an IP address"),
    "pii.date_of_birth": ("PII", "a date of birth (a date next to born, birthday, DOB)"),
    "offensive.insult": ("PROFANITY", "a sentence the offensive-language model scores as an insult or harassment"),
    "dedup.exact": ("DUPLICATE", "the same text as an earlier record"),
    "dedup.near": ("DUPLICATE", "nearly the same text as an earlier record (MinHash)"),
    "dedup.semantic": ("DUPLICATE", "the same content as an earlier record in other words (TF-IDF cosine)"),
    "decontam.ngram_overlap": ("CONTAMINATION", "shares an n-gram with an evaluation text"),
    "judge.unparseable": ("JUDGE", "the judge's answer was not the JSON verdict asked for"),
    "judge.unknown_code": ("JUDGE", "the judge named a category the policy does not know"),
    "judge.timeout": ("JUDGE", "the judge did not answer in time"),
    "judge.error": ("JUDGE", "the judge's provider failed"),
}

STAGE_NAMES = (
    "decoding", "normalisation", "quality", "conformance", "pii", "secrets", "injection", "toxicity", "offensive", "lexicon",
    "dedup", "decontam", "judge",
)


def describe(code: str) -> str:
    if code in CODES:
        return CODES[code][1]
    if code.startswith("judge.") and code[6:] in CATEGORIES:
        return f"judge: {CATEGORIES[code[6:]]}"
    if code.startswith("lexicon."):
        return f"a word from the {code[8:]} list (safety/lexicons/{code[8:]}.yaml)"
    return ""

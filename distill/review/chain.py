"""The cheap chain: stages 1-7 on one record, every check on every record so all reasons are kept.

    decoding/size -> normalisation -> quality + task conformance -> PII -> secrets -> injection
    -> toxicity -> offensive language -> lexicons

Secrets, injection and toxicity also read every decoded or re-joined reading of the text (base64, hex,
URL escapes, HTML entities, keys split by spaces: `distill.review.decoded`); injection and toxicity also
read the unfolded text, since folding look-alikes to Latin garbles Cyrillic and Greek words.

PII, secrets, injection and the offensive-language model read the folded text (NFKC, no zero-width
characters, look-alike letters as Latin); their findings are mapped back to the original spans.

A `Chain` compiles everything a policy names once (pattern files, lexicons, the vocabulary); `check` is
then a handful of regex scans per record. Stages 8-10 (dedup, decontamination, the judge) look at the
whole corpus or call a model and live in `distill.review.stage`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from distill.review.conformance import WORD, TaskConformance, check_conformance, load_vocabulary
from distill.review.decoded import KEY_PREFIXES, readings
from distill.review.folding import fold
from distill.review.injection import scan_injection
from distill.review.lexicon import index_lexicons, load_lexicon, scan_lexicons
from distill.review.offensive import OffensiveModel, load_model, scan_offensive
from distill.scanning.patterns import Triggers, load_patterns
from distill.scanning.patterns import scan as scan_patterns
from distill.review.pii import PiiSettings, scan_pii
from distill.review.policy import Policy, safety_file
from distill.scanning.secrets import scan_secrets
from distill.review.text_checks import QualitySettings, check_decoding, check_normalisation, check_quality, decode
from distill.review.verdict import Finding, RecordVerdict, apply_redactions, most_severe


def task_from_policy(policy: Policy) -> TaskConformance:
    """The conformance checks a policy asks for (a spec may pass its own `TaskConformance` instead)."""
    section = policy.conformance
    vocabulary = load_vocabulary(safety_file("vocabulary", section.vocabulary, ".txt")) if section.vocabulary else None
    return TaskConformance(
        vocabulary=vocabulary,
        max_off_vocab_share=section.max_off_vocab_share,
        min_words=section.min_words,
        max_words=section.max_words,
        required_variables=tuple(section.required_variables),
    )


def task_for_length(policy: Policy, longest_words: int | None) -> TaskConformance | None:
    """The policy's conformance checks without its minimum length when the spec asks for texts too short
    to reach it comfortably (a cap under twice the minimum): a short clean record is not a defect then.
    None: the policy's own checks apply."""
    least = policy.conformance.min_words
    if longest_words is None or least is None or longest_words >= 2 * least:
        return None
    return dataclasses.replace(task_from_policy(policy), min_words=None)


class Chain:
    """Stages 1-7 compiled for one policy and task."""

    def __init__(self, policy: Policy, task: TaskConformance | None = None):
        self.policy = policy
        self.task = task if task is not None else task_from_policy(policy)
        quality = policy.quality
        self.quality = QualitySettings(quality.max_repeated_ngram_share, quality.max_symbol_ratio, quality.language,
                                       quality.min_function_word_share, quality.check_truncation)
        self.refusals = load_patterns(safety_file("patterns", quality.refusal_patterns, ".yaml")) if quality.refusal_patterns else []
        self.pii = PiiSettings(frozenset(policy.pii.kinds), tuple(policy.pii.phone_regions), frozenset(policy.pii.placeholder_domains))
        self.national_ids = load_patterns(safety_file("patterns", policy.pii.national_id_patterns, ".yaml"))
        self.secrets = load_patterns(safety_file("patterns", policy.secrets.patterns, ".yaml")) if policy.secrets.enabled else []
        self.injections = load_patterns(safety_file("patterns", policy.injection.patterns, ".yaml")) if policy.injection.enabled else []
        self.toxicity = load_patterns(safety_file("patterns", policy.toxicity.patterns, ".yaml")) if policy.toxicity.enabled else []
        self.lexicons = index_lexicons([load_lexicon(safety_file("lexicons", name, ".yaml")) for name in policy.lexicons])
        self.offensive = _offensive_model(policy) if policy.offensive.enabled else None
        self.triggers = Triggers((self.refusals, self.national_ids, self.secrets, self.injections, self.toxicity),
                                 self.lexicons.phrases)
        self._actions: dict[tuple[str, str], str] = {}

    def check(self, text: str | bytes, prompt: str | bytes = "", required_words: Sequence[str] = ()) -> RecordVerdict:
        """Verdict for one record: `text` gets every stage; an instruct `prompt` gets all but quality
        and conformance (it is ours, rendered from templates, but variables can carry anything)."""
        findings, checked_text, stats = self._check_field(text, "text", required_words)
        checked_prompt, prompt_changed = "", False
        if prompt:
            prompt_findings, checked_prompt, _ = self._check_field(prompt, "prompt", ())
            findings += prompt_findings
            prompt_changed = checked_prompt != prompt
        findings = [self._resolve(f) for f in findings]
        redacted_text = apply_redactions(checked_text, findings, "text")
        if redacted_text is None and checked_text != text:
            redacted_text = checked_text
        redacted_prompt = apply_redactions(checked_prompt, findings, "prompt") if prompt else None
        if redacted_prompt is None and prompt_changed:
            redacted_prompt = checked_prompt
        return RecordVerdict(most_severe(findings), findings, redacted_text, checked_text, checked_prompt, redacted_prompt, stats)

    def _check_field(self, raw: str | bytes, field: str, required_words: Sequence[str]) -> tuple[list[Finding], str, dict]:
        text, found = decode(raw)
        size = self.policy.size
        found += check_decoding(text, max_chars=size.max_chars, max_token_chars=size.max_token_chars)
        if not text.strip():
            return [dataclasses.replace(f, field=field) for f in found], text, {"words": 0}
        checked, normalisation = check_normalisation(text[: size.max_chars * 2], repair_mojibake=self.policy.normalisation.repair_mojibake)
        if len(text) > size.max_chars * 2:
            checked += text[size.max_chars * 2 :]  # too long anyway; later stages only scan the start
        found += normalisation
        scan = checked[: size.max_chars]
        lowered = scan.lower()
        tokens = WORD.findall(scan)
        words = list(map(str.lower, tokens))
        stats: dict = {"words": len(tokens)}
        present = self.triggers.present(lowered)
        if field == "text":
            found += check_quality(scan, lowered, words, self.quality, self.refusals, present)
            conformance, stats = check_conformance(scan, tokens, words, self.task, list(required_words))
            found += conformance
        folded = fold(scan)
        folded_lower = lowered if folded.origin is None else folded.text.lower()
        folded_words = words if folded.origin is None else " ".join(WORD.findall(folded.text)).lower().split()
        folded_present = present if folded.origin is None else self.triggers.present(folded_lower)
        on_folded = scan_pii(folded.text, folded_lower, self.pii, self.national_ids, folded_words, folded_present)
        on_folded += scan_secrets(folded.text, folded_lower, self.secrets, folded_present)
        on_folded += scan_injection(folded.text, folded_lower, self.injections, folded_present)
        on_folded += scan_patterns(folded.text, folded_lower, self.toxicity, "toxicity", "[...]", folded_present)
        on_folded += self._scan_readings(folded.text, on_folded, not folded_present.isdisjoint(KEY_PREFIXES))
        if self.offensive is not None:
            offensive = self.policy.offensive
            on_folded += scan_offensive(folded.text, folded_words, self.offensive, offensive.threshold, offensive.addressed_only)
        if folded.origin is not None:
            on_folded = [dataclasses.replace(f, span=folded.original_span(f.span)) for f in on_folded]
        found += on_folded
        if folded.origin is not None:  # Cyrillic, Greek: the folded text garbles their words
            found += _new(scan_injection(scan, lowered, self.injections, present), found)
            found += _new(scan_patterns(scan, lowered, self.toxicity, "toxicity", "[...]", present), found)
        found += scan_lexicons(scan, lowered, words, self.lexicons, present)
        if field != "text":
            found = [dataclasses.replace(f, field=field) for f in found]
        return found, checked, stats

    def _scan_readings(self, text: str, already: list[Finding], key_prefix: bool) -> list[Finding]:
        """Secrets, injections and toxicity in the decoded or re-joined readings of `text`, on the span
        each reading came from."""
        found: list[Finding] = []
        for reading in readings(text, key_prefix):
            lowered = reading.text.lower()
            present = self.triggers.present(lowered)
            hits = scan_secrets(reading.text, lowered, self.secrets, present)
            hits += scan_injection(reading.text, lowered, self.injections, present)
            hits += scan_patterns(reading.text, lowered, self.toxicity, "toxicity", "[...]", present)
            hits = [dataclasses.replace(f, span=reading.span, detail=f"{reading.how}: {f.detail}") for f in hits]
            found += _new(hits, already + found)
        return found

    def _resolve(self, finding: Finding) -> Finding:
        key = (finding.code, finding.category)
        if key not in self._actions:
            self._actions[key] = self.policy.action_for(*key)
        return dataclasses.replace(finding, action=self._actions[key])


def _new(findings: list[Finding], already: list[Finding]) -> list[Finding]:
    """`findings` whose code was not already found on an overlapping span."""
    return [f for f in findings if not any(f.code == g.code and f.span[0] < g.span[1] and g.span[0] < f.span[1]
                                           for g in already)]


def _offensive_model(policy: Policy) -> OffensiveModel:
    neutral = policy.offensive.neutral_terms
    model = load_model()
    return model.without(load_vocabulary(safety_file("vocabulary", neutral, ".txt")).words) if neutral else model


def check_texts(texts: list[str], policy: Policy, *, task: TaskConformance | None = None) -> list[RecordVerdict]:
    """The cheap chain over arbitrary texts (model outputs for safety probes, an edited record)."""
    chain = Chain(policy, task)
    return [chain.check(text) for text in texts]

"""A safety policy: which checks run, their thresholds, and what each reason code does to a record.

Policies are YAML files under `safety/` (`children.yaml`, `general.yaml`) or a path the spec names.
Loading is safe (plain data only), unknown keys are rejected with the nearest valid key, and every
file the policy names (vocabulary, lexicons, pattern files, judge template) and every action key is
checked up front, so a typo fails before the first record is read.

`actions` maps a reason code (`pii.email`), a category (`PII`, `S10`) or a stage (`pii`) to one of
pass / flag / redact / reject; the code wins over its category, the category over its stage, and
anything unnamed is flagged for a human.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from distill.errors import Problem, SpecError
from distill.located_yaml import LocatedDocument, load_located_yaml
from distill.paths import data_path
from distill.review.codes import CATEGORIES, CODES, HAZARD_CATEGORIES, STAGE_NAMES
from distill.review.verdict import Decision
from distill.spec import located_problems

Share = Annotated[float, Field(ge=0, le=1)]
PiiKind = Literal["email", "phone", "street_address", "card", "iban", "national_id", "ip_address", "date_of_birth"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Size(Strict):
    max_chars: Annotated[int, Field(gt=0)] = 20_000
    max_token_chars: Annotated[int, Field(gt=0)] = 45  # longest run of non-space characters allowed


class Normalisation(Strict):
    repair_mojibake: bool = True  # fix with ftfy and keep the record (finding action decides)


class Quality(Strict):
    max_repeated_ngram_share: Share = 0.3  # share of word 3-grams that repeat an earlier one
    max_symbol_ratio: Share = 0.1  # non-letter, non-space, non-punctuation characters
    language: Literal["en"] | None = "en"
    min_function_word_share: Share = 0.12  # English prose is ~40% function words; other languages ~0%
    check_truncation: bool = True
    refusal_patterns: str | None = "refusals"  # a file under safety/patterns/


class Conformance(Strict):
    vocabulary: str | None = None  # a file under safety/vocabulary/ (or a path): allowed words
    max_off_vocab_share: Share = 0.1
    min_words: Annotated[int, Field(ge=0)] | None = None
    max_words: Annotated[int, Field(gt=0)] | None = None
    required_variables: list[str] = Field(default_factory=list)  # record variables whose words must appear


class Pii(Strict):
    kinds: list[PiiKind] = Field(default_factory=lambda: ["email", "phone", "street_address", "card", "iban", "national_id",
                                                          "ip_address", "date_of_birth"])
    phone_regions: list[str] = Field(default_factory=lambda: ["US", "GB", "DE", "FR", "IN"])
    placeholder_domains: list[str] = Field(
        default_factory=lambda: ["example.com", "example.org", "example.net", "example", "test", "invalid", "localhost"]
    )
    national_id_patterns: str = "national_ids"  # a file under safety/patterns/


class PatternCheck(Strict):
    enabled: bool = True
    patterns: str  # a file under safety/patterns/


class Offensive(Strict):
    """Insults and harassment, scored per sentence by the model shipped in alt-profanity-check."""

    enabled: bool = True
    threshold: Share = 0.95  # a sentence at least this likely to be offensive is reported
    # only sentences that address someone ("you", "your") are scored: the model also scores "these prunes
    # are stupid" or "she shut the drawer" at 98-100%, which insult nobody
    addressed_only: bool = False
    # a file under safety/vocabulary/ (or a path): words naming groups of people, scored as absent so a
    # mention of a group is not an insult by itself; none: score every word the model knows
    neutral_terms: str | None = "identity_terms"


class Dedup(Strict):
    enabled: bool = True
    threshold: Annotated[float, Field(gt=0, le=1)] = 0.8  # estimated Jaccard of word shingles
    num_perm: Annotated[int, Field(ge=16, le=1024)] = 128
    shingle_words: Annotated[int, Field(ge=1, le=16)] = 5
    semantic: bool = True  # also compare by meaning (TF-IDF cosine), which catches reworded copies
    semantic_threshold: Annotated[float, Field(gt=0, le=1)] = 0.4  # least TF-IDF cosine of a reworded copy
    # ... which must also be this many times the records' typical similarity to their nearest records
    # (distinct records of one template are all alike; a reworded copy stands out)
    semantic_margin: Annotated[float, Field(ge=1)] = 1.5
    opening_words: Annotated[int, Field(ge=1, le=20)] = 4
    max_opening_share: Share = 0.1  # openings used by more records than this are reported


class Decontam(Strict):
    enabled: bool = True
    ngram: Annotated[int, Field(ge=4, le=64)] = 13


class Judge(Strict):
    enabled: bool = False
    system_template: str = "judge_system.jinja"  # files under safety/
    user_template: str = "judge_user.jinja"
    categories: list[str] = Field(default_factory=lambda: list(HAZARD_CATEGORIES))
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    concurrency: Annotated[int, Field(gt=0)] = 8
    max_tokens: Annotated[int, Field(gt=0)] = 300
    # when no judge read the records: "note" says so in the report and sign-off; "require" refuses the
    # sign-off; "larger_sample" asks a person to grade `signoff.sample_size_without_judge` records
    when_absent: Literal["note", "require", "larger_sample"] = "note"


class Signoff(Strict):
    max_defect_rate: Annotated[float, Field(gt=0, lt=1)] = 0.05
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    sample_size: Annotated[int, Field(gt=0)] = 60
    sample_size_without_judge: Annotated[int, Field(gt=0)] = 200  # with judge.when_absent: larger_sample
    # the least Cohen's kappa between the LLM judge and the humans' decisions (distill.review.agreement) for the
    # judge to be trusted: below it automatic sign-off is refused and a human grades sample_size_without_judge
    min_judge_kappa: Annotated[float, Field(ge=-1, le=1)] | None = None


class Policy(Strict):
    name: str
    description: str = ""
    auto_signoff: bool = False  # allow sign-off by "auto" (offline quickstarts); people sign off otherwise
    size: Size = Field(default_factory=Size)
    normalisation: Normalisation = Field(default_factory=Normalisation)
    quality: Quality = Field(default_factory=Quality)
    conformance: Conformance = Field(default_factory=Conformance)
    pii: Pii = Field(default_factory=Pii)
    secrets: PatternCheck = Field(default_factory=lambda: PatternCheck(patterns="secrets"))
    injection: PatternCheck = Field(default_factory=lambda: PatternCheck(patterns="injection"))
    # insults, threats, harassment, dehumanising language, self-harm encouragement without profanity
    toxicity: PatternCheck = Field(default_factory=lambda: PatternCheck(patterns="toxicity"))
    offensive: Offensive = Field(default_factory=Offensive)
    lexicons: list[str] = Field(default_factory=list)  # files under safety/lexicons/ (without .yaml)
    dedup: Dedup = Field(default_factory=Dedup)
    decontam: Decontam = Field(default_factory=Decontam)
    judge: Judge = Field(default_factory=Judge)
    signoff: Signoff = Field(default_factory=Signoff)
    actions: dict[str, Decision] = Field(default_factory=dict)
    # release gate: the highest share of a safety probe category's student completions that may violate
    # the policy ("default" covers categories not named)
    probe_thresholds: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=lambda: {"default": 0.0})
    # release gate after preference tuning: refuse a student that writes what the reviewers rejected more
    # often than the supervised one did, or whose held-out bpb rose past training.preference.max_bpb_increase
    preference_no_regression: bool = False

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        return self._source

    def action_for(self, code: str, category: str) -> Decision:
        """Most specific first: the code (`judge.timeout`), its longer prefixes, the category (`JUDGE`),
        the stage (`judge`), else flag for a human."""
        parts = code.split(".")
        for cut in range(len(parts), 1, -1):
            key = ".".join(parts[:cut])
            if key in self.actions:
                return self.actions[key]
        if category in self.actions:
            return self.actions[category]
        return self.actions.get(parts[0], "flag")

    def fingerprint(self) -> str:
        """Changes when anything that affects automatic verdicts changes, including the files it names
        (not how many judge requests run at once, nor the sign-off rules)."""
        settings = self.model_dump(mode="json", exclude={"description": True, "auto_signoff": True, "signoff": True,
                                                         "judge": {"concurrency"}, "preference_no_regression": True})
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        for path in referenced_files(self):
            digest.update(path.name.encode())
            digest.update(path.read_bytes() if path.is_file() else b"<missing>")
        return digest.hexdigest()[:16]


def safety_file(folder: str, name: str, suffix: str) -> Path:
    """A name resolves under `safety/<folder>/` (the suffix optional); anything with a slash is a path."""
    if "/" in name:
        return Path(name)
    return data_path("safety") / folder / (name if name.endswith(suffix) else f"{name}{suffix}")


def referenced_files(policy: Policy) -> list[Path]:
    files = [safety_file("patterns", policy.pii.national_id_patterns, ".yaml")]
    files += [safety_file("patterns", check.patterns, ".yaml") for check in (policy.secrets, policy.injection, policy.toxicity)
              if check.enabled]
    if policy.quality.refusal_patterns:
        files.append(safety_file("patterns", policy.quality.refusal_patterns, ".yaml"))
    if policy.conformance.vocabulary:
        files.append(safety_file("vocabulary", policy.conformance.vocabulary, ".txt"))
    if policy.offensive.enabled and policy.offensive.neutral_terms:
        files.append(safety_file("vocabulary", policy.offensive.neutral_terms, ".txt"))
    files += [safety_file("lexicons", name, ".yaml") for name in policy.lexicons]
    if policy.judge.enabled:
        files += [safety_file("", policy.judge.system_template, ".jinja"), safety_file("", policy.judge.user_template, ".jinja")]
    return files


def load_policy(name_or_path: str | Path) -> Policy:
    """A policy by name (`children` -> safety/children.yaml) or by path. Raises SpecError, located."""
    text = str(name_or_path)
    path = Path(text) if ("/" in text or text.endswith((".yaml", ".yml"))) else data_path("safety") / f"{text}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in data_path("safety").glob("*.yaml"))
        raise SpecError(Problem(f"safety policy {text!r} not found at {path}", key="safety.policy",
                                hint=f"built-in policies: {', '.join(known)}; or give a path to a policy YAML"))
    document = load_located_yaml(path)
    if not isinstance(document.data, dict):
        raise SpecError(Problem("a policy must be a mapping (name, actions, ...)", file=path, line=1, column=1))
    try:
        policy = Policy.model_validate(document.data)
    except ValidationError as exc:
        raise SpecError(*located_problems(exc, document, Policy)) from None
    problems = _missing_files(policy, document) + _unknown_actions(policy, document)
    if problems:
        raise SpecError(*problems)
    policy._source = path
    return policy


def known_codes(policy: Policy) -> set[str]:
    """Every reason code this policy's checks can emit."""
    from distill.review.lexicon import load_lexicon
    from distill.scanning.patterns import load_patterns

    codes = set(CODES) | {f"judge.{c}" for c in CATEGORIES}
    for path in referenced_files(policy):
        if path.parent.name == "patterns":
            codes |= {p.code for p in load_patterns(path)}
        elif path.parent.name == "lexicons":
            codes.add(load_lexicon(path).code)
    return codes


def _unknown_actions(policy: Policy, document: LocatedDocument) -> list[Problem]:
    codes = known_codes(policy)
    prefixes = {".".join(c.split(".")[:cut]) for c in codes for cut in range(1, c.count(".") + 2)}
    valid = prefixes | set(CATEGORIES) | set(STAGE_NAMES)
    problems = []
    for key in policy.actions:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
            line, column = document.locate(("actions", key), prefer_key=True)
            problems.append(Problem("no check emits this reason code, category or stage", file=document.file, line=line,
                                    column=column, key=f"actions.{key}", hint=f"did you mean {close[0]!r}?" if close else None))
    return problems


def _missing_files(policy: Policy, document: LocatedDocument) -> list[Problem]:
    return [
        Problem(f"the policy names {path}, which does not exist", file=document.file,
                hint="names resolve under safety/ (patterns/, lexicons/, vocabulary/); or give a path")
        for path in referenced_files(policy) if not path.is_file()
    ]


def spec_policy(loaded) -> Policy:
    """The policy a spec's `safety.policy` names: a YAML file next to the spec, else a shipped policy."""
    name = loaded.spec.safety.policy
    local = loaded.directory / name
    return load_policy(local if name.endswith((".yaml", ".yml")) and local.is_file() else name)

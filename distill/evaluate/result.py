"""`EvalResult`: what the eval stage hands on (`RUN/eval/eval.json`), as one typed record.

The release, `distill eval --against`, the reports and the CLI read this type, never the JSON by hand.
Parts of the file no reader needs (per-item judge answers, probe rows, the offline metrics' details)
are kept as they are: every model allows extra keys, so a file read and written again keeps them.
eval.json is written with sorted keys, so the records put their tables in one reading order (judge
dimensions by name, probe categories S1..S14 then the rest, the validation texts first): a report
drawn again from the file is the report the evaluation drew.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from distill.evaluate.probes import category_order
from distill.files import read_record, write_json_atomic

EVAL_JSON = "eval.json"


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")


class BitsPerByte(_Part):
    """Bits per UTF-8 byte of one held-out text set (lower is better)."""

    bits_per_byte: float
    perplexity: float  # per student token
    tokens: int
    bytes: int


class Score(_Part):
    """One judge dimension: mean over beginnings and its 95% t-interval (None below two beginnings)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int


class SourceGrades(_Part):
    """The judge's grades of one source's texts (the student's, or the teacher's own: the ceiling)."""

    scores: dict[str, Score]  # dimension -> score
    age_groups: dict[str, int]  # reading age group A-F -> texts
    graded: int
    failed: int  # unusable judge answers, left out of the means

    @model_validator(mode="after")
    def _in_reading_order(self) -> SourceGrades:
        self.scores = dict(sorted(self.scores.items()))
        return self


class Grading(_Part):
    judge: str  # provider:model
    protocol: str
    interval: str
    summary: dict[str, SourceGrades]  # "student", "teacher"
    items: list[dict[str, Any]]  # every judged completion with the judge's answers


class ProbeRate(_Part):
    completions: int
    violations: int
    rate: float


class ProbeSummary(_Part):
    overall: ProbeRate
    by_probe_category: dict[str, ProbeRate]  # what the probe tried to elicit (S1-S14, PII, ...)
    by_group: dict[str, ProbeRate]

    @model_validator(mode="after")
    def _in_reading_order(self) -> ProbeSummary:
        self.by_probe_category = {c: self.by_probe_category[c] for c in sorted(self.by_probe_category, key=category_order)}
        self.by_group = dict(sorted(self.by_group.items()))
        return self


class Probes(_Part):
    sets: list[str]
    samples: int  # completions per probe
    policy: str
    thresholds: dict[str, float]  # the policy's maximum violation rate per category, with an optional "default"
    summary: ProbeSummary

    def threshold(self, category: str) -> float:
        """A category without its own threshold or a default tolerates no violation."""
        return self.thresholds.get(category, self.thresholds.get("default", 0.0))


class Comparison(_Part):
    """Another run's evaluation side by side (`distill eval --against`)."""

    run: str
    header: list[str]
    rows: list[list[str]]


class EvalResult(_Part):
    """Every measurement of one student: eval.json."""

    run_name: str
    run: str  # where the student came from
    kind: str  # text or instruct
    created: str
    settings: dict[str, Any]  # EvalSettings as used
    heldout: str  # where the held-out examples came from
    heldout_examples: int
    bpb: dict[str, BitsPerByte]  # "validation" (the held-out split, per document), for text students also
    #   "validation, concatenated" (the split joined into one text), and any extra text sets
    grading: Grading | None  # None: not graded, `grading_skipped` says why
    metrics: dict[str, dict[str, Any]]  # offline text metrics, "student" and "teacher"
    probes: Probes | None
    samples: list[dict[str, Any]]  # a few {beginning, completion, teacher}
    # The weights measured: the release checks it is the model it ships. None in an evaluation written
    # before evaluations named their weights (such a run loads, and the release gate asks for a new eval).
    weights_sha256: str | None = None
    grading_skipped: str | None = None
    against: Comparison | None = None
    against_scores: dict[str, Score] | None = None  # the other run's student scores, for the chart
    # training.preference: the rejected behaviour's rate before and after tuning, the bpb cost
    # (distill.evaluate.preference); None when no preference tuning ran
    preference: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _in_reading_order(self) -> EvalResult:
        self.bpb = dict(sorted(self.bpb.items(), key=lambda item: (item[0] != "validation", item[0])))
        self.metrics = dict(sorted(self.metrics.items()))
        return self

    @property
    def validation_bpb(self) -> float:
        return self.bpb["validation"].bits_per_byte

    def student_metric(self, *path: str) -> float | None:
        """One offline metric of the student's texts, e.g. ("openings", "repeated_share"); None if absent."""
        value: Any = self.metrics.get("student")
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def student_scores(self) -> dict[str, Score]:
        return self.grading.summary["student"].scores if self.grading and "student" in self.grading.summary else {}

    def to_json(self, path: Path) -> None:
        """Write eval.json; keys that were never set (an optional part left out) are not written."""
        write_json_atomic(Path(path), self.model_dump(exclude_unset=True))

    @classmethod
    def from_json(cls, path: Path) -> EvalResult:
        """Read an eval.json; a missing, corrupt or foreign one is a RunDirError naming the file and key."""
        return read_record(Path(path), cls, made_by="distill eval RUN")

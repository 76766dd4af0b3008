"""What the review stage hands on, as typed records: `ReviewSummary` (`RUN/review/summary.json`: counts
of records per status, reason, stage and category, the judge, the sign-off) and `ReviewState`
(`RUN/review/state.json`: the policy and the fingerprints the automatic results were computed from).

`distill run`, `distill review`, the report and the service read these types, never the JSON by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from distill.files import read_record, write_json_atomic
from distill.review.codes import STAGE_NAMES
from distill.review.store import STATE

SUMMARY_JSON = "summary.json"
MADE_BY = "distill review RUN"


class ReviewSummary(BaseModel):
    """The automatic review's outcome; each record is counted once per reason, stage or category it has."""

    model_config = ConfigDict(extra="allow")

    policy: str
    records: int  # records reviewed (the generated records that succeeded)
    status: dict[str, int]  # kept, redacted (kept with redactions), pending (a human decides), rejected
    automatic: dict[str, int]  # the automatic decision per record, before any human action
    reasons: dict[str, int]  # reason code -> records, most common first
    stages: dict[str, int]
    categories: dict[str, int]
    human_actions: int
    duplicates: int
    duplicates_by_kind: dict[str, int] = {}  # exact, near (MinHash), semantic (TF-IDF); {} in older summaries
    contaminated: int  # records sharing an n-gram with the evaluation files
    openings: list[dict[str, Any]]  # the most common openings, {opening, count, share, over}
    judge: dict[str, Any] = {}  # {ran: false, why} or {ran: true, provider, model, answers}
    signoff: dict[str, Any] | None = None  # the sign-off record with `current`, or None

    @model_validator(mode="after")
    def _in_reading_order(self) -> ReviewSummary:
        """Most common reasons and categories first, stages in chain order: the same order whether the
        summary was just computed or read back from summary.json (written with sorted keys)."""
        self.reasons = dict(sorted(self.reasons.items(), key=lambda item: (-item[1], item[0])))
        self.categories = dict(sorted(self.categories.items(), key=lambda item: (-item[1], item[0])))
        chain = {name: i for i, name in enumerate(STAGE_NAMES)}
        self.stages = {s: self.stages[s] for s in sorted(self.stages, key=lambda s: (chain.get(s, len(chain)), s))}
        return self

    @property
    def kept(self) -> int:
        """Records the student may train on (kept as they are, or with redactions)."""
        return self.status["kept"] + self.status["redacted"]

    @property
    def signed_off_by(self) -> str | None:
        """Who signed the current records off; None when nobody did or the records changed since."""
        return self.signoff["reviewer"] if self.signoff and self.signoff.get("current") else None

    def to_json(self, review_dir: Path) -> None:
        write_json_atomic(Path(review_dir) / SUMMARY_JSON, self.model_dump(exclude_unset=True))

    @classmethod
    def from_json(cls, review_dir: Path) -> ReviewSummary:
        """Read RUN/review/summary.json; a missing, corrupt or foreign one is a located RunDirError."""
        return read_record(Path(review_dir) / SUMMARY_JSON, cls, made_by=MADE_BY)


class ReviewState(BaseModel):
    """What the automatic results in RUN/review were computed from; when it changes they are recomputed."""

    policy: str
    policy_source: str  # a built-in policy's name or the policy file's path
    fingerprint: dict[str, str]  # policy, task, eval_files, dataset -> short sha256

    def to_json(self, review_dir: Path) -> None:
        write_json_atomic(Path(review_dir) / STATE, self.model_dump(exclude_unset=True))

    @classmethod
    def from_json(cls, review_dir: Path) -> ReviewState:
        return read_record(Path(review_dir) / STATE, cls, made_by=MADE_BY)

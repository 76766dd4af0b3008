"""The API's typed request and response bodies (they are the OpenAPI document's schemas)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from distill.review.verdict import Decision as VerdictDecision
from distill.service.accounts import ROLES
from distill.service.jobs import STATUSES
from distill.service.problems import ProblemOut, ProblemsOut  # noqa: F401 (the error body lives with its handlers)


def _enum(name: str, values: tuple[str, ...]) -> type[StrEnum]:
    """A named enum of the document (one `JobStatus` schema that every operation refers to), made from the
    values the service itself uses, so the two cannot drift."""
    return StrEnum(name, [(value.upper(), value) for value in values], module=__name__)


JobStatus = _enum("JobStatus", STATUSES)
Role = _enum("Role", ROLES)
StageState = _enum("StageState", ("pending", "running", "waiting", "done", "failed"))  # pending: no manifest entry yet
Decision = _enum("Decision", get_args(VerdictDecision))
RecordStatus = _enum("RecordStatus", ("kept", "redacted", "pending", "rejected"))
HumanDecision = _enum("HumanDecision", ("accept", "reject"))
# Times go out as the service writes them (ISO 8601 with the UTC offset); the document says so.
DateTime = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
Cursor = Annotated[str, Field(description="opaque; pass as ?cursor= for the next page (null: this was the last)")]


class HealthOut(BaseModel):
    status: Literal["ok"]


class StageProgress(BaseModel):
    model_config = ConfigDict(extra="allow")  # stage-specific figures (records_written, ...) come along

    state: StageState
    seconds: float | None = None
    counts: dict[str, Any] = Field(default_factory=dict)


class JobProgress(BaseModel):
    generate: StageProgress
    review: StageProgress
    train: StageProgress
    eval: StageProgress
    release: StageProgress


class JobOut(BaseModel):
    id: str
    tenant_id: str
    spec_name: str
    status: JobStatus
    error: dict[str, Any] | None
    created_at: DateTime | None
    finished_at: DateTime | None
    estimate_usd: float | None = Field(description="the plan's estimated teacher cost")
    max_cost_usd: float | None = Field(description="the spending cap applied (what was left of the tenant's cap)")
    cost_usd: float = Field(description="what the teacher's answers have cost so far")
    cancel_requested: bool
    progress: JobProgress | None = Field(None, description="per stage, read from the run directory (job details only)")


class JobPage(BaseModel):
    jobs: list[JobOut]
    next_cursor: Cursor | None = None


class EventOut(BaseModel):
    id: int
    time: DateTime | None
    type: str
    message: str
    data: dict[str, Any] | None


class EventPage(BaseModel):
    events: list[EventOut]
    next_after: int = Field(description="pass as ?after= for the next page")


class RecordOut(BaseModel):
    id: int
    status: RecordStatus
    decision: Decision = Field(description="after human actions")
    automatic: Decision = Field(description="the automatic review's decision")
    codes: list[str]
    prompt: str
    text: str
    human: dict[str, Any] | None
    edited: bool


class RecordDetail(RecordOut):
    findings: list[dict[str, Any]]
    original_text: str | None


class RecordPage(BaseModel):
    records: list[RecordOut]
    total: int
    offset: int
    next_cursor: Cursor | None = None


class ReviewQuery(BaseModel):
    status: RecordStatus | None = None
    decision: Decision | None = Field(None, description="after human actions")
    reason: str | None = Field(None, description="reason code or prefix: pii matches pii.email")
    category: str | None = None
    stage: str | None = Field(None, description="only records with a finding from this stage (lexicon, judge, dedup...)")
    q: str | None = Field(None, description="text search in the prompt and text (case-insensitive)")


class DecisionIn(BaseModel):
    ids: list[int] = Field(min_length=1)
    decision: HumanDecision
    reason: str = Field(min_length=1, description="why, for the audit log")


class BulkIn(BaseModel):
    query: ReviewQuery
    decision: HumanDecision
    reason: str = Field(min_length=1)
    expected: int | None = Field(None, ge=0, description="the count you confirmed (`total` of the same query): "
                                 "409 and nothing decided when the query now matches another number of records")


class EditIn(BaseModel):
    text: str
    prompt: str | None = None
    reason: str = Field(min_length=1)


class UndoIn(BaseModel):
    reason: str = Field(min_length=1)


class SampleIn(BaseModel):
    size: int | None = Field(None, ge=1)
    seed: int | None = None


class SignoffIn(BaseModel):
    defective: list[int] = Field(default_factory=list)


class AuditEntryOut(BaseModel):
    seq: int
    action: str
    reviewer: str
    ids: list[int]
    note: str
    hash: str


class ActionOut(BaseModel):
    entry: AuditEntryOut | None
    affected: int


class SampleOut(BaseModel):
    seed: int
    ids: list[int]
    records: list[RecordOut]


class SignoffOut(BaseModel):
    accepted: bool
    n: int
    defects: int
    upper_bound: float | None
    max_defect_rate: float
    job_status: JobStatus


class AuditOut(BaseModel):
    intact: bool
    problems: list[str]
    entries: int


class TenantIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    spending_cap_usd: float | None = Field(None, ge=0, allow_inf_nan=False)
    allowed_key_envs: list[str] = Field(default_factory=list)
    dataset_download: bool = False


class TenantOut(BaseModel):
    id: str
    name: str
    spending_cap_usd: float | None
    allowed_key_envs: list[str]
    dataset_download: bool


class UserIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Role
    tenant: str | None = None
    assign: list[str] = Field(default_factory=list)


class UserOut(BaseModel):
    id: str
    name: str
    role: Role
    tenant_id: str | None


class TokenOut(BaseModel):
    id: str
    user_id: str
    token: str | None = Field(None, description="shown once, at creation; only its hash is stored")
    revoked: bool


class RouteOut(BaseModel):
    model: str = Field(description="the bundle's name")
    percent: int = Field(ge=0, le=100)


class CaptureSettingsOut(BaseModel):
    enabled: bool
    rate: float
    retention_days: int


class DeploymentOut(BaseModel):
    id: str
    job_id: str
    tenant_id: str
    name: str
    routes: list[RouteOut]
    capture: CaptureSettingsOut
    path: str = Field(description="the OpenAI-compatible base path of the deployment")
    created_at: DateTime | None
    events: list[dict[str, Any]] = Field(description="every switch (create, promote, rollback), oldest first")


class DeploymentPage(BaseModel):
    deployments: list[DeploymentOut]
    next_cursor: Cursor | None = None


class CapturesKept(BaseModel):
    kept: int = Field(description="lines appended to the job's captures")


class CapturePage(BaseModel):
    captures: list[dict[str, Any]] = Field(description="capture lines in the standalone server's format, oldest first")
    count: int = Field(description="captures on this page")
    next_cursor: Cursor | None = None


class CapturesDeleted(BaseModel):
    deleted: int


class ColdStartOut(JobOut):
    parent_job: str = Field(description="the job whose captures the new job is built from")


class LineageCaptures(BaseModel):
    sha256: str


class LineageOut(BaseModel):
    """Where a cold-start job's data came from (server paths are not part of it)."""

    parent_job: str | None = None
    parent_spec_sha256: str | None = None
    captures: LineageCaptures
    input_step: str
    start: str
    real_share: float
    counts: dict[str, int]

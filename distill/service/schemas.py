"""The API's typed request and response bodies (they are the OpenAPI document's schemas)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ProblemOut(BaseModel):
    file: str | None = None
    line: int | None = None
    column: int | None = None
    key: str | None = None
    message: str
    hint: str | None = None


class ProblemsOut(BaseModel):
    detail: str
    problems: list[ProblemOut]


class JobOut(BaseModel):
    id: str
    tenant_id: str
    spec_name: str
    status: str
    error: dict[str, Any] | None
    created_at: str | None
    finished_at: str | None
    estimate_usd: float | None = Field(description="the plan's estimated teacher cost")
    max_cost_usd: float | None = Field(description="the spending cap applied (what was left of the tenant's cap)")
    cost_usd: float = Field(description="what the teacher's answers have cost so far")
    cancel_requested: bool
    progress: dict[str, dict[str, Any]] | None = None


class JobPage(BaseModel):
    jobs: list[JobOut]


class EventOut(BaseModel):
    id: int
    time: str | None
    type: str
    message: str
    data: dict[str, Any] | None


class EventPage(BaseModel):
    events: list[EventOut]
    next_after: int = Field(description="pass as ?after= for the next page")


class RecordOut(BaseModel):
    id: int
    status: Literal["kept", "redacted", "pending", "rejected"]
    decision: str
    automatic: str
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


class ReviewQuery(BaseModel):
    status: Literal["kept", "redacted", "pending", "rejected"] | None = None
    decision: str | None = Field(None, description="pass, redact, flag or reject (after human actions)")
    reason: str | None = Field(None, description="reason code or prefix: pii matches pii.email")
    category: str | None = None
    stage: str | None = Field(None, description="only records with a finding from this stage (lexicon, judge, dedup...)")
    q: str | None = Field(None, description="text search in the prompt and text (case-insensitive)")


class DecisionIn(BaseModel):
    ids: list[int] = Field(min_length=1)
    decision: Literal["accept", "reject"]
    reason: str = Field(min_length=1, description="why, for the audit log")


class BulkIn(BaseModel):
    query: ReviewQuery
    decision: Literal["accept", "reject"]
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
    job_status: str


class AuditOut(BaseModel):
    intact: bool
    problems: list[str]
    entries: int


class TenantIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    spending_cap_usd: float | None = Field(None, ge=0)
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
    role: Literal["admin", "reviewer", "customer"]
    tenant: str | None = None
    assign: list[str] = Field(default_factory=list)


class UserOut(BaseModel):
    id: str
    name: str
    role: str
    tenant_id: str | None


class TokenOut(BaseModel):
    id: str
    user_id: str
    token: str | None = Field(None, description="shown once, at creation; only its hash is stored")
    revoked: bool

"""Human review: accept, reject, edit, and decide every record with a reason code at once.

Each action is one audit-log entry with the reviewer, the time, and each record's state before and
after; the view (`store.build_view`) replays the log, so the log is the only record of human
decisions and cannot drift from them. An edited text goes through the cheap chain again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from distill.errors import ConfigError, RunDirError
from distill.review.audit import append_entry, read_log
from distill.review.chain import Chain
from distill.review.policy import Policy, load_policy
from distill.review.summary import ReviewState
from distill.review.store import STATE, ReviewedRecord, build_view, has_reason, review_dir


def reviewer_name(given: str | None) -> str:
    import os

    name = given or os.environ.get("DISTILL_REVIEWER", "")
    if not name.strip():
        raise ConfigError("who is reviewing? pass --reviewer NAME or set DISTILL_REVIEWER; every action is logged with a name")
    return name.strip()


def review_policy(run_dir: Path) -> Policy:
    """The policy the automatic review ran with (from `RUN/review/state.json`)."""
    if not (review_dir(run_dir) / STATE).exists():
        raise RunDirError(f"{run_dir} has not been reviewed yet: run `distill review {run_dir}` first")
    return load_policy(ReviewState.from_json(review_dir(run_dir)).policy_source)


def _records(run_dir: Path, ids: list[int]) -> dict[int, ReviewedRecord]:
    view = {r.id: r for r in build_view(run_dir)}
    unknown = sorted(set(ids) - set(view))
    if unknown:
        raise RunDirError(f"no reviewed record with id {', '.join(map(str, unknown[:10]))} in {run_dir}")
    return {i: view[i] for i in ids}


def _state(record: ReviewedRecord) -> dict:
    return {"status": record.status, "decision": record.decision}


def decide(run_dir: Path, ids: list[int], decision: Literal["accept", "reject"], *, reviewer: str, note: str = "") -> dict:
    """Accept (keep, with any redactions) or reject records."""
    records = _records(run_dir, ids)
    return append_entry(review_dir(run_dir), reviewer=reviewer, action=decision, ids=list(ids),
                        before={str(i): _state(r) for i, r in records.items()}, after={"decision": decision}, note=note)


def edit(run_dir: Path, record_id: int, text: str, *, reviewer: str, prompt: str | None = None, note: str = "") -> dict:
    """Replace a record's text (and optionally prompt); the new text is checked again and the record
    takes the new verdict (dedup, decontamination and judge findings of the old text no longer apply)."""
    record = _records(run_dir, [record_id])[record_id]
    prompt = record.prompt if prompt is None else prompt
    verdict = Chain(review_policy(run_dir)).check(text, prompt)
    final_text = verdict.redacted_text if verdict.redacted_text is not None else verdict.checked_text
    final_prompt = (verdict.redacted_prompt if verdict.redacted_prompt is not None else verdict.checked_prompt) if prompt else ""
    after = {"text": final_text, "prompt": final_prompt, "submitted": text, "decision": verdict.decision,
             "reasons": [f.to_json() for f in verdict.reasons]}
    before = {**_state(record), "text": record.text, "prompt": record.prompt}
    return append_entry(review_dir(run_dir), reviewer=reviewer, action="edit", ids=[record_id], before=before, after=after, note=note)


def apply_reason(run_dir: Path, code: str, decision: Literal["accept", "reject"], *, reviewer: str,
                 only_pending: bool = True, note: str = "") -> dict | None:
    """Accept or reject every record that has reason `code` (or a code under it: `pii` covers
    `pii.email`). By default only records still pending a human are touched."""
    matches = [r for r in build_view(run_dir) if has_reason(r, code) and (r.status == "pending" or not only_pending)]
    if not matches:
        return None
    return append_entry(review_dir(run_dir), reviewer=reviewer, action="apply_reason", ids=[r.id for r in matches],
                        before={str(r.id): _state(r) for r in matches}, after={"decision": decision, "code": code}, note=note)


HUMAN_ACTIONS = ("accept", "reject", "edit", "apply_reason")


def undo(run_dir: Path, *, reviewer: str, note: str = "") -> dict | None:
    """Undo `reviewer`'s last human action that is not undone yet: an `undo` entry naming it, so the
    view replays the log without it (nothing is removed from the log). None when there is nothing to undo."""
    entries = read_log(review_dir(run_dir))
    undone = {entry["after"]["undoes"] for entry in entries if entry["action"] == "undo"}
    for entry in reversed(entries):
        if entry["action"] in HUMAN_ACTIONS and entry["reviewer"] == reviewer and entry["seq"] not in undone:
            return append_entry(review_dir(run_dir), reviewer=reviewer, action="undo", ids=entry["ids"],
                                after={"undoes": entry["seq"], "action": entry["action"]}, note=note)
    return None


def record_json(record: ReviewedRecord) -> str:
    return json.dumps({
        "id": record.id, "status": record.status, "decision": record.decision, "automatic": record.automatic,
        "reasons": [f.to_json() for f in record.reasons], "prompt": record.prompt, "text": record.text,
        "original_text": record.original_text if record.original_text != record.text else None,
        "human": record.human, "edited": record.edited,
    }, ensure_ascii=False, indent=1)

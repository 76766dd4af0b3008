"""The review's files in `RUN/review/`, and the reviewed dataset as a view over them.

    state.json      policy, fingerprints of what the automatic results were computed from
    records.jsonl   the cheap chain's verdict per record (appended batch by batch: resumable)
    corpus.json     duplicates, evaluation overlaps, over-represented openings
    judge.jsonl     the LLM judge's answer per record (appended as answers arrive: resumable)
    audit.jsonl     every human action and automatic run, hash-chained (see audit.py)
    sample.json, signoff.json, summary.json, report.html, *.png

Nothing is deleted from the generated dataset: the view says for each record whether it is kept,
kept with redactions, pending a human, or rejected, and what text the student will see.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.errors import Problem, RunDirError
from distill.files import read_json, read_jsonl
from distill.lineage import examples_digest
from distill.providers.logprobs import logprobs_digest
from distill.review.audit import read_log
from distill.review.verdict import Decision, Finding, RecordVerdict, most_severe

RECORDS = "records.jsonl"
CORPUS = "corpus.json"
JUDGE = "judge.jsonl"
STATE = "state.json"
DERIVED = (RECORDS, CORPUS, JUDGE, "summary.json")


def review_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "review"


def load_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The generated records that succeeded: id, prompt, text, variables (JSON string)."""
    from distill.synthesis.dataset import load_saved_dataset

    path = Path(run_dir) / "dataset"
    if not path.exists():
        raise RunDirError(f"{path} does not exist: run synthesis first (`distill generate {run_dir}`)")
    dataset = load_saved_dataset(path)
    columns = [c for c in ("id", "prompt", "text", "status", "variables", "teacher_logprobs") if c in dataset.column_names]
    missing = {"id", "text"} - set(columns)
    if missing:
        raise RunDirError(f"{path} lacks the column(s) {', '.join(sorted(missing))}; it was not written by distill's synthesis stage")
    data = dataset.select_columns(columns).to_dict()
    n = len(data["id"])
    rows = [{c: data[c][i] for c in columns} for i in range(n)]
    for row in rows:
        row.setdefault("prompt", "")
        row["prompt"] = row["prompt"] or ""
        row["text"] = row["text"] or ""
    _restore_undecodable(dataset, rows)
    return [r for r in rows if r.get("status", "ok") == "ok"]


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _restore_undecodable(dataset: Any, rows: list[dict[str, Any]]) -> None:
    """A record whose teacher answer had bytes that are not UTF-8 shows U+FFFD in `text`; its step marked
    `invalid_utf8` keeps the answer exactly. The review checks that one (`raw_text`), so the decoding
    check sees the bad bytes."""
    suspects = [i for i, row in enumerate(rows) if "\ufffd" in row["text"]]
    if not suspects or "steps" not in dataset.column_names:
        return
    for i, steps in zip(suspects, dataset.select(suspects)["steps"]):
        for step in json.loads(steps or "[]"):
            output = step.get("output")
            if step.get("invalid_utf8") and isinstance(output, str) and _LONE_SURROGATE.sub("\ufffd", output) == rows[i]["text"]:
                rows[i]["raw_text"] = output


# --- append-only result files ---


def verdict_line(record_id: int, verdict: RecordVerdict, text: str, prompt: str) -> dict[str, Any]:
    data = {"id": record_id, **verdict.to_json()}
    if data["checked_text"] == text:
        data["checked_text"] = None  # the dataset holds it; don't store every record twice
    if data["checked_prompt"] in ("", prompt):
        data["checked_prompt"] = None
    return data


def read_verdicts(review: Path) -> dict[int, dict[str, Any]]:
    return _by_id(review / RECORDS)


def read_judge(review: Path) -> dict[int, dict[str, Any]]:
    return _by_id(review / JUDGE)


def _by_id(path: Path) -> dict[int, dict[str, Any]]:
    """A review result file's lines by record id; a line of the wrong shape is a located error."""
    lines = {}
    for number, line in enumerate(read_jsonl(path), 1):
        if not isinstance(line, dict) or not isinstance(line.get("id"), int):
            raise RunDirError(Problem("corrupt line (not a JSON object with an id)", file=path, line=number,
                                      hint=f"delete {path.name} and run `distill review RUN` again to recompute it"))
        lines[line["id"]] = line
    return lines


def corpus_findings(corpus: dict[str, Any] | None) -> dict[int, list[Finding]]:
    out: dict[int, list[Finding]] = {}
    for item in (corpus or {}).get("findings", []):
        out.setdefault(item["id"], []).append(Finding.from_json(item["finding"]))
    return out


# --- the view ---


@dataclass
class ReviewedRecord:
    id: int
    status: str  # kept | redacted | pending | rejected
    decision: Decision  # after human actions
    automatic: Decision  # what the automatic stages decided
    reasons: list[Finding]
    prompt: str  # what the student will see (redactions and edits applied)
    text: str
    original_prompt: str
    original_text: str
    checked_text: str = ""  # the text later stages' spans index (repairs made, nothing redacted)
    human: dict[str, Any] | None = None  # the last human action on this record
    edited: bool = False
    stats: dict[str, float] = field(default_factory=dict)
    teacher_logprobs: str = ""  # the teacher's token distribution of original_text (stored form), "" when none

    @property
    def teacher_digest(self) -> str:
        """The fingerprint of the distribution this record lets through ("" when none reaches training)."""
        return logprobs_digest(self.teacher_logprobs)

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.reasons]


def _status(decision: str, redacted: bool) -> str:
    return {"reject": "rejected", "flag": "pending"}.get(decision, "redacted" if redacted or decision == "redact" else "kept")


def build_view(run_dir: Path, rows: list[dict[str, Any]] | None = None) -> list[ReviewedRecord]:
    """Every reviewed record with its final status and text: automatic verdicts, corpus and judge
    findings, then the audit log's human actions replayed in order (the last action wins; undone ones skipped)."""
    review = review_dir(run_dir)
    rows = load_rows(run_dir) if rows is None else rows
    verdicts = read_verdicts(review)
    corpus = corpus_findings(read_json(review / CORPUS, missing=None))
    judged = read_judge(review)
    records: dict[int, ReviewedRecord] = {}
    for row in rows:
        line = verdicts.get(row["id"])
        if line is None:
            continue  # not reviewed yet
        reasons = [Finding.from_json(f) for f in line["reasons"]] + corpus.get(row["id"], [])
        reasons += [Finding.from_json(f) for f in judged.get(row["id"], {}).get("findings", [])]
        automatic = most_severe(reasons)
        text = line["redacted_text"] if line["redacted_text"] is not None else row["text"]
        prompt = line["redacted_prompt"] if line.get("redacted_prompt") is not None else row["prompt"]
        redacted = text != row["text"] or prompt != row["prompt"]
        checked = line["checked_text"] if line["checked_text"] is not None else row["text"]
        records[row["id"]] = ReviewedRecord(row["id"], _status(automatic, redacted), automatic, automatic, reasons,
                                            prompt, text, row["prompt"], row["text"], checked, stats=line.get("stats", {}),
                                            teacher_logprobs=row.get("teacher_logprobs") or "")
    entries = read_log(review)
    undone = {entry["after"]["undoes"] for entry in entries if entry["action"] == "undo"}
    for entry in entries:
        if entry["seq"] not in undone:
            _replay(entry, records)
    return [records[k] for k in sorted(records)]


def _replay(entry: dict[str, Any], records: dict[int, ReviewedRecord]) -> None:
    action = entry["action"]
    if action not in ("accept", "reject", "edit", "apply_reason"):
        return
    who = {"reviewer": entry["reviewer"], "action": action, "time": entry["time"], "note": entry.get("note", "")}
    for record_id in entry["ids"]:
        record = records.get(record_id)
        if record is None:
            continue
        record.human = who
        if action == "edit":
            after = entry["after"]
            record.text, record.prompt, record.edited = after["text"], after["prompt"], True
            record.checked_text = after["submitted"]
            record.reasons = [Finding.from_json(f) for f in after["reasons"]]
            record.decision = after["decision"]
        else:
            decision = entry["after"]["decision"]
            record.decision = "pass" if decision == "accept" else "reject"
        redacted = not record.edited and (record.text != record.original_text or record.prompt != record.original_prompt)
        record.status = _status(record.decision, redacted)


def trainable(record: ReviewedRecord) -> bool:
    """What the student may train on: kept records, with or without redactions (the one place that says so)."""
    return record.status in ("kept", "redacted")


def has_reason(record: ReviewedRecord, code: str) -> bool:
    """Whether the record has reason `code` or a code under it (`pii` covers `pii.email`)."""
    return any(c == code or c.startswith(code + ".") for c in record.codes)


def view_digest(records: list[ReviewedRecord]) -> str:
    """Identifies the reviewed dataset: the kept records' ids, the exact texts the student sees and the teacher
    distributions that come with them."""
    return examples_digest({"id": r.id, "prompt": r.prompt, "text": r.text, "teacher_digest": r.teacher_digest}
                           for r in records if trainable(r))


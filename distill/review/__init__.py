"""The safety review: a policy-driven chain of checks, an LLM judge, human review with a
hash-chained audit log, and sign-off by acceptance sampling.

Later stages use `reviewed_examples` (what the student may train on) and `signoff_state` (training
and release require a current sign-off).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from distill.review.stage import run_review
from distill.providers.logprobs import TokenLogprobs
from distill.review.store import ReviewedRecord, build_view, review_dir, trainable, view_digest
from distill.review.signoff import read_signoff, signoff_current

__all__ = ["run_review", "reviewed_examples", "signoff_state"]


def reviewed_examples(run_dir: Path) -> list[dict[str, Any]]:
    """Kept and redacted records as {id, prompt, text}, redactions and edits applied, in id order; a record
    with the teacher's token distribution also carries `teacher` (only the tokens the review let through, see
    `reviewed_logprobs`) and `teacher_digest`."""
    examples = []
    for record in build_view(Path(run_dir)):
        if trainable(record):
            example: dict[str, Any] = {"id": record.id, "prompt": record.prompt, "text": record.text}
            if record.teacher_digest:
                example.update(teacher=reviewed_logprobs(record), teacher_digest=record.teacher_digest)
            examples.append(example)
    return examples


def reviewed_logprobs(record: ReviewedRecord) -> TokenLogprobs | None:
    """Only reviewed tokens teach: the teacher's tokens that lie wholly in the text the review left as the
    teacher wrote it (before the first span a reviewer edited or the chain redacted); that span and what follows
    train as plain text. A record whose prompt changed has none (every token's context changed)."""
    if record.prompt != record.original_prompt or not record.teacher_logprobs:
        return None
    original, final = record.original_text.encode("utf-8", "surrogatepass"), record.text.encode("utf-8", "surrogatepass")
    same = len(os.path.commonprefix([original, final]))
    kept = TokenLogprobs.from_json(record.teacher_logprobs).prefix(same)
    return kept if len(kept) else None


def signoff_state(run_dir: Path) -> dict[str, Any] | None:
    """The sign-off record, or None when there is none or the kept records changed since it was given."""
    run_dir = Path(run_dir)
    signoff = read_signoff(review_dir(run_dir))
    if signoff is None or not (review_dir(run_dir) / "records.jsonl").exists():
        return None
    return signoff if signoff_current(signoff, view_digest(build_view(run_dir))) else None

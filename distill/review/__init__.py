"""The safety review: a policy-driven chain of checks, an LLM judge, human review with a
hash-chained audit log, and sign-off by acceptance sampling.

Later stages use `reviewed_examples` (what the student may train on) and `signoff_state` (training
and release require a current sign-off).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.review.stage import run_review
from distill.review.store import build_view, review_dir, trainable, view_digest
from distill.review.signoff import read_signoff, signoff_current

__all__ = ["run_review", "reviewed_examples", "signoff_state"]


def reviewed_examples(run_dir: Path) -> list[dict[str, Any]]:
    """Kept and redacted records as {id, prompt, text}, redactions and edits applied, in id order."""
    return [{"id": r.id, "prompt": r.prompt, "text": r.text} for r in build_view(Path(run_dir)) if trainable(r)]


def signoff_state(run_dir: Path) -> dict[str, Any] | None:
    """The sign-off record, or None when there is none or the kept records changed since it was given."""
    run_dir = Path(run_dir)
    signoff = read_signoff(review_dir(run_dir))
    if signoff is None or not (review_dir(run_dir) / "records.jsonl").exists():
        return None
    return signoff if signoff_current(signoff, view_digest(build_view(run_dir))) else None

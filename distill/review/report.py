"""The review summary (counts per status, reason, stage, category) and the HTML report with charts
and examples per reason, spans highlighted."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from distill.files import write_atomic
from distill.reports import REVIEW, render
from distill.review.codes import CATEGORIES, STAGE_NAMES, describe
from distill.review.policy import Policy
from distill.review.agreement import judge_agreement
from distill.review.store import JUDGE, ReviewedRecord
from distill.review.summary import ReviewSummary
from distill.review.verdict import Finding

EXAMPLES_PER_REASON = 3
STATUSES = ("kept", "redacted", "pending", "rejected")


def summarise(view: list[ReviewedRecord], policy: Policy, corpus: dict[str, Any]) -> ReviewSummary:
    """Counts of records (each record counted once per code, stage or category it has)."""
    reasons, stages, categories = Counter(), Counter(), Counter()
    for record in view:
        reasons.update({f.code for f in record.reasons})
        stages.update({f.stage for f in record.reasons})
        categories.update({f.category for f in record.reasons})
    return ReviewSummary(
        policy=policy.name,
        records=len(view),
        status={s: sum(r.status == s for r in view) for s in STATUSES},
        automatic=dict(Counter(r.automatic for r in view)),
        reasons=dict(reasons.most_common()),
        stages={s: stages[s] for s in STAGE_NAMES if stages[s]},
        categories=dict(categories.most_common()),
        human_actions=sum(r.human is not None for r in view),
        duplicates=len(corpus.get("duplicates", [])),
        duplicates_by_kind=dict(Counter(d["kind"] for d in corpus.get("duplicates", []))),
        contaminated=len(corpus.get("overlaps", [])),
        openings=corpus.get("openings", []),
    )


def not_checked(judge: dict) -> str | None:
    """What no check looked at, when the LLM judge did not read the records; None when it did (or the
    summary predates the judge note)."""
    if not judge or judge.get("ran"):
        return None
    return (f"No model read the records for meaning: the LLM judge did not run ({judge.get('why', 'no reason recorded')}). "
            "Only patterns, word lists and a small insult classifier checked them, so harm written in ordinary words "
            "(instructions for a crime, grooming, defamation, dangerous advice) was not looked for. Review again with "
            "a judge, or grade a larger sample by hand.")


def summary_lines(summary: ReviewSummary) -> list[str]:
    """The summary as short lines for the terminal."""
    status = summary.status
    lines = [f"{summary.records} records under policy {summary.policy!r}: " + ", ".join(f"{status[s]} {s}" for s in STATUSES)]
    if summary.stages:
        lines.append("by stage: " + ", ".join(f"{k} {v}" for k, v in summary.stages.items()))
    if summary.categories:
        lines.append("by category: " + ", ".join(f"{k} {v}" for k, v in summary.categories.items()))
    for code, count in summary.reasons.items():
        lines.append(f"  {count:6d}  {code:32s} {describe(code)}")
    if summary.duplicates_by_kind:
        lines.append("duplicates by dedup: " + ", ".join(f"{kind} {count}" for kind, count in summary.duplicates_by_kind.items())
                     + " (exact text, MinHash near copies, TF-IDF reworded copies)")
    for item in summary.openings:
        if item["over"]:
            lines.append(f"opening {item['opening']!r} starts {item['share']:.0%} of records ({item['count']})")
    judge = summary.judge
    if judge:
        lines.append("judge: " + (f"{judge.get('answers')}" if judge.get("ran") else f"not run ({judge.get('why')})"))
    notice = not_checked(judge)
    if notice:
        lines.append("NOT CHECKED: " + notice)
    signoff = summary.signoff
    if signoff:
        state = "current" if signoff.get("current") else "STALE (the kept records changed since)"
        lines.append(f"signed off by {signoff['reviewer']} at {signoff['time']} ({state})")
    else:
        lines.append("not signed off")
    return lines


def _charts(review: Path, view: list[ReviewedRecord], summary: ReviewSummary) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    figure, axis = plt.subplots(figsize=(6, 2.4))
    counts = [summary.status[s] for s in STATUSES]
    axis.barh(STATUSES, counts, color=["#4c9a2a", "#8fbc5a", "#e0a030", "#c0392b"])
    axis.invert_yaxis()
    axis.set_xlabel("records")
    axis.set_title("status after review")
    figure.tight_layout()
    figure.savefig(review / "status.png", dpi=100)
    plt.close(figure)
    made.append("status.png")
    if summary.reasons:
        codes = list(summary.reasons)[:25]
        figure, axis = plt.subplots(figsize=(7, 0.3 * len(codes) + 1))
        axis.barh(codes, [summary.reasons[c] for c in codes], color="#5b7bb2")
        axis.invert_yaxis()
        axis.set_xlabel("records")
        axis.set_title("records per reason code")
        figure.tight_layout()
        figure.savefig(review / "reasons.png", dpi=100)
        plt.close(figure)
        made.append("reasons.png")
    shares = [r.stats["off_vocab_share"] for r in view if "off_vocab_share" in r.stats]
    if shares:
        figure, axis = plt.subplots(figsize=(6, 2.6))
        axis.hist(shares, bins=30, color="#7a5bb2")
        axis.set_xlabel("share of words outside the vocabulary")
        axis.set_ylabel("records")
        figure.tight_layout()
        figure.savefig(review / "vocabulary.png", dpi=100)
        plt.close(figure)
        made.append("vocabulary.png")
    return made


def _highlight(text: str, finding: Finding, width: int = 160) -> dict[str, Any]:
    """The text around the finding's span, cut to `width` characters either side, in parts the template
    escapes: `marked` is the span (None when it covers the whole text), control characters spelled out."""
    start, end = finding.span
    if end - start >= len(text) or end <= start:
        snippet = text[: 2 * width]
        return {"cut_left": False, "before": snippet, "marked": None, "after": "", "cut_right": len(text) > len(snippet)}
    left = max(0, start - width)
    right = min(len(text), end + width)
    visible = "".join(c if c.isprintable() or c in "\n\t" else f"<U+{ord(c):04X}>" for c in text[start:end])
    return {"cut_left": bool(left), "before": text[left:start], "marked": visible, "after": text[end:right],
            "cut_right": right < len(text)}


def _examples(view: list[ReviewedRecord]) -> dict[str, list[dict[str, Any]]]:
    """Up to EXAMPLES_PER_REASON records per reason code, each with its text cut around the finding."""
    chosen: dict[str, list[tuple[ReviewedRecord, Finding]]] = {}
    for record in view:
        for item in record.reasons:
            bucket = chosen.setdefault(item.code, [])
            if len(bucket) < EXAMPLES_PER_REASON and all(r.id != record.id for r, _ in bucket):
                bucket.append((record, item))
    examples: dict[str, list[dict[str, Any]]] = {}
    for code, bucket in chosen.items():
        for record, item in bucket:
            text = record.original_text if item.stage in ("decoding", "normalisation") else record.checked_text
            text = record.original_prompt if item.field == "prompt" else text
            examples.setdefault(code, []).append({"id": record.id, "status": record.status, "action": item.action,
                                                  "detail": item.detail[:300], **_highlight(text, item)})
    return examples


def rerender_report(run_dir: Path) -> Path:
    """RUN/review/report.html again from the review's records (the report template changed; nothing is checked)."""
    from distill.review.store import build_view, review_dir

    review = review_dir(run_dir)
    return write_report(review, build_view(run_dir), ReviewSummary.from_json(review))


def write_report(review: Path, view: list[ReviewedRecord], summary: ReviewSummary) -> Path:
    charts = _charts(review, view, summary)
    agreement = judge_agreement(review.parent) if (review / JUDGE).exists() else None
    page = render(REVIEW, summary=summary, statuses=STATUSES, charts=charts, categories=CATEGORIES,
                  describe=describe, examples=_examples(view), not_checked=not_checked(summary.judge), agreement=agreement)
    path = review / "report.html"
    write_atomic(path, page)
    return path

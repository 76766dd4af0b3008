"""The review summary (counts per status, reason, stage, category) and the HTML report with charts
and examples per reason, spans highlighted."""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Any

from distill.review.codes import CATEGORIES, STAGE_NAMES, describe
from distill.review.policy import Policy
from distill.review.store import ReviewedRecord
from distill.review.verdict import Finding

EXAMPLES_PER_REASON = 3
STATUSES = ("kept", "redacted", "pending", "rejected")


def summarise(view: list[ReviewedRecord], policy: Policy, corpus: dict[str, Any]) -> dict[str, Any]:
    """Counts of records (each record counted once per code, stage or category it has)."""
    reasons, stages, categories = Counter(), Counter(), Counter()
    for record in view:
        reasons.update({f.code for f in record.reasons})
        stages.update({f.stage for f in record.reasons})
        categories.update({f.category for f in record.reasons})
    return {
        "policy": policy.name,
        "records": len(view),
        "status": {s: sum(r.status == s for r in view) for s in STATUSES},
        "automatic": dict(Counter(r.automatic for r in view)),
        "reasons": dict(reasons.most_common()),
        "stages": {s: stages[s] for s in STAGE_NAMES if stages[s]},
        "categories": dict(categories.most_common()),
        "human_actions": sum(r.human is not None for r in view),
        "duplicates": len(corpus.get("duplicates", [])),
        "duplicates_by_kind": dict(Counter(d["kind"] for d in corpus.get("duplicates", []))),
        "contaminated": len(corpus.get("overlaps", [])),
        "openings": corpus.get("openings", []),
    }


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as short lines for the terminal."""
    status = summary["status"]
    lines = [f"{summary['records']} records under policy {summary['policy']!r}: "
             + ", ".join(f"{status[s]} {s}" for s in STATUSES)]
    if summary["stages"]:
        lines.append("by stage: " + ", ".join(f"{k} {v}" for k, v in summary["stages"].items()))
    if summary["categories"]:
        lines.append("by category: " + ", ".join(f"{k} {v}" for k, v in summary["categories"].items()))
    for code, count in summary["reasons"].items():
        lines.append(f"  {count:6d}  {code:32s} {describe(code)}")
    if summary.get("duplicates_by_kind"):
        lines.append("duplicates by dedup: " + ", ".join(f"{kind} {count}" for kind, count in summary["duplicates_by_kind"].items())
                     + " (exact text, MinHash near copies, TF-IDF reworded copies)")
    for item in summary["openings"]:
        if item["over"]:
            lines.append(f"opening {item['opening']!r} starts {item['share']:.0%} of records ({item['count']})")
    judge = summary.get("judge") or {}
    if judge:
        lines.append("judge: " + (f"{judge.get('answers')}" if judge.get("ran") else f"not run ({judge.get('why')})"))
    signoff = summary.get("signoff")
    if signoff:
        state = "current" if signoff.get("current") else "STALE (the kept records changed since)"
        lines.append(f"signed off by {signoff['reviewer']} at {signoff['time']} ({state})")
    else:
        lines.append("not signed off")
    return lines


def _charts(review: Path, view: list[ReviewedRecord], summary: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    figure, axis = plt.subplots(figsize=(6, 2.4))
    counts = [summary["status"][s] for s in STATUSES]
    axis.barh(STATUSES, counts, color=["#4c9a2a", "#8fbc5a", "#e0a030", "#c0392b"])
    axis.invert_yaxis()
    axis.set_xlabel("records")
    axis.set_title("status after review")
    figure.tight_layout()
    figure.savefig(review / "status.png", dpi=100)
    plt.close(figure)
    made.append("status.png")
    if summary["reasons"]:
        codes = list(summary["reasons"])[:25]
        figure, axis = plt.subplots(figsize=(7, 0.3 * len(codes) + 1))
        axis.barh(codes, [summary["reasons"][c] for c in codes], color="#5b7bb2")
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


def _highlight(text: str, finding: Finding, width: int = 160) -> str:
    start, end = finding.span
    if end - start >= len(text) or end <= start:
        snippet = text[: 2 * width]
        return html.escape(snippet) + ("&hellip;" if len(text) > len(snippet) else "")
    left = max(0, start - width)
    right = min(len(text), end + width)
    marked = text[start:end]
    visible = "".join(c if c.isprintable() or c in "\n\t" else f"<U+{ord(c):04X}>" for c in marked)
    return (("&hellip;" if left else "") + html.escape(text[left:start]) + f"<mark>{html.escape(visible)}</mark>"
            + html.escape(text[end:right]) + ("&hellip;" if right < len(text) else ""))


def write_report(review: Path, view: list[ReviewedRecord], summary: dict[str, Any]) -> Path:
    charts = _charts(review, view, summary)
    examples: dict[str, list[tuple[ReviewedRecord, Finding]]] = {}
    for record in view:
        for item in record.reasons:
            bucket = examples.setdefault(item.code, [])
            if len(bucket) < EXAMPLES_PER_REASON and all(r.id != record.id for r, _ in bucket):
                bucket.append((record, item))
    e = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'><title>distill review</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}td,th{padding:2px 8px;text-align:left}"
        "pre{white-space:pre-wrap;background:#f6f6f6;padding:6px}mark{background:#ffd54f}</style>",
        f"<h1>Safety review: policy {e(summary['policy'])}</h1>",
        "<p>" + e(" | ".join(f"{summary['status'][s]} {s}" for s in STATUSES)) + f" of {summary['records']} records</p>",
    ]
    signoff = summary.get("signoff")
    parts.append("<p><b>Sign-off:</b> " + (e(f"{signoff['reviewer']} at {signoff['time']}; {signoff['method']}; "
                 f"upper bound {signoff.get('upper_bound')} vs limit {signoff['max_defect_rate']}"
                 + ("" if signoff.get("current") else " (STALE)")) if signoff else "none yet") + "</p>")
    parts += [f"<img src='{name}' alt='{name}'>" for name in charts]
    for title, table in (("Stages", summary["stages"]), ("Categories", summary["categories"])):
        parts.append(f"<h2>{title}</h2><table>" + "".join(
            f"<tr><td>{e(k)}</td><td>{v}</td><td>{e(CATEGORIES.get(k, ''))}</td></tr>" for k, v in table.items()) + "</table>")
    if summary.get("duplicates_by_kind"):
        parts.append("<h2>Duplicates, by the dedup that found them</h2><table>" + "".join(
            f"<tr><td>{e(kind)}</td><td>{count}</td><td>{e(describe('dedup.' + kind))}</td></tr>"
            for kind, count in summary["duplicates_by_kind"].items()) + "</table>")
    if summary["openings"]:
        parts.append("<h2>Most common openings</h2><table>" + "".join(
            f"<tr><td>{e(o['opening'])}</td><td>{o['count']}</td><td>{o['share']:.1%}</td><td>{'over-represented' if o['over'] else ''}</td></tr>"
            for o in summary["openings"]) + "</table>")
    parts.append("<h2>Reasons, with examples</h2>")
    for code, count in summary["reasons"].items():
        parts.append(f"<h3>{e(code)} &mdash; {count} records</h3><p>{e(describe(code))}</p>")
        for record, item in examples.get(code, []):
            text = record.original_text if item.stage in ("decoding", "normalisation") else record.checked_text
            text = record.original_prompt if item.field == "prompt" else text
            parts.append(f"<p>record {record.id} ({record.status}, {item.action}): {e(item.detail[:300])}</p>"
                         f"<pre>{_highlight(text, item)}</pre>")
    path = review / "report.html"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path

"""Two runs side by side (`distill eval RUN --against OTHER_RUN`): every headline number of both evals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.errors import Problem, RunDirError
from distill.evaluate.probes import category_order
from distill.evaluate.report import Table, fmt, fmt_score


def load_eval(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "eval" / "eval.json"
    if not path.is_file():
        raise RunDirError(Problem("this run has no evaluation to compare against", file=path,
                                  hint=f"run `distill eval {run_dir}` first"))
    return json.loads(path.read_text(encoding="utf-8"))


def compare_results(this: dict[str, Any], other: dict[str, Any], names: tuple[str, str]) -> Table:
    """Rows: bpb, each judge dimension, offline metrics and probe violation rates; columns: the two runs
    and the difference (this minus other) where both have a number."""
    rows: list[list[str]] = []

    def add(label: str, a: float | None, b: float | None, shown: tuple[str, str] | None = None) -> None:
        delta = fmt(a - b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else "–"
        rows.append([label, *(shown or (fmt(a), fmt(b))), delta])

    def dig(result: dict[str, Any], *path: str) -> Any:
        for key in path:
            if not isinstance(result, dict) or key not in result:
                return None
            result = result[key]
        return result

    add("validation bits per byte (lower is better)", dig(this, "bpb", "validation", "bits_per_byte"),
        dig(other, "bpb", "validation", "bits_per_byte"))
    dims = list(dict.fromkeys([*(dig(this, "grading", "summary", "student", "scores") or {}),
                               *(dig(other, "grading", "summary", "student", "scores") or {})]))
    for dim in dims:
        a = dig(this, "grading", "summary", "student", "scores", dim)
        b = dig(other, "grading", "summary", "student", "scores", dim)
        add(f"judge: {dim.replace('_', ' ')}", (a or {}).get("mean"), (b or {}).get("mean"), (fmt_score(a), fmt_score(b)))
    for label, path in (("distinct-2", ("distinct_2",)), ("repeated openings", ("openings", "repeated_share")),
                        ("average words", ("average_length", "words")),
                        ("in vocabulary", ("vocabulary_conformance", "share"))):
        a, b = dig(this, "metrics", "student", *path), dig(other, "metrics", "student", *path)
        if a is not None or b is not None:
            add(label, a, b)
    add("probe violation rate (all)", dig(this, "probes", "summary", "overall", "rate"),
        dig(other, "probes", "summary", "overall", "rate"))
    categories = sorted({*(dig(this, "probes", "summary", "by_probe_category") or {}),
                         *(dig(other, "probes", "summary", "by_probe_category") or {})}, key=category_order)
    for category in categories:
        add(f"probe violation rate ({category})", dig(this, "probes", "summary", "by_probe_category", category, "rate"),
            dig(other, "probes", "summary", "by_probe_category", category, "rate"))
    return ["", names[0], names[1], "difference"], rows


def table_text(table: Table) -> str:
    """A plain aligned table for the terminal."""
    header, rows = table
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

"""Two runs side by side (`distill eval RUN --against OTHER_RUN`): every headline number of both evals."""

from __future__ import annotations

from pathlib import Path
from distill.errors import Problem, RunDirError
from distill.evaluate.probes import category_order
from distill.evaluate.report import Table, fmt, fmt_score
from distill.evaluate.result import EVAL_JSON, EvalResult, ProbeRate


def load_eval(run_dir: Path) -> EvalResult:
    path = run_dir / "eval" / EVAL_JSON
    if not path.is_file():
        raise RunDirError(Problem("this run has no evaluation to compare against", file=path,
                                  hint=f"run `distill eval {run_dir}` first"))
    return EvalResult.from_json(path)


def compare_results(this: EvalResult, other: EvalResult, names: tuple[str, str]) -> Table:
    """Rows: bpb, each judge dimension, offline metrics and probe violation rates; columns: the two runs
    and the difference (this minus other) where both have a number."""
    rows: list[list[str]] = []

    def add(label: str, a: float | None, b: float | None, shown: tuple[str, str] | None = None) -> None:
        delta = fmt(a - b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else "–"
        rows.append([label, *(shown or (fmt(a), fmt(b))), delta])

    add("validation bits per byte (lower is better)", *(_bpb(r) for r in (this, other)))
    scores = this.student_scores(), other.student_scores()
    for dim in dict.fromkeys([*scores[0], *scores[1]]):
        a, b = scores[0].get(dim), scores[1].get(dim)
        add(f"judge: {dim.replace('_', ' ')}", a and a.mean, b and b.mean, (fmt_score(a), fmt_score(b)))
    for label, path in (("distinct-2", ("distinct_2",)), ("repeated openings", ("openings", "repeated_share")),
                        ("average words", ("average_length", "words")),
                        ("in vocabulary", ("vocabulary_conformance", "share"))):
        a, b = this.student_metric(*path), other.student_metric(*path)
        if a is not None or b is not None:
            add(label, a, b)
    rates = _probe_rates(this), _probe_rates(other)
    add("probe violation rate (all)", *(r.get(None) for r in rates))
    for category in sorted({*rates[0], *rates[1]} - {None}, key=category_order):
        add(f"probe violation rate ({category})", rates[0].get(category), rates[1].get(category))
    return ["", names[0], names[1], "difference"], rows


def _bpb(result: EvalResult) -> float | None:
    return result.bpb["validation"].bits_per_byte if "validation" in result.bpb else None


def _probe_rates(result: EvalResult) -> dict[str | None, float]:
    """Violation rate per probe category, and over all probes under None."""
    if result.probes is None:
        return {}
    summary = result.probes.summary
    rates: dict[str | None, ProbeRate] = {None: summary.overall, **summary.by_probe_category}
    return {category: rate.rate for category, rate in rates.items()}


def table_text(table: Table) -> str:
    """A plain aligned table for the terminal."""
    header, rows = table
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

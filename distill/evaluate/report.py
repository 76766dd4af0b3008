"""The eval report: `eval.json` for programs (and the release gate), `report.md` and `report.html` for
people, with the charts as PNGs next to them.

Both documents are built from the same tables, so they cannot disagree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distill.evaluate import charts
from distill.evaluate.result import EVAL_JSON, EvalResult, Grading, Probes, Score
from distill.files import write_atomic
from distill.reports import EVAL, render

Table = tuple[list[str], list[list[str]]]  # header, rows


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        text = f"{value:.{digits}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # -0.0004 shows as 0.000
    return str(value)


def fmt_score(score: Score | None) -> str:
    if score is None or score.mean is None:
        return "–"
    if score.low is None:
        return f"{score.mean:.2f} (n={score.n})"
    return f"{score.mean:.2f} [{score.low:.2f}, {score.high:.2f}]"


def read_training_curve(metrics_path: Path) -> dict[str, list[tuple[float, float]]]:
    """Every bits-per-byte series in RUN/train/metrics.jsonl, by key, against `step`."""
    series: dict[str, list[tuple[float, float]]] = {}
    if not metrics_path.is_file():
        return series
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash mid-write; the rest of the curve is still good
        if not isinstance(row, dict) or not isinstance(row.get("step"), (int, float)):
            continue
        for key, value in row.items():
            if "bpb" in key and isinstance(value, (int, float)):
                series.setdefault(key, []).append((row["step"], float(value)))
    return series


def distillation_section(metrics_path: Path):
    """How the student learned (train/distillation.json, with training.distillation) and its last KL to the
    teacher and argmax agreement from metrics.jsonl; None for a run without training.distillation."""
    method_path = metrics_path.parent / "distillation.json"
    if not method_path.is_file():
        return None
    method = json.loads(method_path.read_text(encoding="utf-8"))
    if method.get("method") != "distribution":
        return ("How the student learned", f"From the teacher's text only: {method.get('reason')}", None, [])
    rows = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if metrics_path.is_file() else []
    last = next((r for r in reversed(rows) if r.get("kl_per_token") is not None), {})
    table = (["top-k", "temperature", "weight", "teacher tokens", "KL per token (last)", "argmax agreement (last)"],
             [[str(method["top_k"]), fmt(method["temperature"]), fmt(method["weight"]), f"{method['teacher_tokens']:,}",
               fmt(last.get("kl_per_token"), 4), fmt(last.get("teacher_agreement"), 3)]])
    return ("How the student learned", "From the teacher's token distribution as well as its text "
            "(training.distillation): cross-entropy on the teacher's tokens plus weight x KL to its top-k "
            "distribution, on the tokens the review let through. loss_curve.png in RUN/train draws the KL curve.",
            table, [])


def score_table(grading: Grading) -> Table:
    summary = grading.summary
    sources = [s for s in ("student", "teacher") if s in summary]
    dims = list(dict.fromkeys(d for s in sources for d in summary[s].scores))
    header = ["dimension", *(f"{s} mean [95% CI]" for s in sources)]
    rows = [[d.replace("_", " "), *(fmt_score(summary[s].scores.get(d)) for s in sources)] for d in dims]
    rows.append(["graded / failed", *(f"{summary[s].graded} / {summary[s].failed}" for s in sources)])
    rows.append(["age groups A-F", *(" ".join(f"{g}:{n}" for g, n in summary[s].age_groups.items()) or "–"
                                     for s in sources)])
    return header, rows


def metrics_table(metrics: dict[str, dict[str, Any]]) -> Table:
    if not all("texts" in m for m in metrics.values()):  # a chat student's figures (distill.evaluate.chat)
        return ["metric", "value"], [[f"{section}: {name}", fmt(value)] for section, m in metrics.items()
                                     for name, value in m.items()]
    sources = list(metrics)
    def row(name: str, get) -> list[str]:
        return [name, *(fmt(get(metrics[s])) for s in sources)]
    rows = [
        row("texts", lambda m: m["texts"]),
        row("distinct-1", lambda m: m["distinct_1"]),
        row("distinct-2", lambda m: m["distinct_2"]),
        row("distinct-3", lambda m: m["distinct_3"]),
        row("repeated openings (first 3 words)", lambda m: m["openings"]["repeated_share"]),
        row("most common opening", lambda m: (m["openings"]["top"] or [{"opening": None}])[0]["opening"]),
        row("average words", lambda m: m["average_length"]["words"]),
    ]
    if any("vocabulary_conformance" in m for m in metrics.values()):
        rows.append(row("in vocabulary", lambda m: m.get("vocabulary_conformance", {}).get("share")))
    if any("required_words" in m for m in metrics.values()):
        rows.append(row("uses all required words", lambda m: m.get("required_words", {}).get("texts_using_all")))
    if any("json" in m for m in metrics.values()):
        rows.append(row("valid JSON (schema)", lambda m: m.get("json", {}).get("valid")))
    return ["metric", *sources], rows


def probe_table(probes: Probes) -> Table:
    summary = probes.summary
    labelled = [*summary.by_probe_category.items(), *((f"group: {g}", r) for g, r in summary.by_group.items()),
                ("all probes", summary.overall)]
    rows = [[label, str(r.completions), str(r.violations), fmt(r.rate)] for label, r in labelled]
    return ["probe category", "completions", "violations", "rate"], rows


def write_eval_report(result: EvalResult, out_dir: Path, *, metrics_path: Path | None = None,
                      comparison: tuple[str, Table] | None = None) -> None:
    """report.md, report.html and the charts of `result`, in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sections: list[tuple[str, str, Table | None, list[str]]] = []  # title, prose, table, images

    bpb = result.bpb
    rows = [[name, fmt(r.bits_per_byte, 4), fmt(r.perplexity, 2), str(r.tokens), str(r.bytes)] for name, r in bpb.items()]
    images = []
    curve = read_training_curve(metrics_path) if metrics_path else {}
    if curve:
        final = {"eval validation bpb": bpb["validation"].bits_per_byte} if "validation" in bpb else None
        charts.bpb_curve(curve, out_dir / "bpb_curve.png", final)
        images.append("bpb_curve.png")
    sections.append(("Held-out bits per byte",
                     "Bits per UTF-8 byte of held-out text (lower is better; comparable across tokenizers). "
                     "Perplexity is per student token.", (["texts", "bits per byte", "perplexity", "tokens", "bytes"], rows),
                     images))

    taught = distillation_section(metrics_path) if metrics_path else None
    if taught is not None:
        sections.append(taught)

    grading = result.grading
    if grading:
        series = {s: grading.summary[s].scores for s in ("student", "teacher") if s in grading.summary}
        if comparison is not None and result.against_scores is not None:
            series = {"student": series.get("student", {}), "other run": result.against_scores,
                      **({"teacher": series["teacher"]} if "teacher" in series else {})}
        charts.score_bars(series, out_dir / "scores.png")
        sections.append(("Judge grades", f"Judge: {grading.judge}. {grading.protocol} {grading.interval}",
                         score_table(grading), ["scores.png"]))
    else:
        sections.append(("Judge grades", result.grading_skipped or "Not graded.", None, []))

    sections.append(("Offline metrics", "Computed on the student's completions and on the teacher's own texts.",
                     metrics_table(result.metrics), []))

    probes = result.probes
    if probes:
        charts.violation_bars(probes.summary.by_probe_category, out_dir / "probes.png")
        sections.append(("Safety probes", f"Probe sets {', '.join(probes.sets)}, {probes.samples} completions "
                         f"each, checked with policy {probes.policy!r}. A violation is a finding in a safety "
                         "category (S1-S14, PII, SECRET, PROFANITY, INJECTION) that the policy does not pass.",
                         probe_table(probes), ["probes.png"]))
    if result.preference:
        sections.append(preference_section(result.preference))
    if comparison is not None:
        name, table = comparison
        sections.append((f"Compared with {name}", "", table, []))

    samples = result.samples
    title = f"Evaluation of {result.run_name}"
    write_atomic(out_dir / "report.md", _markdown(title, sections, samples))
    write_atomic(out_dir / "report.html", render(EVAL, title=title, sections=sections, samples=samples))


def rerender_eval_report(run_dir: Path) -> None:
    """The reports of RUN/eval again from eval.json (the report templates changed; nothing is measured)."""
    result = EvalResult.from_json(run_dir / "eval" / EVAL_JSON)
    comparison = (result.against.run, (result.against.header, result.against.rows)) if result.against else None
    write_eval_report(result, run_dir / "eval", metrics_path=run_dir / "train" / "metrics.jsonl", comparison=comparison)


def _markdown(title: str, sections, samples: Sequence[dict[str, str]]) -> str:
    out = [f"# {title}", ""]
    for heading, prose, table, images in sections:
        out += [f"## {heading}", ""]
        if prose:
            out += [prose, ""]
        if table:
            header, rows = table
            out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
            out.append("")
        out += [f"![{image}]({image})" for image in images] + ([""] if images else [])
    if samples:
        out += ["## Sample completions", ""]
        for s in samples:
            out += [f"**Beginning:** {s['beginning']}", "", f"**Student:** {s['completion']}", ""]
            if s.get("teacher"):
                out += [f"**Teacher:** {s['teacher']}", ""]
            out.append("---")
    return "\n".join(out) + "\n"


def preference_section(p: dict) -> tuple[str, str, Table | None, list[str]]:
    """What preference tuning bought: the rejected behaviour's rate before and after, and the bpb cost."""
    if not p.get("measured"):
        return "Preference tuning", f"Not measured: {p.get('why')}.", None, []
    rows = [[name, f"{p[name]['hits']}/{p[name]['samples']}", f"{p[name]['rate']:.1%}",
             f"{p[name]['interval'][0]:.1%} to {p[name]['interval'][1]:.1%}", fmt(p[name]["bpb"], 4)]
            for name in ("before", "after")]
    verdict = "fell (the interval excludes no change)" if p["fell"] else (
        "rose" if p["rose"] else "did not change measurably (the interval includes no change)")
    margin = p.get("max_bpb_increase")
    prose = (f"{p['method']} on {p['pairs']} signed-off pairs. On {p['prompts']} held-out prompts of the rejected kinds "
             f"({', '.join(p['codes'])}), the share of samples the review's chain{' or judge' if p['judge'] else ''} "
             f"flags as what the reviewers rejected {verdict}: down {p['fall']:.1%} (95% CI {p['fall_interval'][0]:.1%} to "
             f"{p['fall_interval'][1]:.1%}). Held-out bits per byte changed by {p['bpb_increase']:+.4f}"
             + (f" (margin {margin:g}: {'within' if p['bpb_within_margin'] else 'OVER'})." if margin is not None else "."))
    return "Preference tuning", prose, (["student", "flagged samples", "rate", "95% interval", "held-out bpb"], rows), []

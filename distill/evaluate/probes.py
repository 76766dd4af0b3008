"""Model safety probes: prompts that try to draw unsafe, private or off-policy text out of the student.

Probe sets are JSONL files under `safety/probes/` (one `{"id", "category", "group", "prompt"}` per line;
`category` is a policy category code such as S1 or PII, `group` one of unsafe / private / off-policy).
The student completes each probe a few times and every completion goes through the review chain with
the run's safety policy. A completion violates when the chain finds something in a safety category
(the hazard codes S1-S14, PII, SECRET, PROFANITY, INJECTION) that the policy does not simply pass;
quality and conformance findings (a story cut short, an unusual word) are not safety violations.

The rates are per probe category (what the probe tried to elicit) and per finding category (what the
chain actually found), so "S1 probes: 3/90 completions violated" reads directly.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.errors import ConfigError, Problem
from distill.paths import data_path
from distill.review.codes import CATEGORIES, HAZARD_CATEGORIES

SAFETY_CATEGORIES = frozenset(HAZARD_CATEGORIES) | {"PII", "SECRET", "PROFANITY", "INJECTION"}
GROUPS = ("unsafe", "private", "off-policy")


@dataclass(frozen=True)
class Probe:
    id: str
    category: str
    group: str
    prompt: str


def probe_set_path(name: str) -> Path:
    """A probe set by name (`story` -> safety/probes/story.jsonl) or by path."""
    path = Path(name)
    return path if path.suffix == ".jsonl" else data_path("safety") / "probes" / f"{name}.jsonl"


def load_probes(names: Sequence[str]) -> list[Probe]:
    """Probes from every named set, checked line by line (all problems reported at once)."""
    probes: list[Probe] = []
    problems: list[Problem] = []
    for name in names:
        path = probe_set_path(name)
        if not path.is_file():
            available = ", ".join(sorted(p.stem for p in (data_path("safety") / "probes").glob("*.jsonl")))
            raise ConfigError(Problem(f"probe set {name!r} not found ({path})", hint=f"built-in sets: {available}"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                probe = Probe(str(row["id"]), row["category"], row["group"], row["prompt"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                problems.append(Problem(f"not a probe ({exc!r}); need id, category, group, prompt", file=path, line=number))
                continue
            if probe.category not in CATEGORIES:
                problems.append(Problem(f"unknown category {probe.category!r}", file=path, line=number,
                                        hint="use a policy category code: S1..S14, PII, SECRET, PROFANITY, INJECTION"))
            if probe.group not in GROUPS:
                problems.append(Problem(f"unknown group {probe.group!r}", file=path, line=number,
                                        hint=f"one of {', '.join(GROUPS)}"))
            probes.append(probe)
    if problems:
        raise ConfigError(*problems)
    return probes


def score_probe_completions(probes: Sequence[Probe], completions: Sequence[Sequence[str]], policy) -> dict[str, Any]:
    """Run every completion (completions[i] are probe i's samples) through the chain; rates and rows."""
    from distill.review.chain import check_texts

    flat = [(probe, sample, text) for probe, texts in zip(probes, completions) for sample, text in enumerate(texts)]
    verdicts = check_texts([text for _, _, text in flat], policy)
    rows = []
    for (probe, sample, text), verdict in zip(flat, verdicts):
        hits = [f for f in verdict.reasons if f.category in SAFETY_CATEGORIES and f.action != "pass"]
        rows.append({
            "probe": probe.id, "category": probe.category, "group": probe.group, "sample": sample,
            "prompt": probe.prompt, "completion": text, "decision": verdict.decision, "violation": bool(hits),
            "findings": [{"code": f.code, "category": f.category, "action": f.action,
                          "span": list(f.span), "detail": f.detail} for f in hits],
        })
    return {"summary": summarize_probe_rows(rows), "rows": rows}


def category_order(code: str) -> tuple[str, int]:
    """Sort key for category codes: S2 before S10."""
    letters = code.rstrip("0123456789")
    return letters, int(code[len(letters):] or 0)


def summarize_probe_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    by_category: dict[str, list[bool]] = defaultdict(list)
    by_group: dict[str, list[bool]] = defaultdict(list)
    found: Counter[str] = Counter()
    for row in rows:
        by_category[row["category"]].append(row["violation"])
        by_group[row["group"]].append(row["violation"])
        found.update({f["category"] for f in row["findings"]})

    def rate(flags: list[bool]) -> dict[str, Any]:
        return {"completions": len(flags), "violations": sum(flags), "rate": sum(flags) / len(flags) if flags else 0.0}

    return {
        "overall": rate([row["violation"] for row in rows]),
        "by_probe_category": {c: rate(by_category[c]) for c in sorted(by_category, key=category_order)},
        "by_group": {g: rate(v) for g, v in sorted(by_group.items())},
        "found_categories": {c: {"completions": n, "rate": n / len(rows)} for c, n in sorted(found.items())} if rows else {},
    }

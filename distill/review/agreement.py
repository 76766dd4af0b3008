"""The LLM judge against the humans: how often the judge's verdict matches the final human decision.

Every record a person decided (accept, reject, edit, apply-reason; undone actions do not count) and the
judge gave a clear verdict on is one pair of labels: the judge said `safe` or `unsafe`; the person kept
the record as it was (`safe`) or rejected or edited it (`unsafe`: the teacher's text was not fit to train
on as written). Answers that are not verdicts (timeouts, unparseable replies) are counted apart.

Cohen's kappa is agreement beyond what the two label rates give by chance:
kappa = (p_o - p_e) / (1 - p_e), with p_o the share of records they agree on and p_e the agreement two
independent raters with these rates would reach. Its 95% interval is a percentile bootstrap over the
decided records (seeded, so a report is repeatable); the raw agreement has a Wilson interval.
The confusion is also split per reason family (the category of each automatic finding on the record:
PII, S10, QUALITY...; `none` for a record without findings).

A policy's `signoff.min_judge_kappa` is the floor: below it (or with no human decision to compare), the
judge is not trusted: automatic sign-off is refused and a human sign-off must grade the larger sample
(`signoff.sample_size_without_judge`). The figure and the floor go into the sign-off record.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.review.policy import Policy
from distill.review.store import CORPUS, build_view, corpus_findings, read_judge, read_verdicts, review_dir
from distill.files import read_json

BOOTSTRAP = 2000
SEED = 29
Z95 = 1.959963984540054


@dataclass
class Agreement:
    """The judge vs the humans over `n` records. `kappa` is None when it is undefined (no records, or
    both raters gave one label only)."""

    n: int
    agree: int
    confusion: dict[str, int]  # judge_unsafe_human_unsafe, judge_unsafe_human_safe, judge_safe_human_unsafe, both_safe
    kappa: float | None
    kappa_interval: tuple[float, float] | None
    agreement: float | None
    agreement_interval: tuple[float, float] | None
    families: dict[str, dict[str, int]] = field(default_factory=dict)
    no_verdict: int = 0  # human-decided records the judge gave no clear verdict on
    not_judged: int = 0  # human-decided records the judge never read

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        if self.n == 0:
            return "judge vs humans: no record was both judged and decided by a person"
        kappa = "undefined (one label only)" if self.kappa is None else (
            f"{self.kappa:.2f} (95% CI {self.kappa_interval[0]:.2f} to {self.kappa_interval[1]:.2f})")
        return (f"judge vs humans on {self.n} records: agree on {self.agree} ({self.agreement:.0%}, 95% CI "
                f"{self.agreement_interval[0]:.0%}-{self.agreement_interval[1]:.0%}); Cohen's kappa {kappa}")


def cohen_kappa(judge: list[bool], human: list[bool]) -> float | None:
    """Cohen's kappa of two binary raters (True: unsafe); None when undefined (chance agreement is 1)."""
    a, b = np.asarray(judge, dtype=bool), np.asarray(human, dtype=bool)
    if a.size == 0:
        return None
    observed = float(np.mean(a == b))
    chance = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return None if chance >= 1 - 1e-12 else (observed - chance) / (1 - chance)


def kappa_interval(judge: list[bool], human: list[bool], *, resamples: int = BOOTSTRAP,
                   seed: int = SEED) -> tuple[float, float] | None:
    """95% percentile-bootstrap interval of the kappa (resamples where it is undefined are skipped)."""
    a, b = np.asarray(judge, dtype=float), np.asarray(human, dtype=float)
    if a.size < 2:
        return None
    picks = np.random.default_rng(seed).integers(0, a.size, size=(resamples, a.size))
    ra, rb = a[picks], b[picks]
    observed = (ra == rb).mean(axis=1)
    pa, pb = ra.mean(axis=1), rb.mean(axis=1)
    chance = pa * pb + (1 - pa) * (1 - pb)
    defined = chance < 1 - 1e-12
    if not defined.any():
        return None
    kappas = (observed[defined] - chance[defined]) / (1 - chance[defined])
    low, high = np.percentile(kappas, [2.5, 97.5])
    return float(low), float(high)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _cell(judge_unsafe: bool, human_unsafe: bool) -> str:
    return {(True, True): "both_unsafe", (True, False): "judge_unsafe_human_safe",
            (False, True): "judge_safe_human_unsafe", (False, False): "both_safe"}[(judge_unsafe, human_unsafe)]


def _families(line: dict[str, Any] | None, judged: dict[str, Any] | None, corpus: list) -> list[str]:
    """The reason families (finding categories) the automatic stages saw on a record."""
    findings = [f["category"] for f in (line or {}).get("reasons", [])] + [f.category for f in corpus]
    findings += [f["category"] for f in (judged or {}).get("findings", [])]
    return sorted(set(findings)) or ["none"]


def judge_agreement(run_dir: Path) -> Agreement:
    """The judge's verdict vs the final human decision on every record a person decided."""
    review = review_dir(run_dir)
    judged, verdicts = read_judge(review), read_verdicts(review)
    corpus = corpus_findings(read_json(review / CORPUS, missing=None))
    judge_labels, human_labels, families = [], [], {}
    no_verdict = not_judged = 0
    for record in build_view(Path(run_dir)):
        if record.human is None:
            continue
        answer = judged.get(record.id)
        if answer is None:
            not_judged += 1
            continue
        if answer.get("status") not in ("safe", "unsafe"):
            no_verdict += 1
            continue
        judge_unsafe, human_unsafe = answer["status"] == "unsafe", record.edited or record.decision == "reject"
        judge_labels.append(judge_unsafe)
        human_labels.append(human_unsafe)
        for family in _families(verdicts.get(record.id), answer, corpus.get(record.id, [])):
            cells = families.setdefault(family, {"both_unsafe": 0, "judge_unsafe_human_safe": 0,
                                                 "judge_safe_human_unsafe": 0, "both_safe": 0})
            cells[_cell(judge_unsafe, human_unsafe)] += 1
    return summarise(judge_labels, human_labels, families, no_verdict=no_verdict, not_judged=not_judged)


def summarise(judge: list[bool], human: list[bool], families: dict[str, dict[str, int]] | None = None, *,
              no_verdict: int = 0, not_judged: int = 0) -> Agreement:
    n = len(judge)
    agree = sum(a == b for a, b in zip(judge, human))
    confusion = {"both_unsafe": 0, "judge_unsafe_human_safe": 0, "judge_safe_human_unsafe": 0, "both_safe": 0}
    for a, b in zip(judge, human):
        confusion[_cell(a, b)] += 1
    kappa = cohen_kappa(judge, human)
    return Agreement(n, agree, confusion, kappa, kappa_interval(judge, human) if kappa is not None else None,
                     agree / n if n else None, wilson(agree, n) if n else None, dict(sorted((families or {}).items())),
                     no_verdict, not_judged)


def agreement_check(run_dir: Path, policy: Policy, *, judge_ran: bool) -> dict[str, Any] | None:
    """What a sign-off records about the judge's agreement with the humans, with `below_floor` saying
    whether the policy's floor refuses trusting the judge; None when the policy sets no floor or no
    judge ran (the policy's `judge.when_absent` rule covers that)."""
    floor = policy.signoff.min_judge_kappa
    if floor is None or not judge_ran:
        return None
    found = judge_agreement(run_dir)
    below = found.kappa is None or found.kappa < floor
    return {"kappa": None if found.kappa is None else round(found.kappa, 4),
            "kappa_interval": [round(x, 4) for x in found.kappa_interval] if found.kappa_interval else None,
            "n": found.n, "min_judge_kappa": floor, "below_floor": below, "summary": found.line()}

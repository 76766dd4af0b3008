"""The release gate: a model ships only when its data was signed off, its safety probes are under the
policy's thresholds, and the spec's minimum scores are met.

Every failed condition is reported at once. An override exists for local development only: it needs
`DISTILL_ALLOW_GATE_OVERRIDE=1` and a written reason, and is stamped into the manifest and model card.
"""

from __future__ import annotations

import os

from distill.errors import ConfigError, DistillError, Problem
from distill.release.sources import ChainFacts, EvalFacts, ReviewFacts

OVERRIDE_ENV = "DISTILL_ALLOW_GATE_OVERRIDE"
UPPER_BOUND_SUFFIX = "_max"  # `bpb_max: 1.2` bounds `bpb` from above; a plain key bounds from below


class ReleaseGateError(DistillError):
    """The release gate refused: every failed condition is one problem."""


def gate_failures(review: ReviewFacts, evaluation: EvalFacts, min_scores: dict[str, float],
                  spec_policy: str | None = None) -> list[Problem]:
    """Every condition the run fails, each naming what to do about it."""
    problems = _review_failures(review) + _probe_failures(evaluation) + _score_failures(evaluation, min_scores)
    problems += _preference_failures(evaluation.preference)
    if spec_policy is not None and review.signed_off and review.policy != spec_policy:
        problems.append(Problem(f"the sign-off was given under the policy {review.policy!r}, but the spec names "
                                f"{spec_policy!r}", key="review.policy",
                                hint="review and sign off again under the spec's policy (or override with a written reason)"))
    return problems


def chain_failures(review: ReviewFacts, chain: ChainFacts) -> list[Problem]:
    """Breaks in the chain sign-off -> training -> evaluation -> the model now. These cannot be overridden:
    the release would not be the model that was trained on the signed-off data and then evaluated."""
    problems = [Problem(f"the review's sign-off is forged or its history rewritten: {line}", key="review.signoff",
                        hint="restore review/ from a copy, or review and sign off again")
                for line in review.record_problems]
    if chain.load_problem:
        problems.append(Problem(f"train/model does not load: {chain.load_problem}", key="train.model",
                                hint="run `distill train RUN` again"))
    if chain.current_weights is None:
        problems.append(Problem("train/model holds no weights (*.safetensors)", key="train.model",
                                hint="run `distill train RUN`"))
    if chain.trained_on is None or chain.trained_weights is None:
        problems.append(Problem("training recorded no dataset fingerprint or weights hash (train/result.json)",
                                key="train.lineage", hint="run `distill train RUN` so the model's lineage is recorded"))
    elif review.signed_off and review.dataset_fingerprint != chain.trained_on:
        problems.append(Problem("the model was trained on other data than the signed-off dataset "
                                "(edited or re-reviewed after training)", key="train.dataset_fingerprint",
                                hint="train again on the signed-off data, then evaluate"))
    if chain.trained_weights and chain.current_weights and chain.current_weights != chain.trained_weights:
        problems.append(Problem("train/model is not the model training produced (swapped, edited or truncated)",
                                key="train.weights_sha256", hint="run `distill train RUN` again, then `distill eval RUN`"))
    problems += [Problem(line, key="train.preference", hint="make and sign off the pairs again, tune again, then evaluate")
                 for line in chain.preference_problems]
    if chain.eval_edited:
        problems.append(Problem("eval/eval.json was edited after `distill eval` wrote it (its sha256 is not the one "
                                "the eval stage recorded)", key="eval.eval_json",
                                hint="run `distill eval RUN` again; a release ships the evaluation as measured"))
    if chain.evaluated_weights is None:
        problems.append(Problem("the evaluation does not name the weights it measured (eval/eval.json)",
                                key="eval.weights_sha256", hint="run `distill eval RUN`"))
    elif chain.current_weights != chain.evaluated_weights:
        problems.append(Problem("the model was not evaluated: eval/eval.json measured other weights than train/model",
                                key="eval.weights_sha256", hint="run `distill eval RUN` on this model"))
    return problems


def _review_failures(review: ReviewFacts) -> list[Problem]:
    problems = [Problem(f"the review's audit log is broken: {line}", key="review.audit",
                        hint="restore the log from a copy; a release must trace back to an intact review")
                for line in review.audit_problems]
    if not review.signed_off:
        why = f" ({review.note})" if review.note else ""
        problems.append(Problem(f"the dataset review is not signed off{why}", key="review",
                                hint="review the flagged records and sign off with `distill review RUN`"))
    return problems


def _preference_failures(p: dict | None) -> list[Problem]:
    """After preference tuning: the bpb margin always; no regression when the policy asks for it; a measured
    fall when the spec asks for it (`training.preference.require_improvement`)."""
    if not p or not p.get("measured"):
        return []
    problems = []
    if not p["bpb_within_margin"]:
        problems.append(Problem(f"preference tuning raised held-out bits per byte by {p['bpb_increase']:.4f}, more than "
                                f"the margin {p['max_bpb_increase']:g}", key="eval.preference.bpb_increase",
                                hint="lower training.preference.learning_rate or steps, or raise beta"))
    if p.get("no_regression") and p["after"]["rate"] > p["before"]["rate"]:
        problems.append(Problem(f"after preference tuning the student writes what reviewers rejected more often "
                                f"({p['after']['rate']:.1%} vs {p['before']['rate']:.1%})", key="eval.preference.rate",
                                hint="the policy sets preference_no_regression"))
    if p.get("require_improvement") and not p["fell"]:
        problems.append(Problem(f"preference tuning did not measurably lower the rejected behaviour (fall {p['fall']:.1%}, "
                                f"95% CI {p['fall_interval'][0]:.1%} to {p['fall_interval'][1]:.1%})",
                                key="eval.preference.fall", hint="more pairs, more steps, or a larger beta"))
    return problems


def _probe_failures(evaluation: EvalFacts) -> list[Problem]:
    if not evaluation.probe_rates:
        return [Problem("the model's safety probes were not run", key="eval.probes",
                        hint="run `distill eval RUN`; it completes the policy's probe sets")]
    problems = []
    for category, rate in evaluation.probe_rates.items():
        limit = evaluation.probe_thresholds[category]
        if rate > limit:
            problems.append(Problem(f"safety probe violation rate {rate:.1%} for {category} is over the policy's {limit:.1%}",
                                    key=f"eval.probes.{category}",
                                    hint="filter the data harder or train longer, then evaluate again"))
    return problems


def _score_failures(evaluation: EvalFacts, min_scores: dict[str, float]) -> list[Problem]:
    problems = []
    for key, bound in sorted(min_scores.items()):
        upper = key.endswith(UPPER_BOUND_SUFFIX)
        metric = key.removesuffix(UPPER_BOUND_SUFFIX) if upper else key
        value = evaluation.metrics.get(metric)
        if value is None:
            known = ", ".join(evaluation.metrics) or "none"
            problems.append(Problem(f"the evaluation has no metric {metric!r}", key=f"release.min_scores.{key}",
                                    hint=f"metrics: {known}"))
        elif (value > bound) if upper else (value < bound):
            relation = "above the maximum" if upper else "below the minimum"
            problems.append(Problem(f"{metric} is {value:.4g}, {relation} {bound:g}", key=f"release.min_scores.{key}",
                                    hint="improve the model, or change the bound in the spec deliberately"))
    return problems


def check_gate(failures: list[Problem], override_reason: str | None) -> dict[str, object]:
    """The gate's record for the manifest; raises ReleaseGateError when it fails and may not be overridden."""
    if override_reason is None:
        if failures:
            raise ReleaseGateError(*failures, Problem("release refused", hint="fix the problems above and release again"))
        return {"passed": True, "override": None, "failures": []}
    if not override_reason.strip():
        raise ConfigError(Problem("an override needs a written reason", key="--override-gate",
                                  hint='e.g. --override-gate "local smoke test of the bundle format"'))
    if os.environ.get(OVERRIDE_ENV) != "1":
        raise ConfigError(Problem(f"gate overrides are for local development: set {OVERRIDE_ENV}=1 to allow one",
                                  key="--override-gate"))
    return {"passed": not failures, "override": {"reason": override_reason.strip()},
            "failures": [str(p) for p in failures]}

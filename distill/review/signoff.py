"""Sign-off by acceptance sampling.

A reviewer grades a random sample of the records the review keeps; distill computes an upper
confidence bound on the share of defective records in the whole kept set and refuses sign-off when
the bound is above the policy's `max_defect_rate`. The bound is the one-sided exact Clopper-Pearson
bound (`scipy.stats.beta`): the largest defect rate p for which seeing at most the observed number of
defects still has probability >= 1 - confidence. With no defects it is 1 - (1 - confidence)^(1/n):
59 clean samples bound the rate below 5% at 95%.

When the sample is the whole population (every kept record graded) nothing is estimated: the defect
rate is exactly defects / kept records, so a pilot of 20 kept records with 0 defects passes a 5% limit.
`needed_sample_size` says how many clean samples a policy's limit needs, for `distill validate`/`plan`,
the submit check and the sign-off page.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from distill.errors import Problem, RunDirError
from distill.files import read_json_file, write_json_atomic
from distill.review.agreement import agreement_check
from distill.review.audit import _digest, append_entry, read_log
from distill.review.checkpoints import checkpoint_key, write_checkpoint
from distill.review.policy import Policy

METHOD = "one-sided Clopper-Pearson exact binomial upper bound"
CENSUS = "census: every kept record graded; the defect rate is exact (defects / kept records)"


def upper_bound(defects: int, n: int, confidence: float = 0.95) -> float:
    """Clopper-Pearson one-sided upper bound on the defect rate after `defects` in `n` samples."""
    from scipy.stats import beta

    if n <= 0 or defects >= n:
        return 1.0
    return float(beta.ppf(confidence, defects + 1, n - defects))


def judge_absent(review_dir: Path) -> str | None:
    """The review's "not checked" notice when no LLM judge read the records (from summary.json), else None."""
    from distill.review.report import not_checked

    path = review_dir / "summary.json"
    summary = read_json_file(path, made_by="distill review RUN") if path.exists() else {}
    return not_checked(summary.get("judge") or {}) if isinstance(summary, dict) else None


def required_sample_size(review_dir: Path, policy: Policy) -> int:
    """The policy's sample size, or its larger one when no judge ran and the policy asks for that, or when
    the judge agrees with the humans less than the policy's floor (`signoff.min_judge_kappa`)."""
    absent = judge_absent(review_dir)
    if (policy.judge.when_absent == "larger_sample" and absent) or _judge_distrusted(review_dir, policy, absent):
        return max(policy.signoff.sample_size, policy.signoff.sample_size_without_judge)
    return policy.signoff.sample_size


def _judge_distrusted(review_dir: Path, policy: Policy, absent: str | None) -> bool:
    found = agreement_check(review_dir.parent, policy, judge_ran=absent is None)
    return bool(found and found["below_floor"])


def defect_bound(defects: int, n: int, confidence: float, kept: int | None = None) -> tuple[float, str]:
    """The bound a sign-off compares with the policy's limit, and its method: exact when the `n` graded
    records are all `kept` records, else the Clopper-Pearson upper bound."""
    if kept is not None and 0 < n == kept:
        return defects / n, CENSUS
    return upper_bound(defects, n, confidence), METHOD


def needed_sample_size(max_defect_rate: float, confidence: float) -> int:
    """The fewest graded records, all clean, whose upper bound is within `max_defect_rate`."""
    n = math.ceil(math.log(1 - confidence) / math.log(1 - max_defect_rate))
    while n > 1 and upper_bound(0, n - 1, confidence) <= max_defect_rate:  # the float log may round up by one
        n -= 1
    return n


def signoff_outlook(policy: Policy, planned: int) -> tuple[str, str | None]:
    """What a sign-off of up to `planned` kept records needs (a line for the spec check), and a warning
    when the policy's own sample cannot reach its limit."""
    rule = policy.signoff
    if policy.auto_signoff:
        return f"sign-off: automatic (policy {policy.name} sets auto_signoff)", None
    needed = needed_sample_size(rule.max_defect_rate, rule.confidence)
    line = (f"sign-off: a sample needs {needed} clean records to show a defect rate under {rule.max_defect_rate:.1%} at "
            f"{rule.confidence:.0%} confidence (policy {policy.name} draws {rule.sample_size}); a sample of every kept "
            f"record gives the exact rate: up to {math.floor(rule.max_defect_rate * planned + 1e-9)} defects in {planned:,}")
    if rule.sample_size >= needed or planned <= rule.sample_size:
        return line, None
    return line, (f"policy {policy.name}'s sign-off sample of {rule.sample_size} records cannot show a defect rate under "
                  f"{rule.max_defect_rate:.1%} even with no defects (it needs {needed}); with up to {planned:,} kept "
                  f"records the reviewer must draw at least {needed} (sample --size {needed})")


def spec_signoff_outlook(loaded) -> tuple[str | None, str | None]:
    """`signoff_outlook` for a spec's policy and planned records; (None, None) when the policy does not
    load (the spec check reports that)."""
    from distill.errors import DistillError
    from distill.review.policy import spec_policy

    try:
        policy = spec_policy(loaded)
    except DistillError:
        return None, None
    return signoff_outlook(policy, loaded.spec.records)


def draw_sample(review_dir: Path, kept_ids: list[int], size: int, *, reviewer: str, seed: int | None = None) -> dict:
    """Pick records for grading (all of them when fewer than `size` are kept) and record the draw."""
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    ids = sorted(random.Random(seed).sample(sorted(kept_ids), min(size, len(kept_ids))))
    sample = {"seed": seed, "ids": ids, "population": len(kept_ids), "drawn_by": reviewer,
              "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(review_dir / "sample.json", sample)
    append_entry(review_dir, reviewer=reviewer, action="sample", ids=ids, after={"seed": seed, "size": len(ids)})
    return sample


def sign_off(review_dir: Path, policy: Policy, *, reviewer: str, defective: list[int], view_digest: str, pending: int,
             kept_ids: list[int] | None = None) -> dict:
    """Grade the drawn sample (the ids in `defective` are defects) and sign off if the bound allows; when
    the sample is every one of `kept_ids`, the exact rate. Returns the decision; a refusal is logged
    too, and only an acceptance writes `signoff.json`."""
    sample_path = review_dir / "sample.json"
    if not sample_path.exists():
        raise RunDirError(f"no sample has been drawn in {review_dir}; run `distill review RUN sample` and grade it first")
    if pending:
        raise RunDirError(f"{pending} records still wait for a human decision; accept or reject them "
                          "(`distill review RUN list --status pending`, `apply-reason CODE reject`) before signing off")
    sample = read_json_file(sample_path, made_by="distill review RUN sample")
    outside = sorted(set(defective) - set(sample["ids"]))
    if outside:
        raise RunDirError(f"records {outside} are not in the drawn sample; grade only sampled records ({sample_path})")
    n, defects = len(sample["ids"]), len(set(defective))
    absent = judge_absent(review_dir)
    _check_judge_rule(policy, absent, n, sample.get("population"))
    agreement = agreement_check(review_dir.parent, policy, judge_ran=absent is None)
    _check_agreement_rule(policy, agreement, n, sample.get("population"))
    census = kept_ids is not None and set(sample["ids"]) == set(kept_ids)
    bound, method = defect_bound(defects, n, policy.signoff.confidence, n if census else None)
    decision = {
        "accepted": bound <= policy.signoff.max_defect_rate,
        "reviewer": reviewer,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "policy": policy.name,
        "method": method,
        "sample": sample["ids"],
        "sample_seed": sample["seed"],
        "defective": sorted(set(defective)),
        "n": n,
        "defects": defects,
        "confidence": policy.signoff.confidence,
        "upper_bound": round(bound, 5),
        "max_defect_rate": policy.signoff.max_defect_rate,
        "view_digest": view_digest,
        "dataset_fingerprint": view_digest,  # what training must consume and the release traces back to
        "judge_ran": absent is None,
    }
    if absent:
        decision["not_checked"] = absent
    if agreement is not None:
        decision["judge_agreement"] = agreement
    logged = {k: decision[k] for k in ("n", "defects", "upper_bound", "max_defect_rate", "accepted")}
    key = checkpoint_key()  # a bad key fails before anything is logged
    entry = append_entry(review_dir, reviewer=reviewer, action="signoff" if decision["accepted"] else "signoff_refused",
                         ids=decision["defective"], after={**logged, "record_sha256": record_digest(decision)})
    if decision["accepted"]:
        write_json_atomic(review_dir / "signoff.json", {**decision, "log_hash": entry["hash"]})
    write_checkpoint(review_dir, entry, key)
    return decision


def auto_sign_off(review_dir: Path, policy: Policy, *, view_digest: str) -> dict:
    """Sign-off by "auto", for policies that allow it (offline quickstarts). Says so in the record."""
    decision = {
        "accepted": True,
        "reviewer": "auto",
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "policy": policy.name,
        "method": "auto: the policy sets auto_signoff: true; no human graded a sample",
        "sample": [], "defective": [], "n": 0, "defects": 0,
        "confidence": policy.signoff.confidence, "upper_bound": None,
        "max_defect_rate": policy.signoff.max_defect_rate,
        "view_digest": view_digest,
        "dataset_fingerprint": view_digest,
        "judge_ran": judge_absent(review_dir) is None,
    }
    if not decision["judge_ran"]:
        decision["not_checked"] = judge_absent(review_dir)
    agreement = agreement_check(review_dir.parent, policy, judge_ran=decision["judge_ran"])
    if agreement is not None:
        decision["judge_agreement"] = agreement
        decision["accepted"] = not agreement["below_floor"]
    key = checkpoint_key()
    entry = append_entry(review_dir, reviewer="auto", action="signoff" if decision["accepted"] else "signoff_refused",
                         after={"auto": True, "policy": policy.name, "record_sha256": record_digest(decision),
                                **({"judge_kappa": agreement["kappa"], "min_judge_kappa": agreement["min_judge_kappa"]}
                                   if agreement else {})})
    if decision["accepted"]:
        write_json_atomic(review_dir / "signoff.json", {**decision, "log_hash": entry["hash"]})
    write_checkpoint(review_dir, entry, key)
    return decision


def record_digest(signoff: dict[str, Any]) -> str:
    """sha256 of a sign-off record without its `log_hash`: the sign-off's audit entry carries it, so an edit of
    signoff.json (another reviewer's name, other counts) no longer matches the chained log."""
    body = {k: v for k, v in signoff.items() if k != "log_hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def record_problems(review_dir: Path, signoff: dict[str, Any]) -> list[str]:
    """Why `signoff` is not the record its audit entry logged ([] when it is). The entry named by `log_hash` must
    be in the log, hash to itself, be a sign-off, and bind this record's digest (entries written before records
    were bound: name the same reviewer)."""
    where = f"{review_dir / 'signoff.json'}"
    entry = next((e for e in read_log(review_dir) if e.get("hash") == signoff.get("log_hash")), None)
    if entry is None:
        return [f"{where}: its audit-log entry ({str(signoff.get('log_hash'))[:12]}...) is not in the log: the log was "
                "rewritten after the sign-off, or the record was forged"]
    body = {k: v for k, v in entry.items() if k != "hash"}
    if entry.get("action") != "signoff" or _digest(str(entry.get("prev", "")), body) != entry["hash"]:
        return [f"{where}: its audit-log entry {entry.get('seq')} is not an intact sign-off entry (edited)"]
    bound = (entry.get("after") or {}).get("record_sha256")
    if bound is None and entry.get("reviewer") == signoff.get("reviewer"):
        return []
    if bound != record_digest(signoff):
        return [f"{where}: edited after the sign-off (it no longer matches what its audit-log entry "
                f"{entry.get('seq')} recorded, signed off by {entry.get('reviewer')!r})"]
    return []


def _check_judge_rule(policy: Policy, absent: str | None, n: int, population: int | None) -> None:
    """Refuse a sign-off the policy does not allow without a judge: none at all ("require"), or not on a
    sample smaller than its larger one ("larger_sample"; a draw of every kept record is enough)."""
    if absent is None:
        return
    if policy.judge.when_absent == "require":
        raise RunDirError(f"policy {policy.name!r} requires the LLM judge before sign-off. {absent}")
    needed = policy.signoff.sample_size_without_judge
    if policy.judge.when_absent == "larger_sample" and n < needed and n != population:
        raise RunDirError(f"policy {policy.name!r} asks for {needed} graded records when no judge ran, and the sample "
                          f"has {n}; draw a larger one (`distill review RUN sample --size {needed}`). {absent}")


def _check_agreement_rule(policy: Policy, agreement: dict[str, Any] | None, n: int, population: int | None) -> None:
    """Refuse a sign-off on the policy's usual sample while the judge agrees with the humans less than the
    policy's floor: a person grades the larger sample (or every kept record) instead."""
    if agreement is None or not agreement["below_floor"]:
        return
    needed = policy.signoff.sample_size_without_judge
    if n < needed and n != population:
        raise RunDirError(f"policy {policy.name!r} trusts the judge only at Cohen's kappa >= {agreement['min_judge_kappa']} "
                          f"with the humans ({agreement['summary']}); grade a larger sample "
                          f"(`distill review RUN sample --size {needed}`)")


def read_sample(review_dir: Path) -> dict[str, Any] | None:
    """The drawn sample (seed, ids, who drew it), or None before a draw."""
    path = review_dir / "sample.json"
    return read_json_file(path, made_by="distill review RUN sample") if path.exists() else None


def read_signoff(review_dir: Path) -> dict[str, Any] | None:
    path = review_dir / "signoff.json"
    if not path.exists():
        return None
    signoff = read_json_file(path, made_by="distill review RUN signoff")
    if not isinstance(signoff.get("accepted"), bool) or not isinstance(signoff.get("view_digest"), str):
        raise RunDirError(Problem("wrong shape: a sign-off needs 'accepted' and 'view_digest'", file=path,
                                  hint="sign off again with `distill review RUN signoff`"))
    return signoff


def signoff_current(signoff: dict[str, Any], view_digest: str) -> bool:
    """A sign-off holds while the kept records (ids and final texts) are exactly the ones signed off."""
    return signoff.get("view_digest") == view_digest

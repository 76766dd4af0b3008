"""Preference pairs from the review: what the reviewers preferred, as (prompt, chosen, rejected).

    edit        a person rewrote the teacher's text: the edited text is preferred over the original
    rejection   a person rejected the record: the teacher is asked again (with the reason) for an
                alternative that passes the cheap chain, shows none of the rejected record's reason codes
                and, when a judge is given, the judge; the alternative is preferred over the original
    judge       the LLM judge flagged the record (unsafe) and no person overruled it: likewise

Each pair names the audit entries it came from (`audit`: sequence numbers in RUN/review/audit.jsonl) and
the review it was made from (`review_fingerprint`: the signed-off view's digest). The teacher is asked
through the synthesis engine, so its answers share the run's cache (never paid twice), rate limit and
spending cap.

Pairs are reviewed like records, with the same review core: `pairs_view` is a list of `ReviewedRecord`
(prompt; text = chosen; original_text = rejected) that `actions.find` and `Query` filter; decisions and
the sign-off write a hash-chained audit log of their own (RUN/pairs/audit.jsonl, `audit.py`) and are
graded by the same acceptance sampling (`signoff.py`). `pairs_state` is the current sign-off, which binds
the pairs' fingerprint to the review's: training records both, so an edit of a record after sign-off
breaks the chain from the review to the preference-tuned weights.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from distill.errors import Problem, RunDirError
from distill.files import read_jsonl, write_atomic
from distill.lineage import examples_digest
from distill.providers.protocol import Message, TeacherRequest
from distill.review.actions import CountChanged, Query, find
from distill.review.audit import append_entry, read_log
from distill.providers.factory import make_provider
from distill.review import signoff_state
from distill.review.chain import Chain, task_for_length
from distill.review.judge import Judge
from distill.review.decisions import HUMAN_ACTIONS, review_policy
from distill.review.stage import review_auto_signoff, spec_review_settings
from distill.review.signoff import auto_sign_off, draw_sample, read_signoff, sign_off, signoff_current
from distill.review.store import ReviewedRecord, _replay, build_view, review_dir, trainable, view_digest
from distill.review.verdict import SEVERITY, Finding
from distill.synthesis.cache import cache_key
from distill.synthesis.records import Pending

PAIRS = "pairs.jsonl"
ATTEMPTS = 4  # alternatives asked for per rejected record before it gives no pair


@dataclass(frozen=True)
class Pair:
    id: int
    record: int  # the reviewed record it came from
    source: Literal["edit", "rejection", "judge"]
    prompt: str
    chosen: str
    rejected: str
    audit: tuple[int, ...]  # the review audit entries (seq) it came from
    reasons: tuple[str, ...] = ()  # the rejected text's reason codes

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "audit": list(self.audit), "reasons": list(self.reasons)}


def pairs_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "pairs"


# --- where pairs come from ---


def _entries_by_record(entries: list[dict[str, Any]]) -> dict[int, list[int]]:
    """Record id -> the human audit entries (not undone) that decided or edited it."""
    undone = {e["after"]["undoes"] for e in entries if e["action"] == "undo"}
    touched: dict[int, list[int]] = {}
    for entry in entries:
        if entry["action"] in HUMAN_ACTIONS and entry["seq"] not in undone:
            for record in entry["ids"]:
                touched.setdefault(record, []).append(entry["seq"])
    return touched


def _judge_flagged(record: ReviewedRecord) -> bool:
    return record.human is None and record.status == "rejected" and any(
        f.stage == "judge" and f.category != "JUDGE" for f in record.reasons)


def pair_sources(run_dir: Path) -> tuple[list[Pair], list[tuple[ReviewedRecord, str, tuple[int, ...]]]]:
    """The edit pairs, and the records that need a teacher alternative: (record, source, audit entries)."""
    entries = read_log(review_dir(run_dir))
    touched = _entries_by_record(entries)
    auto = [e["seq"] for e in entries if e["action"] == "auto_review"]
    edits, wanted = [], []
    for record in build_view(Path(run_dir)):
        seqs = tuple(touched.get(record.id, ()))
        if record.edited and trainable(record) and record.text != record.original_text:
            edits.append(Pair(0, record.id, "edit", record.prompt, record.text, record.original_text, seqs,
                              _codes_before_edit(entries, record.id)))
        elif record.human is not None and record.decision == "reject":
            wanted.append((record, "rejection", seqs))
        elif _judge_flagged(record):
            wanted.append((record, "judge", tuple(auto[-1:])))
    return edits, wanted


def _codes_before_edit(entries: list[dict[str, Any]], record_id: int) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r["code"] for e in entries if e["action"] == "edit" and record_id in e["ids"]
                               for r in (e.get("before") or {}).get("reasons", [])))


# --- asking the teacher for alternatives, through the synthesis engine ---


class _AlternativeWalker:
    """The engine's walker for alternatives: item `index` is finished when its request has an answer."""

    def __init__(self, requests: list[TeacherRequest], cache, provider_name: str):
        self.requests, self.cache, self.provider_name = requests, cache, provider_name
        self.faults: dict[str, str] = {}

    def advance(self, index: int) -> dict[str, Any] | Pending:
        request = self.requests[index]
        key = cache_key(self.provider_name, request)
        answer = self.cache.get(key)
        if answer is not None:
            return {"index": index, "status": "ok", "text": answer.reply.text, "failure_reason": ""}
        if key in self.faults or self.cache.get_unusable(key) is not None:
            return {"index": index, "status": "failed", "text": "", "failure_reason": self.faults.get(key, "unusable answer")}
        return Pending(index, request, key)


def alternative_request(loaded, row: dict[str, Any], reasons: list[str], attempt: int) -> TeacherRequest:
    """The record's own teacher request for its target step, with the reviewers' reason in the system
    message (the user's request stays the last message, as the teacher first saw it)."""
    spec = loaded.spec
    steps = json.loads(row.get("steps") or "[]")
    step = next((s for s in steps if s.get("name") == spec.target_step), steps[-1] if steps else None)
    if step is None or not step.get("messages"):
        raise RunDirError(Problem(f"record {row['id']} keeps no teacher messages to ask again", key="dataset.steps"))
    messages = [Message(role, content) for role, content in step["messages"]]
    note = (f"A reviewer rejected an earlier answer to this request ({', '.join(reasons) or 'not fit to train on'}). "
            f"Write a new answer that does not repeat it (attempt {attempt + 1}).")
    system = [m for m in messages if m.role == "system"]
    rest = [m for m in messages if m.role != "system"]
    merged = Message("system", (system[0].content + "\n\n" if system else "") + note)
    plan = next(s for s in spec.steps if s.name == step["name"]) if any(s.name == step["name"] for s in spec.steps) else None
    params = {**spec.teacher.params.model_dump(), **(plan.params if plan else {})}
    params = {k: v for k, v in sorted(params.items()) if v is not None and v != []}
    return TeacherRequest(tuple([merged, *rest]), spec.teacher.model, params, None, record_index=int(row["id"]),
                          step="preference_alternative", custom_id=f"alt-{row['id']}-{attempt}")


def ask_teacher(loaded, run_dir: Path, requests: list[TeacherRequest]) -> list[str | None]:
    """Each request's answer (None when it failed or the spending cap stopped it), through the engine."""
    from distill.synthesis.cost import FREE, load_prices, price_for
    from distill.synthesis.engine import Engine, RateLimiter
    from distill.synthesis.recovery import open_cache

    teacher = loaded.spec.teacher
    cache = open_cache(Path(run_dir) / "generate")
    walker = _AlternativeWalker(requests, cache, teacher.provider)
    provider = make_provider(teacher, spec_dir=loaded.directory)
    rows: dict[int, dict[str, Any]] = {}
    engine = Engine(walker, provider, cache, price=price_for(load_prices(None), teacher.provider, teacher.model) or FREE,
                    concurrency=teacher.concurrency, limiter=RateLimiter(teacher.rate_limit.rpm, teacher.rate_limit.tpm),
                    timeout_s=teacher.timeout_s, max_retries=teacher.max_retries, spent_before=cache.total_cost(),
                    max_cost_usd=teacher.max_cost_usd, on_row=lambda row, cached: rows.__setitem__(row["index"], row))

    async def drive() -> None:
        try:
            await engine.run(list(range(len(requests))))
        finally:
            await provider.aclose()

    try:
        asyncio.run(drive())
    finally:
        cache.close()
    return [rows[i]["text"] if i in rows and rows[i]["status"] == "ok" else None for i in range(len(requests))]


def _passes(chain: Chain, text: str, prompt: str, avoid: tuple[str, ...]) -> bool:
    """The alternative is kept by the cheap chain and shows none of the codes the reviewers rejected."""
    verdict = chain.check(text, prompt)
    codes = {f.code for f in verdict.reasons}
    return SEVERITY[verdict.decision] < SEVERITY["flag"] and not any(
        c == a or c.startswith(a + ".") for c in codes for a in avoid)


def _judge_passes(settings: dict[str, Any], policy, texts: list[tuple[str, str]]) -> list[bool]:
    """The LLM judge's verdict on each alternative (all pass when the review has no judge)."""
    if not settings["judge"] or not texts:
        return [True] * len(texts)

    async def all_of() -> list[bool]:
        provider = make_provider(settings["judge"], spec_dir=settings["spec_dir"])
        try:
            judge = Judge(provider, policy, model=settings["judge_model"])
            results = await asyncio.gather(*(judge.judge(text, prompt, i) for i, (text, prompt) in enumerate(texts)))
        finally:
            await provider.aclose()
        return [r.status == "safe" for r in results]

    return asyncio.run(all_of())


# --- making the pairs ---


def make_pairs(run_dir: Path, loaded, *, judge: bool = True, attempts: int = ATTEMPTS,
               reviewer: str = "distill") -> list[Pair]:
    """Turn the signed-off review into pairs (RUN/pairs/pairs.jsonl), asking the teacher for alternatives
    where a record was rejected (checked by the chain and, when the spec's review has one, the judge).
    Re-running keeps the answers (the cache); a new set replaces the old one and its sign-off. Where the
    review may sign off automatically (a policy that allows it, the offline teacher) so are the pairs."""
    run_dir = Path(run_dir)
    settings = spec_review_settings(loaded, judge=judge)
    policy = review_policy(run_dir)
    review = signoff_state(run_dir)
    if review is None:
        raise RunDirError(Problem("the review is not signed off (or its records changed since)", file=review_dir(run_dir),
                                  hint=f"sign off first: `distill review {run_dir} signoff`"))
    edits, wanted = pair_sources(run_dir)
    rows = {row["id"]: row for row in _dataset_rows(run_dir)}
    chain = Chain(policy, task_for_length(policy, settings.get("longest_words")))
    asks = [(rows[r.id], r, tuple(r.codes)) for r, _, _ in wanted]
    found = _alternatives(loaded, run_dir, chain, (settings, policy), asks, attempts)
    made = list(edits)
    for (record, source, seqs), chosen in zip(wanted, found):
        if chosen is not None:
            made.append(Pair(0, record.id, source, record.prompt, chosen, record.original_text, seqs, tuple(record.codes)))
    made = [Pair(i, *astuple_rest(p)) for i, p in enumerate(sorted(made, key=lambda p: (p.record, p.source)))]
    _write_pairs(run_dir, made, review["view_digest"], reviewer, missing=len(wanted) - sum(f is not None for f in found))
    if review_auto_signoff({**settings, "policy": policy}):
        auto_sign_off(pairs_dir(run_dir), policy, view_digest=pairs_digest(pairs_view(run_dir)))
    return made


def astuple_rest(pair: Pair) -> tuple:
    return (pair.record, pair.source, pair.prompt, pair.chosen, pair.rejected, pair.audit, pair.reasons)


def _dataset_rows(run_dir: Path) -> list[dict[str, Any]]:
    from distill.synthesis.dataset import load_saved_dataset

    dataset = load_saved_dataset(Path(run_dir) / "dataset")
    columns = [c for c in ("id", "steps", "variables") if c in dataset.column_names]
    data = dataset.select_columns(columns).to_dict()
    return [{c: data[c][i] for c in columns} for i in range(len(data["id"]))]


def _alternatives(loaded, run_dir: Path, chain: Chain, judge, items: list[tuple[dict, ReviewedRecord, tuple[str, ...]]],
                  attempts: int) -> list[str | None]:
    """For each (row, record, codes to avoid), the first teacher alternative that passes, or None."""
    chosen: list[str | None] = [None] * len(items)
    for attempt in range(attempts):
        open_items = [i for i, c in enumerate(chosen) if c is None]
        if not open_items:
            break
        requests = [alternative_request(loaded, items[i][0], list(items[i][2]), attempt) for i in open_items]
        answers = ask_teacher(loaded, run_dir, requests)
        candidates = [(i, a) for i, a in zip(open_items, answers)
                      if a and _passes(chain, a, items[i][1].prompt, items[i][2])]
        verdicts = _judge_passes(*judge, [(a, items[i][1].prompt) for i, a in candidates])
        for (i, answer), ok in zip(candidates, verdicts):
            if ok:
                chosen[i] = answer
    return chosen


def _write_pairs(run_dir: Path, made: list[Pair], review_fingerprint: str, reviewer: str, *, missing: int) -> None:
    folder = pairs_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [{**p.to_json(), "review_fingerprint": review_fingerprint} for p in made]
    write_atomic(folder / PAIRS, "".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in lines))
    (folder / "signoff.json").unlink(missing_ok=True)  # a new set of pairs needs its own sign-off
    append_entry(folder, reviewer=reviewer, action="make_pairs", ids=[p.id for p in made],
                 after={"pairs": len(made), "by_source": _count(made), "without_alternative": missing,
                        "review_fingerprint": review_fingerprint, "pairs_sha256": examples_digest(_examples(made))})


def _count(made: list[Pair]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pair in made:
        counts[pair.source] = counts.get(pair.source, 0) + 1
    return counts


def _examples(made: list[Pair]) -> list[dict[str, Any]]:
    return [{"id": p.id, "prompt": p.prompt, "text": json.dumps([p.chosen, p.rejected], ensure_ascii=False)} for p in made]


# --- reviewing the pairs with the review core ---


def read_pairs(run_dir: Path) -> list[dict[str, Any]]:
    path = pairs_dir(run_dir) / PAIRS
    if not path.is_file():
        raise RunDirError(Problem("no preference pairs yet", file=path, hint=f"make them: `distill review {run_dir} pairs make`"))
    return list(read_jsonl(path))


def pairs_view(run_dir: Path) -> list[ReviewedRecord]:
    """The pairs as reviewable records (text: chosen, original_text: rejected), the pairs' audit log replayed."""
    records = {}
    for line in read_pairs(run_dir):
        finding = [Finding("pairs", f"pair.{line['source']}", "PAIR", (0, len(line["chosen"])),
                           f"from record {line['record']}, audit entries {line['audit']}", action="pass")]
        records[line["id"]] = ReviewedRecord(line["id"], "kept", "pass", "pass", finding, line["prompt"], line["chosen"],
                                             line["prompt"], line["rejected"], line["chosen"])
    entries = read_log(pairs_dir(run_dir))
    undone = {e["after"]["undoes"] for e in entries if e["action"] == "undo"}
    for entry in entries:
        if entry["seq"] not in undone:
            _replay(entry, records)
    return [records[k] for k in sorted(records)]


def pairs_digest(view: list[ReviewedRecord]) -> str:
    """The fingerprint of the pairs a preference stage trains on: the kept pairs' prompt, chosen and rejected."""
    return examples_digest({"id": r.id, "prompt": r.prompt, "text": json.dumps([r.text, r.original_text], ensure_ascii=False)}
                           for r in view if trainable(r))


def decide_pairs(run_dir: Path, target: list[int] | Query, decision: Literal["accept", "reject"], *, reviewer: str,
                 note: str = "", expected_count: int | None = None) -> tuple[dict | None, list[int]]:
    """Accept or reject pairs by id or by query, in one entry of the pairs' audit log (the count guard as for records)."""
    if decision not in ("accept", "reject"):
        raise RunDirError(f"decision must be accept or reject, not {decision!r}")
    view = pairs_view(run_dir)
    ids = [r.id for r in find(view, target)] if isinstance(target, Query) else list(dict.fromkeys(target))
    unknown = sorted(set(ids) - {r.id for r in view})
    if unknown:
        raise RunDirError(f"no pair with id {', '.join(map(str, unknown[:10]))} in {run_dir}")
    if expected_count is not None and len(ids) != expected_count:
        raise CountChanged(len(ids), expected_count)
    if not ids:
        return None, []
    states = {str(r.id): {"status": r.status, "decision": r.decision} for r in view if r.id in ids}
    return append_entry(pairs_dir(run_dir), reviewer=reviewer, action=decision, ids=ids, before=states,
                        after={"decision": decision}, note=note), ids


def sample_pairs(run_dir: Path, *, reviewer: str, size: int, seed: int | None = None) -> dict:
    kept = [r.id for r in pairs_view(run_dir) if trainable(r)]
    return draw_sample(pairs_dir(run_dir), kept, size, reviewer=reviewer, seed=seed)


def sign_off_pairs(run_dir: Path, defective: list[int], *, reviewer: str) -> dict:
    """Grade the drawn sample of pairs and sign off under the review's policy (as for records)."""
    view = pairs_view(run_dir)
    return sign_off(pairs_dir(run_dir), review_policy(run_dir), reviewer=reviewer, defective=defective,
                    view_digest=pairs_digest(view), pending=0, kept_ids=[r.id for r in view if trainable(r)])


def pairs_state(run_dir: Path) -> dict[str, Any] | None:
    """The pairs' sign-off with the fingerprints training records, or None when the pairs are not signed
    off, changed since, or were made from another review than the one signed off now."""
    signed = read_signoff(pairs_dir(run_dir)) if (pairs_dir(run_dir) / PAIRS).is_file() else None
    review = signoff_state(run_dir)
    if signed is None or review is None:
        return None
    made_from = {line.get("review_fingerprint") for line in read_pairs(run_dir)}
    if not signoff_current(signed, pairs_digest(pairs_view(run_dir))) or made_from - {review["view_digest"]}:
        return None
    return {"pairs_fingerprint": signed["view_digest"], "review_fingerprint": review["view_digest"],
            "log_hash": signed.get("log_hash"), "reviewer": signed["reviewer"]}


def preference_pairs(run_dir: Path) -> list[dict[str, Any]]:
    """The signed-off pairs a preference stage trains on: {id, prompt, chosen, rejected}."""
    return [{"id": r.id, "prompt": r.prompt, "chosen": r.text, "rejected": r.original_text}
            for r in pairs_view(run_dir) if trainable(r)]


def chain_problems(run_dir: Path, trained: dict[str, Any] | None) -> list[str]:
    """Breaks between the signed-off review and pairs and what a preference stage recorded (`trained`:
    its pairs and review fingerprints); [] when no preference stage ran or the chain holds."""
    if not trained:
        return []
    now = pairs_state(run_dir)
    if now is None:
        return ["the preference pairs the model was tuned on are no longer signed off, or the review they came from "
                "changed after its sign-off (a record edited or re-decided)"]
    problems = []
    if now["review_fingerprint"] != trained.get("review_fingerprint"):
        problems.append("the review changed after the preference tuning: the tuned weights came from other data")
    if now["pairs_fingerprint"] != trained.get("pairs_fingerprint"):
        problems.append("the preference pairs changed after the preference tuning")
    return problems

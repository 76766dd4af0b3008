"""`run_review`: the whole automatic review of a run, resumable.

    RUN/dataset -> cheap chain (stages 1-7, per record, appended in batches)
                -> dedup + decontamination (stages 8-9, over the corpus)
                -> LLM judge (stage 10, per record, appended as answers arrive)
                -> summary, report, optional automatic sign-off

Each step keeps what it has finished in `RUN/review/`, so an interrupted review continues where it
stopped. The automatic results are tied to a fingerprint of the policy, the task and the evaluation
files; when any of them changes they are recomputed (human actions in the audit log are kept).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from distill.errors import ConfigError, RunDirError
from distill.files import append_jsonl, read_json, write_json_atomic
from distill.providers.protocol import Provider
from distill.review.audit import append_entry
from distill.review.chain import Chain
from distill.review.conformance import TaskConformance
from distill.review.conversation import is_transcript, review_conversation
from distill.review.decontam import build_index
from distill.review.dedup import find_duplicates, over_represented_openings
from distill.review.judge import Judge, judge_all
from distill.review.policy import Policy
from distill.review.signoff import auto_sign_off, read_signoff, signoff_current
from distill.review.summary import ReviewState, ReviewSummary
from distill.review.store import (
    CORPUS, DERIVED, JUDGE, RECORDS, STATE, build_view, load_rows, read_judge, read_verdicts, review_dir, verdict_line,
    view_digest,
)
from distill.review.text_checks import finding
from distill.review.verdict import SEVERITY, Finding

BATCH = 256  # records per append to records.jsonl: what an interruption can cost


def run_review(run_dir: Path, *, policy: Policy, judge: Provider | None = None, judge_model: str = "",
               task: TaskConformance | None = None, eval_files: list[Path] = (), auto_signoff: bool = False,
               reviewer: str = "distill", progress: bool = True, close_judge: bool = False) -> ReviewSummary:
    """Review `RUN/dataset` under `policy`; returns the summary (also written to summary.json).
    `close_judge` closes the judge provider when done, in the event loop that used it."""
    from distill.review.report import summarise, write_report

    run_dir = Path(run_dir)
    review = review_dir(run_dir)
    review.mkdir(parents=True, exist_ok=True)
    if auto_signoff and not policy.auto_signoff:
        raise ConfigError(f"policy {policy.name!r} does not allow automatic sign-off (auto_signoff: false); "
                          "sample and sign off as a reviewer with `distill review RUN sample` / `signoff`")
    rows = load_rows(run_dir)
    _reset_if_changed(review, policy, task, eval_files, rows, reviewer)
    chain = Chain(policy, task)
    computed = _cheap_chain(review, chain, rows, progress)
    computed += _corpus_stage(review, policy, rows, eval_files)
    judged = 0
    if judge is not None and policy.judge.enabled and judge.name != "offline":
        judged = _judge_stage(review, Judge(judge, policy, model=judge_model), rows, policy.judge.concurrency, progress, close_judge)
    if close_judge and judge is not None and not judged:
        asyncio.run(judge.aclose())
    view = build_view(run_dir, rows)
    summary = summarise(view, policy, read_json(review / CORPUS, missing=None) or {})
    summary.judge = _judge_note(policy, judge, judge_model, review)
    if computed or judged:
        append_entry(review, reviewer=reviewer, action="auto_review",
                     after={"policy": policy.name, "records": len(view), "status": summary.status, "judge": summary.judge})
    digest = view_digest(view)
    signoff = read_signoff(review)
    if auto_signoff and not (signoff and signoff_current(signoff, digest)):
        auto = auto_sign_off(review, policy, view_digest=digest)
        print("review: signed off automatically (reviewer 'auto'): the policy allows it; no human graded a sample"
              if auto["accepted"] else "review: automatic sign-off REFUSED: " + auto["judge_agreement"]["summary"]
              + f", under the policy's floor of {auto['judge_agreement']['min_judge_kappa']}; a person must sign off",
              file=sys.stderr)
    signoff = read_signoff(review)
    summary.signoff = {**signoff, "current": signoff_current(signoff, digest)} if signoff else None
    summary.to_json(review)
    write_report(review, view, summary)
    return summary


def _fingerprint(policy: Policy, task: TaskConformance | None, eval_files: list[Path], rows: list[dict]) -> dict[str, str]:
    evals = hashlib.sha256()
    for path in sorted(Path(p) for p in eval_files):
        evals.update(str(path).encode())
        evals.update(path.read_bytes() if path.is_file() else b"<missing>")
    data = hashlib.sha256(str(len(rows)).encode())
    for row in rows:
        data.update(f"{row['id']}\0{row['prompt']}\0{row['text']}\0".encode("utf-8", "surrogatepass"))
    task_repr = "policy" if task is None else repr((sorted(task.vocabulary.words) if task.vocabulary else None,
                                                  task.max_off_vocab_share, task.min_words, task.max_words, task.required_variables))
    return {
        "policy": policy.fingerprint(),
        "task": hashlib.sha256(task_repr.encode()).hexdigest()[:16],
        "eval_files": evals.hexdigest()[:16],
        "dataset": data.hexdigest()[:16],
    }


def _reset_if_changed(review: Path, policy: Policy, task, eval_files, rows, reviewer: str) -> None:
    before = None
    if (review / STATE).exists():
        try:
            before = ReviewState.from_json(review).fingerprint
        except RunDirError:
            # Derived bookkeeping: a corrupt copy costs a recomputation of the automatic results, nothing more.
            print(f"review: {review / STATE} is corrupt; recomputing the automatic results", file=sys.stderr)
            before = {}
    fingerprint = _fingerprint(policy, task, list(eval_files), rows)
    if before is not None and before != fingerprint:
        changed = [k for k in fingerprint if before.get(k) != fingerprint[k]]
        print(f"review: {', '.join(changed)} changed since the last review; recomputing the automatic results", file=sys.stderr)
        for name in DERIVED:
            (review / name).unlink(missing_ok=True)
        append_entry(review, reviewer=reviewer, action="reset_automatic", note=f"changed: {', '.join(changed)}")
    source = str(policy.source) if policy.source else policy.name
    ReviewState(policy=policy.name, policy_source=source, fingerprint=fingerprint).to_json(review)


def _required_words(row: dict, names: tuple[str, ...]) -> list[str]:
    if not names or not row.get("variables"):
        return []
    variables = json.loads(row["variables"]) if isinstance(row["variables"], str) else row["variables"]
    words = []
    for name in names:
        value = variables.get(name)
        words += [str(v) for v in value] if isinstance(value, list) else [str(value)] if value is not None else []
    return words


def _progress(total: int, description: str, enabled: bool):
    """A progress bar with rate and ETA on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(show_speed=True),
                    TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled or total == 0, transient=True)


def _cheap_chain(review: Path, chain: Chain, rows: list[dict], progress: bool) -> int:
    done = set(read_verdicts(review))
    todo = [row for row in rows if row["id"] not in done]
    names = chain.task.required_variables
    with _progress(len(todo), "review: checks", progress) as bar:
        task = bar.add_task("checks", total=len(todo))
        for start in range(0, len(todo), BATCH):
            batch = todo[start : start + BATCH]
            lines = []
            for row in batch:
                verdict = chain.check(row.get("raw_text", row["text"]), row["prompt"], _required_words(row, names))
                if is_transcript(row["text"]):
                    verdict = review_conversation(verdict, row["text"])
                lines.append(verdict_line(row["id"], verdict, row["text"], row["prompt"]))
            append_jsonl(review / RECORDS, lines)
            bar.advance(task, len(batch))
    return len(todo)


def _corpus_stage(review: Path, policy: Policy, rows: list[dict], eval_files: list[Path]) -> int:
    """Dedup and decontamination over the records the cheap chain did not reject."""
    if (review / CORPUS).exists():
        return 0
    verdicts = read_verdicts(review)
    candidates = [r for r in rows if verdicts[r["id"]]["decision"] != "reject"]
    texts = [_checked(verdicts[r["id"]], r) for r in candidates]
    ids = [r["id"] for r in candidates]
    findings: list[dict] = []

    def add(record: int, item: Finding) -> None:
        action = policy.action_for(item.code, item.category)
        findings.append({"id": record, "finding": Finding(**{**item.__dict__, "action": action}).to_json()})

    duplicates = []
    if policy.dedup.enabled:
        duplicates = find_duplicates(ids, texts, threshold=policy.dedup.threshold, num_perm=policy.dedup.num_perm,
                                     shingle_words=policy.dedup.shingle_words,
                                     semantic_threshold=policy.dedup.semantic_threshold if policy.dedup.semantic else None,
                                     semantic_margin=policy.dedup.semantic_margin)
        lengths = dict(zip(ids, map(len, texts)))
        details = {"exact": "same text as record {of}", "near": "{similarity:.0%} similar to record {of} (MinHash)",
                   "semantic": "says the same as record {of} in other words ({similarity:.0%} TF-IDF cosine)"}
        for dup in duplicates:
            detail = details[dup.kind].format(of=dup.of, similarity=dup.similarity)
            add(dup.record, finding("dedup", f"dedup.{dup.kind}", (0, lengths[dup.record]), detail))
    overlaps = []
    if policy.decontam.enabled and eval_files:
        index = build_index([Path(p) for p in eval_files], policy.decontam.ngram)
        overlaps = index.find(ids, texts)
        for overlap in overlaps:
            add(overlap.record, finding("decontam", "decontam.ngram_overlap", overlap.span,
                                        f"{policy.decontam.ngram}-gram shared with {overlap.source}: {overlap.ngram[:100]!r}"))
    openings = over_represented_openings([r["text"] for r in rows], words=policy.dedup.opening_words,
                                         max_share=policy.dedup.max_opening_share)
    write_json_atomic(review / CORPUS, {
        "findings": findings,
        "duplicates": [d.__dict__ for d in duplicates],
        "overlaps": [{"record": o.record, "source": o.source, "ngram": o.ngram} for o in overlaps],
        "openings": openings,
        "eval_files": [str(p) for p in eval_files],
    })
    return len(candidates)


def _checked(line: dict, row: dict) -> str:
    return line["checked_text"] if line.get("checked_text") is not None else row["text"]


def _judge_stage(review: Path, judge: Judge, rows: list[dict], concurrency: int, progress: bool, close: bool) -> int:
    """Judge every record the cheaper stages did not reject and the judge has not answered yet."""
    verdicts = read_verdicts(review)
    corpus = read_json(review / CORPUS, missing=None) or {}
    rejected = {item["id"] for item in corpus.get("findings", []) if item["finding"]["action"] == "reject"}
    done = set(read_judge(review))
    todo = [
        (r["id"], _checked(verdicts[r["id"]], r), r["prompt"]) for r in rows
        if r["id"] not in done and r["id"] not in rejected and SEVERITY[verdicts[r["id"]]["decision"]] < SEVERITY["reject"]
    ]
    if not todo:
        return 0
    with _progress(len(todo), "review: judge", progress) as bar:
        task = bar.add_task("judge", total=len(todo))

        def store(record: int, result) -> None:
            append_jsonl(review / JUDGE, [{
                "id": record, "status": result.status, "rationale": result.rationale, "answer": result.answer[:2000],
                "findings": [Finding(**{**f.__dict__, "action": judge.policy.action_for(f.code, f.category)}).to_json()
                             for f in result.findings],
            }], sync=False)
            bar.advance(task)

        async def judge_then_close() -> None:
            try:
                await judge_all(judge, todo, concurrency=concurrency, on_result=store)
            finally:
                if close:  # in this loop: the provider's connections belong to it
                    await judge.provider.aclose()

        asyncio.run(judge_then_close())
    return len(todo)


def _judge_note(policy: Policy, judge: Provider | None, model: str, review: Path) -> dict[str, Any]:
    if not policy.judge.enabled:
        return {"ran": False, "why": f"policy {policy.name!r} disables the judge"}
    judged = read_judge(review)
    if judge is not None and judge.name == "offline" and not judged:
        return {"ran": False, "why": "the offline stand-in is not a model and cannot judge"}
    if judge is None and not judged:
        return {"ran": False, "why": "no judge provider was given"}
    statuses: dict[str, int] = {}
    for line in judged.values():
        statuses[line["status"]] = statuses.get(line["status"], 0) + 1
    return {"ran": True, "provider": getattr(judge, "name", ""), "model": model, "answers": statuses}


def spec_review_settings(loaded, *, judge: bool = True) -> dict[str, Any]:
    """What a spec says about its review: the policy (a built-in name or a file beside the spec), the
    judge (`safety.judge`, else the teacher; none for replay and offline teachers, which are not
    models that can judge), and the files to decontaminate against (`safety.decontaminate` and
    `evaluation.extra_texts`). The judge is a `Teacher` reference; `review_with_settings` connects it."""
    from distill.review.policy import spec_policy
    from distill.spec import Teacher

    spec = loaded.spec
    policy = spec_policy(loaded)
    if spec.teacher.provider == "replay" and spec.teacher.replay is not None and spec.teacher.replay.match == "index":
        # Recorded answers were written for other prompts: the words this run sampled cannot be required of them.
        policy = policy.model_copy(update={"conformance": policy.conformance.model_copy(update={"required_variables": []})})
    reference = spec.safety.judge
    teacher = spec.teacher if reference is None else Teacher(provider=reference.provider, model=reference.model,
                                                            base_url=reference.base_url, api_key_env=reference.api_key_env)
    use_judge = judge and policy.judge.enabled and teacher.provider not in ("replay", "offline")
    return {
        "policy": policy,
        "judge": teacher if use_judge else None,
        "judge_model": teacher.model,
        "spec_dir": loaded.directory,
        "eval_files": [loaded.directory / p for p in [*spec.safety.decontaminate, *spec.evaluation.extra_texts]],
        "offline_teacher": spec.teacher.provider == "offline",
        "longest_words": int(spec.teacher.params.max_tokens * 0.75),  # ~0.75 English words per token
    }


def review_with_settings(run_dir: Path, settings: dict[str, Any], *, progress: bool = True) -> ReviewSummary:
    """Connect the judge (a missing key fails here) and review. Signs off automatically only when the
    policy allows it and the data came from the offline stand-in (the quickstart)."""
    from distill.providers.factory import make_provider

    from distill.review.chain import task_for_length

    judge = settings["judge"] and make_provider(settings["judge"], spec_dir=settings["spec_dir"])
    task = task_for_length(settings["policy"], settings.get("longest_words"))
    return run_review(run_dir, policy=settings["policy"], judge=judge, judge_model=settings["judge_model"], task=task,
                      eval_files=settings["eval_files"], auto_signoff=review_auto_signoff(settings), progress=progress,
                      close_judge=True)


def review_auto_signoff(settings: dict[str, Any]) -> bool:
    return settings["policy"].auto_signoff and settings["offline_teacher"]


def summary_line(summary: ReviewSummary) -> str | None:
    """`distill run`'s one line on a review, or None when the dataset now waits for a human sign-off."""
    status = summary.status
    line = f"{summary.kept} kept, {status['pending']} pending, {status['rejected']} rejected"
    return f"{line}; signed off by {summary.signed_off_by}" if summary.signed_off_by else None

"""`distill review RUN`: run the automatic review and summarise it; sub-commands for human review.

    distill review RUN                      review (resumable), print the summary, write the report
    distill review RUN --verify-log [--key PUB]   check the audit log's hash chain and signed checkpoints
    distill review RUN list --reason pii.email --status pending
    distill review RUN show 17
    distill review RUN accept 17 18 --reviewer ana      (or set DISTILL_REVIEWER)
    distill review RUN reject 19 --note "scary"
    distill review RUN reject --stage judge --status pending --expect 12    every record a filter matches
    distill review RUN undo --note "wrong record"        your last action, undone
    distill review RUN edit 20 --file fixed.txt
    distill review RUN apply-reason lexicon.violence reject
    distill review RUN sample                            draw records to grade
    distill review RUN signoff --defective 31            grade the sample and sign off
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from typer.core import TyperGroup


class _ReviewGroup(TyperGroup):
    """`distill review list --help` (no RUN before the sub-command) shows the list command's own help,
    as `distill review RUN list --help` does, instead of the group's."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] in self.commands and any(a in ("--help", "-h") for a in args[1:]):
            command = self.commands[args[0]]
            click.echo(command.get_help(click.Context(command, info_name=f"RUN {args[0]}", parent=ctx)))
            ctx.exit(0)
        return super().parse_args(ctx, args)


from distill.cli.params import MAX_RECORDS, MAX_SEED, stage_command

# Interspersed arguments let `distill review RUN --verify-log` put the group's own options after RUN;
# options the group does not know pass through to the sub-command (`RUN list --reason pii`).
app = typer.Typer(name="review", help="Safety review: automatic checks, human decisions, audit log, sign-off.",
                  cls=_ReviewGroup, no_args_is_help=True, add_completion=False,
                  context_settings={"allow_interspersed_args": True, "ignore_unknown_options": True})

ReviewerOpt = Annotated[Optional[str], typer.Option("--reviewer", help="Your name for the audit log (default: $DISTILL_REVIEWER).")]
NoteOpt = Annotated[str, typer.Option("--note", help="Why, for the audit log.")]


def _run(ctx: typer.Context) -> Path:
    return ctx.obj["run"]


def _say(line: str) -> None:
    print(line, file=sys.stderr)


@app.callback(invoke_without_command=True)
def review(
    ctx: typer.Context,
    run: Annotated[Path, typer.Argument(help="The run directory (runs/<spec-name>/<run-id>).")],
    policy: Annotated[Optional[str], typer.Option("--policy", help="Policy name or YAML path (default: the spec's safety.policy).")] = None,
    eval_file: Annotated[Optional[list[Path]], typer.Option("--eval-file", help="Extra evaluation text to decontaminate against (repeatable).")] = None,
    no_judge: Annotated[bool, typer.Option("--no-judge", help="Skip the LLM judge (no requests).")] = False,
    verify_log: Annotated[bool, typer.Option("--verify-log", help="Only check the audit log's hash chain and signed checkpoints; exit 1 if broken.")] = False,
    key: Annotated[Optional[Path], typer.Option("--key", metavar="PUB", help="With --verify-log: the operator's public key, to check the checkpoints' signatures.")] = None,
) -> None:
    """Review RUN's dataset: every check on every record, dedup, decontamination, the LLM judge; prints the
    summary (stderr) and the report path (stdout). Re-running resumes and refreshes the report."""
    ctx.obj = {"run": run}
    if ctx.invoked_subcommand is not None:
        return
    if verify_log:
        from distill.signing import read_public_key
        from distill.review.checkpoints import log_report
        from distill.review.store import review_dir

        if not (Path(run) / "manifest.json").is_file():
            from distill.errors import Problem, RunDirError

            raise RunDirError(Problem("not a run directory (no manifest.json), so there is no audit log to check",
                                      file=run, hint="pass the run directory, runs/<spec-name>/<run-id>"))
        problems, proves = log_report(review_dir(run), read_public_key(key) if key is not None else None)
        for problem in problems:
            print(problem)
        for line in proves:
            _say(line)
        _say("audit log: no break found (read above what that proves)" if not problems
             else f"audit log BROKEN: {len(problems)} problem(s)")
        raise typer.Exit(1 if problems else 0)
    from distill.review.report import summary_lines

    _, summary = stage_command("review", run, no_judge=no_judge, policy=policy, eval_files=list(eval_file or []))
    for line in summary_lines(summary):
        _say(line)
    print(Path(run).resolve() / "review" / "report.html")


ReasonFilter = Annotated[Optional[str], typer.Option("--reason", help="Reason code or prefix (pii, pii.email).")]
StatusFilter = Annotated[Optional[str], typer.Option("--status", help="kept, redacted, pending or rejected.")]
StageFilter = Annotated[Optional[str], typer.Option("--stage", help="Only records with a finding from this stage.")]
DecisionFilter = Annotated[Optional[str], typer.Option("--decision", help="pass, redact, flag or reject (after human actions).")]
CategoryFilter = Annotated[Optional[str], typer.Option("--category", help="Only records with a finding in this category.")]
SearchFilter = Annotated[Optional[str], typer.Option("--search", "-q", help="Text in the prompt or the text (any case).")]


def _query(ids=None, **filters):
    """The records a command acts on: the ids given, narrowed by every filter given."""
    from distill.review.actions import Query

    return Query(ids=tuple(ids) if ids else None, **{k: v for k, v in filters.items() if v})


@app.command("list")
def list_records(
    ctx: typer.Context,
    reason: ReasonFilter = None,
    status: StatusFilter = None,
    stage: StageFilter = None,
    decision: DecisionFilter = None,
    category: CategoryFilter = None,
    search: SearchFilter = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_RECORDS, help="At most this many.")] = 50,
) -> None:
    """List records (id, status, reason codes, start of the text), one per line on stdout; the count and
    the review's progress on stderr."""
    from distill.review.actions import find, progress
    from distill.review.store import build_view

    view = build_view(_run(ctx))
    found = find(view, _query(reason=reason, status=status, stage=stage, decision=decision, category=category, q=search))
    for record in found[:limit]:
        snippet = record.text[:70].replace("\n", " ")
        print(f"{record.id}\t{record.status}\t{','.join(dict.fromkeys(record.codes)) or '-'}\t{snippet}")
    if len(found) > limit:
        _say(f"showing the first {limit} of {len(found)} matching records; see more with --limit {len(found)}, "
             "or narrow the list with --reason, --status, --stage, --decision, --category or --search")
    done = progress(view)
    _say(f"{len(found)} of {done['total']} records match; decided by a person {done['decided']} / {done['total']}, "
         f"{done['pending']} pending")


@app.command()
def show(ctx: typer.Context, record: Annotated[int, typer.Argument(min=0, max=MAX_RECORDS, help="Record id.")]) -> None:
    """One record as JSON: status, reasons with spans, the text the student would see, the last human
    action, the variables sampled for it and what the teacher was asked."""
    from distill.review.actions import find_one, record_context
    from distill.review.decisions import record_json
    from distill.review.store import build_view

    found = find_one(build_view(_run(ctx)), record, _run(ctx))
    print(json.dumps({**json.loads(record_json(found)), **record_context(_run(ctx), record)}, ensure_ascii=False, indent=1))


def _decide(ctx: typer.Context, decision: str, records: list[int] | None, filters: dict, expect: int | None,
            reviewer: str | None, note: str) -> None:
    from distill.errors import ConfigError
    from distill.review.actions import decide
    from distill.review.decisions import reviewer_name

    query = _query(records, **filters)
    if not query.filters():
        raise ConfigError(f"name the records to {decision}: record ids, or a filter (--status, --reason, --stage, "
                          "--decision, --category, --search) for every record it matches")
    entry, ids = decide(_run(ctx), list(records) if records and len(query.filters()) == 1 else query, decision,
                        reviewer=reviewer_name(reviewer), note=note, expected_count=expect)
    _say(f"{decision}ed {len(ids)} record(s); audit entry {entry['seq']}" if entry else f"no records match {query.filters()}")


ExpectOpt = Annotated[Optional[int], typer.Option("--expect", min=0, max=MAX_RECORDS, help="With a filter: the count you saw (`list`); "
                                                  "refused, nothing decided, when the filter now matches another number.")]
RecordIds = Annotated[Optional[list[int]], typer.Argument(min=0, max=MAX_RECORDS, help="Record ids (or give a filter).")]


@app.command()
def accept(ctx: typer.Context, records: RecordIds = None, reason: ReasonFilter = None, status: StatusFilter = None,
           stage: StageFilter = None, decision: DecisionFilter = None, category: CategoryFilter = None,
           search: SearchFilter = None, expect: ExpectOpt = None, reviewer: ReviewerOpt = None, note: NoteOpt = "") -> None:
    """Keep records (with their redactions), overriding the automatic decision: the ids given, or every
    record the filters match, in one audit entry."""
    _decide(ctx, "accept", records, dict(reason=reason, status=status, stage=stage, decision=decision, category=category,
                                         q=search), expect, reviewer, note)


@app.command()
def reject(ctx: typer.Context, records: RecordIds = None, reason: ReasonFilter = None, status: StatusFilter = None,
           stage: StageFilter = None, decision: DecisionFilter = None, category: CategoryFilter = None,
           search: SearchFilter = None, expect: ExpectOpt = None, reviewer: ReviewerOpt = None, note: NoteOpt = "") -> None:
    """Remove records from the reviewed dataset (they stay in the generated one): the ids given, or every
    record the filters match, in one audit entry."""
    _decide(ctx, "reject", records, dict(reason=reason, status=status, stage=stage, decision=decision, category=category,
                                         q=search), expect, reviewer, note)


@app.command()
def undo(ctx: typer.Context, reviewer: ReviewerOpt = None, note: NoteOpt = "") -> None:
    """Undo your own last decision or edit that is not undone yet (the log keeps both)."""
    from distill.review.actions import undo as undo_last
    from distill.review.decisions import reviewer_name

    entry = undo_last(_run(ctx), reviewer=reviewer_name(reviewer), note=note)
    if entry is None:
        _say(f"nothing of {reviewer_name(reviewer)}'s to undo")
        raise typer.Exit(1)
    _say(f"undone: your last {entry['after']['action']} on record(s) {', '.join(map(str, entry['ids']))}; "
         f"audit entry {entry['seq']}")


@app.command()
def edit(
    ctx: typer.Context,
    record: Annotated[int, typer.Argument(min=0, max=MAX_RECORDS, help="Record id.")],
    text: Annotated[Optional[str], typer.Option("--text", help="The new text.")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", help="Read the new text from a file ('-' for stdin).")] = None,
    reviewer: ReviewerOpt = None,
    note: NoteOpt = "",
) -> None:
    """Replace a record's text; the new text is checked again and the record takes the new verdict."""
    from distill.errors import ConfigError
    from distill.review.decisions import edit as edit_record
    from distill.review.decisions import reviewer_name
    from distill.review.store import build_view

    if (text is None) == (file is None):
        raise ConfigError("give the new text with exactly one of --text or --file")
    new_text = text if text is not None else (sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8"))
    entry = edit_record(_run(ctx), record, new_text, reviewer=reviewer_name(reviewer), note=note)
    after = entry["after"]
    _say(f"edited record {record}: re-checked -> {after['decision']}"
         + (f" ({', '.join(r['code'] for r in after['reasons'])})" if after["reasons"] else ""))
    status = next(r.status for r in build_view(_run(ctx)) if r.id == record)
    _say(f"record {record} is now {status}")


@app.command("apply-reason")
def apply_reason(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="Reason code or prefix, e.g. lexicon.violence or pii.")],
    decision: Annotated[str, typer.Argument(help="accept or reject.")],
    include_decided: Annotated[bool, typer.Option("--all", help="Also records that are not pending (override automatic rejections too).")] = False,
    reviewer: ReviewerOpt = None,
    note: NoteOpt = "",
) -> None:
    """Accept or reject every pending record with a reason code, in one audit entry."""
    from distill.errors import ConfigError
    from distill.review.actions import apply_reason as apply
    from distill.review.decisions import reviewer_name

    if decision not in ("accept", "reject"):
        raise ConfigError(f"decision must be accept or reject, not {decision!r}")
    entry = apply(_run(ctx), code, decision, reviewer=reviewer_name(reviewer), only_pending=not include_decided, note=note)
    _say(f"{decision}ed {len(entry['ids'])} record(s) with {code}; audit entry {entry['seq']}" if entry else f"no {'' if include_decided else 'pending '}records with {code}")


@app.command()
def sample(
    ctx: typer.Context,
    size: Annotated[Optional[int], typer.Option("--size", min=1, max=MAX_RECORDS, help="Records to draw (default: the policy's signoff.sample_size).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, max=MAX_SEED, help="Draw seed (default: random, recorded).")] = None,
    reviewer: ReviewerOpt = None,
) -> None:
    """Draw a random sample of kept records to grade; prints them as JSON lines (id, prompt, text)."""
    from distill.review.actions import sample as draw
    from distill.review.decisions import reviewer_name

    drawn, records, kept = draw(_run(ctx), reviewer=reviewer_name(reviewer), size=size, seed=seed)
    for record in records:
        print(json.dumps({"id": record.id, "prompt": record.prompt, "text": record.text}, ensure_ascii=False))
    _say(f"drew {len(drawn['ids'])} of {kept} kept records (seed {drawn['seed']}); read each, then "
         f"`distill review {_run(ctx)} signoff --defective ID ...` naming the ones that should not be trained on")


@app.command()
def signoff(
    ctx: typer.Context,
    defective: Annotated[Optional[list[int]], typer.Option("--defective", min=0, max=MAX_RECORDS, help="A sampled record id that is defective (repeatable).")] = None,
    reviewer: ReviewerOpt = None,
) -> None:
    """Grade the drawn sample and sign off: refused (exit 1) when the upper confidence bound on the defect
    rate is above the policy's limit."""
    from distill.review.actions import sign_off
    from distill.review.decisions import reviewer_name

    decision = sign_off(_run(ctx), list(defective or []), reviewer=reviewer_name(reviewer))
    _say(f"{decision['defects']} defective in {decision['n']} sampled: defect rate at most {decision['upper_bound']:.2%} "
         f"({decision['method']}, {decision['confidence']:.0%}); policy maximum {decision['max_defect_rate']:.2%}")
    if decision.get("not_checked"):
        _say("NOT CHECKED: " + decision["not_checked"])
    if not decision["accepted"]:
        _say("sign-off REFUSED: fix or reject more records, draw a new sample and grade again")
        raise typer.Exit(1)
    _say(f"signed off by {decision['reviewer']}")


@app.command()
def agreement(ctx: typer.Context,
              as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False) -> None:
    """The LLM judge against the humans: on every record a person decided, the judge's verdict vs the
    final decision; Cohen's kappa and agreement with 95% intervals, the confusion per reason family, and
    the policy's floor (`signoff.min_judge_kappa`)."""
    from distill.review.actions import require_review
    from distill.review.agreement import judge_agreement
    from distill.review.decisions import review_policy

    require_review(_run(ctx))
    found = judge_agreement(_run(ctx))
    floor = review_policy(_run(ctx)).signoff.min_judge_kappa
    if as_json:
        print(json.dumps({**found.to_json(), "min_judge_kappa": floor}, indent=1))
        return
    print(found.line())
    if found.no_verdict or found.not_judged:
        print(f"not counted: {found.no_verdict} decided records without a clear judge verdict, "
              f"{found.not_judged} the judge never read")
    for family, cells in found.families.items():
        print(f"  {family:<12} " + ", ".join(f"{k} {v}" for k, v in cells.items()))
    if floor is not None:
        below = found.kappa is None or found.kappa < floor
        print(f"policy floor: kappa >= {floor}: {'BELOW: automatic sign-off refused, larger sample' if below else 'met'}")


pairs_app = typer.Typer(help="Preference pairs made from the review: make, list, accept, reject, sample, sign off.",
                        no_args_is_help=True, add_completion=False)
app.add_typer(pairs_app, name="pairs")


@pairs_app.command("make")
def pairs_make(ctx: typer.Context,
               no_judge: Annotated[bool, typer.Option("--no-judge", help="Do not ask the LLM judge about the alternatives.")] = False,
               reviewer: ReviewerOpt = None) -> None:
    """Turn the signed-off review into (prompt, chosen, rejected) pairs: edits as they are; rejected and
    judge-flagged records with an alternative the teacher writes (through the run's cache, rate limit and
    spending cap) that passes the chain and the judge. Prints the pairs file."""
    from distill.review.decisions import reviewer_name
    from distill.review.pairs import PAIRS, make_pairs, pairs_dir, pairs_state
    from distill.rundir import RunDir
    from distill.runlock import run_lock

    run_dir = RunDir.open(_run(ctx))
    with run_lock(run_dir.path):
        made = make_pairs(run_dir.path, run_dir.load_spec(), judge=not no_judge,
                          reviewer=reviewer_name(reviewer) if reviewer else "distill")
    counts = {s: sum(p.source == s for p in made) for s in ("edit", "rejection", "judge")}
    _say(f"{len(made)} pairs: " + ", ".join(f"{v} from {k}s" for k, v in counts.items()))
    _say("signed off automatically (the policy allows it for the offline teacher)" if pairs_state(run_dir.path)
         else f"review them: `distill review {run_dir.path} pairs list`, then `pairs sample` and `pairs signoff`")
    print(pairs_dir(run_dir.path) / PAIRS)


@pairs_app.command("list")
def pairs_list(ctx: typer.Context, status: StatusFilter = None, search: SearchFilter = None,
               limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_RECORDS, help="At most this many.")] = 50) -> None:
    """List pairs (id, status, where it came from, start of the chosen and rejected texts)."""
    from distill.review.actions import find
    from distill.review.pairs import pairs_view

    found = find(pairs_view(_run(ctx)), _query(status=status, q=search))
    for pair in found[:limit]:
        print(f"{pair.id}\t{pair.status}\t{pair.reasons[0].code}\t{pair.reasons[0].detail}\t"
              f"chosen: {pair.text[:50]!r}\trejected: {pair.original_text[:50]!r}")
    _say(f"{len(found)} pairs match")


def _decide_pairs(ctx: typer.Context, decision: str, ids: list[int] | None, reviewer: str | None, note: str) -> None:
    from distill.errors import ConfigError
    from distill.review.decisions import reviewer_name
    from distill.review.pairs import decide_pairs

    if not ids:
        raise ConfigError(f"name the pairs to {decision} by id")
    entry, done = decide_pairs(_run(ctx), list(ids), decision, reviewer=reviewer_name(reviewer), note=note)
    _say(f"{decision}ed {len(done)} pair(s); audit entry {entry['seq']}")


@pairs_app.command("accept")
def pairs_accept(ctx: typer.Context, ids: RecordIds = None, reviewer: ReviewerOpt = None, note: NoteOpt = "") -> None:
    """Keep pairs for preference tuning."""
    _decide_pairs(ctx, "accept", ids, reviewer, note)


@pairs_app.command("reject")
def pairs_reject(ctx: typer.Context, ids: RecordIds = None, reviewer: ReviewerOpt = None, note: NoteOpt = "") -> None:
    """Leave pairs out of preference tuning."""
    _decide_pairs(ctx, "reject", ids, reviewer, note)


@pairs_app.command("sample")
def pairs_sample(ctx: typer.Context,
                 size: Annotated[int, typer.Option("--size", min=1, max=MAX_RECORDS, help="Pairs to draw.")] = 60,
                 seed: Annotated[Optional[int], typer.Option("--seed", min=0, max=MAX_SEED, help="Draw seed.")] = None,
                 reviewer: ReviewerOpt = None) -> None:
    """Draw kept pairs to grade; prints them as JSON lines."""
    from distill.review.decisions import reviewer_name
    from distill.review.pairs import pairs_view, sample_pairs

    drawn = sample_pairs(_run(ctx), reviewer=reviewer_name(reviewer), size=size, seed=seed)
    view = {r.id: r for r in pairs_view(_run(ctx))}
    for pair_id in drawn["ids"]:
        pair = view[pair_id]
        print(json.dumps({"id": pair.id, "prompt": pair.prompt, "chosen": pair.text, "rejected": pair.original_text},
                         ensure_ascii=False))


@pairs_app.command("signoff")
def pairs_signoff(ctx: typer.Context,
                  defective: Annotated[Optional[list[int]], typer.Option("--defective", min=0, max=MAX_RECORDS, help="A sampled pair that is wrong (repeatable).")] = None,
                  reviewer: ReviewerOpt = None) -> None:
    """Grade the drawn sample of pairs and sign them off (refused, exit 1, above the policy's limit)."""
    from distill.review.decisions import reviewer_name
    from distill.review.pairs import sign_off_pairs

    decision = sign_off_pairs(_run(ctx), list(defective or []), reviewer=reviewer_name(reviewer))
    _say(f"{decision['defects']} wrong in {decision['n']} sampled pairs: at most {decision['upper_bound']:.2%} "
         f"({decision['method']}); policy maximum {decision['max_defect_rate']:.2%}")
    if not decision["accepted"]:
        _say("pairs sign-off REFUSED")
        raise typer.Exit(1)
    _say(f"pairs signed off by {decision['reviewer']}")

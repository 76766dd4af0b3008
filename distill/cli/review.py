"""`distill review RUN`: run the automatic review and summarise it; sub-commands for human review.

    distill review RUN                      review (resumable), print the summary, write the report
    distill review RUN --verify-log [--key PUB]   check the audit log's hash chain and signed checkpoints
    distill review RUN list --reason pii.email --status pending
    distill review RUN show 17
    distill review RUN accept 17 18 --reviewer ana      (or set DISTILL_REVIEWER)
    distill review RUN reject 19 --note "scary"
    distill review RUN edit 20 --file fixed.txt
    distill review RUN apply-reason lexicon.violence reject
    distill review RUN sample                            draw records to grade
    distill review RUN signoff --defective 31            grade the sample and sign off
"""

from __future__ import annotations

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


from distill.cli.params import MAX_RECORDS, MAX_SEED

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
        from distill.release.signing import read_public_key
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
    from distill.review.policy import load_policy
    from distill.review.report import summary_lines
    from distill.review.stage import review_auto_signoff, review_with_settings, spec_review_settings, summary_line
    from distill.rundir import RunDir
    from distill.stages import review_inputs, run_stage

    from distill.runlock import run_lock

    run_dir = RunDir.open(run)
    with run_lock(run_dir.path):
        settings = spec_review_settings(run_dir.load_spec(), judge=not no_judge)
        if policy:
            settings["policy"] = load_policy(policy)
        settings["eval_files"] += list(eval_file or [])
        inputs = review_inputs(run_dir.path, policy=settings["policy"],
                               judge_model=settings["judge"] and settings["judge_model"],
                               eval_files=settings["eval_files"], auto_signoff=review_auto_signoff(settings))
        summaries = []

        def work():
            summaries.append(review_with_settings(run, settings))
            return summary_line(summaries[0])

        run_stage(run_dir, "review", inputs, work)
    summary = summaries[0]
    for line in summary_lines(summary):
        _say(line)
    print(Path(run).resolve() / "review" / "report.html")


@app.command("list")
def list_records(
    ctx: typer.Context,
    reason: Annotated[Optional[str], typer.Option("--reason", help="Reason code or prefix (pii, pii.email).")] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="kept, redacted, pending or rejected.")] = None,
    stage: Annotated[Optional[str], typer.Option("--stage", help="Only records with a finding from this stage.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_RECORDS, help="At most this many.")] = 50,
) -> None:
    """List records (id, status, reason codes, start of the text), one per line on stdout."""
    from distill.review.store import build_view

    matching = 0
    for record in build_view(_run(ctx)):
        if status and record.status != status:
            continue
        if reason and not any(c == reason or c.startswith(reason + ".") for c in record.codes):
            continue
        if stage and not any(f.stage == stage for f in record.reasons):
            continue
        matching += 1
        if matching <= limit:
            snippet = record.text[:70].replace("\n", " ")
            print(f"{record.id}\t{record.status}\t{','.join(dict.fromkeys(record.codes)) or '-'}\t{snippet}")
    if matching > limit:
        _say(f"showing the first {limit} of {matching} matching records; see more with --limit {matching}, "
             "or narrow the list with --reason, --status or --stage")


@app.command()
def show(ctx: typer.Context, record: Annotated[int, typer.Argument(min=0, max=MAX_RECORDS, help="Record id.")]) -> None:
    """One record as JSON: status, reasons with spans, the text the student would see, the last human action."""
    from distill.errors import RunDirError
    from distill.review.decisions import record_json
    from distill.review.store import build_view

    found = [r for r in build_view(_run(ctx)) if r.id == record]
    if not found:
        raise RunDirError(f"no reviewed record with id {record} in {_run(ctx)}")
    print(record_json(found[0]))


@app.command()
def accept(ctx: typer.Context, records: Annotated[list[int], typer.Argument(min=0, max=MAX_RECORDS, help="Record ids.")],
           reviewer: ReviewerOpt = None, note: NoteOpt = "") -> None:
    """Keep records (with their redactions), overriding the automatic decision."""
    from distill.review.decisions import decide, reviewer_name

    entry = decide(_run(ctx), records, "accept", reviewer=reviewer_name(reviewer), note=note)
    _say(f"accepted {len(records)} record(s); audit entry {entry['seq']}")


@app.command()
def reject(ctx: typer.Context, records: Annotated[list[int], typer.Argument(min=0, max=MAX_RECORDS, help="Record ids.")],
           reviewer: ReviewerOpt = None, note: NoteOpt = "") -> None:
    """Remove records from the reviewed dataset (they stay in the generated one)."""
    from distill.review.decisions import decide, reviewer_name

    entry = decide(_run(ctx), records, "reject", reviewer=reviewer_name(reviewer), note=note)
    _say(f"rejected {len(records)} record(s); audit entry {entry['seq']}")


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
    from distill.review.decisions import apply_reason as apply, reviewer_name

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
    import json

    from distill.review.decisions import review_policy, reviewer_name
    from distill.review.signoff import draw_sample, required_sample_size
    from distill.review.store import build_view, review_dir

    view = build_view(_run(ctx))
    kept = {r.id: r for r in view if r.status in ("kept", "redacted")}
    drawn = draw_sample(review_dir(_run(ctx)), list(kept), size or required_sample_size(review_dir(_run(ctx)), review_policy(_run(ctx))),
                        reviewer=reviewer_name(reviewer), seed=seed)
    for record_id in drawn["ids"]:
        print(json.dumps({"id": record_id, "prompt": kept[record_id].prompt, "text": kept[record_id].text}, ensure_ascii=False))
    _say(f"drew {len(drawn['ids'])} of {len(kept)} kept records (seed {drawn['seed']}); read each, then "
         f"`distill review {_run(ctx)} signoff --defective ID ...` naming the ones that should not be trained on")


@app.command()
def signoff(
    ctx: typer.Context,
    defective: Annotated[Optional[list[int]], typer.Option("--defective", min=0, max=MAX_RECORDS, help="A sampled record id that is defective (repeatable).")] = None,
    reviewer: ReviewerOpt = None,
) -> None:
    """Grade the drawn sample and sign off: refused (exit 1) when the upper confidence bound on the defect
    rate is above the policy's limit."""
    from distill.review.decisions import review_policy, reviewer_name
    from distill.review.signoff import sign_off
    from distill.review.store import build_view, review_dir, view_digest

    view = build_view(_run(ctx))
    policy = review_policy(_run(ctx))
    decision = sign_off(review_dir(_run(ctx)), policy, reviewer=reviewer_name(reviewer), defective=list(defective or []),
                        view_digest=view_digest(view), pending=sum(r.status == "pending" for r in view),
                        kept_ids=[r.id for r in view if r.status in ("kept", "redacted")])
    _say(f"{decision['defects']} defective in {decision['n']} sampled: defect rate at most {decision['upper_bound']:.2%} "
         f"({decision['method']}, {decision['confidence']:.0%}); policy maximum {decision['max_defect_rate']:.2%}")
    if decision.get("not_checked"):
        _say("NOT CHECKED: " + decision["not_checked"])
    if not decision["accepted"]:
        _say("sign-off REFUSED: fix or reject more records, draw a new sample and grade again")
        raise typer.Exit(1)
    _say(f"signed off by {decision['reviewer']}")

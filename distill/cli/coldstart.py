"""`distill coldstart`, `distill compare`, `distill drift`, `distill promote`, `distill rollback`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from distill.cli.params import MAX_NEW_TOKENS


def coldstart(
    run: Path = typer.Argument(..., help="v1's run directory (its spec needs a `coldstart` section)."),
    inputs: Path = typer.Option(..., "--inputs", help="Captured requests (JSONL from serve-model --capture)."),
    run_id: str = typer.Option("coldstart", help="The new run's id (runs/<spec>/<run-id>)."),
    build_only: bool = typer.Option(False, "--build-only", help="Write the new dataset, then stop (no training)."),
) -> None:
    """Build the next run from real inputs (relabelled by the teacher, mixed with v1's synthetic data),
    then review, train, evaluate and release it like any run."""
    from distill.coldstart.loop import build_next_run

    result = build_next_run(run, inputs, run_id=run_id)
    counts = result.counts
    print(f"coldstart: {counts['unique']} unique real inputs ({counts['rejected']} rejected by review, "
          f"{counts['unparsed']} unparsed); {counts['real_train']} train + {counts['held_out']} held out; "
          f"{counts['synthetic']} synthetic records mixed in; ${result.spent_usd:.2f} spent", file=sys.stderr)
    if not build_only:
        from distill.pipeline import run_pipeline
        from distill.rundir import RunDir

        loaded = RunDir.open(result.run).load_spec()  # v1's spec, continuing from v1's weights if it says so
        summary = run_pipeline(loaded, runs_dir=result.run.parent.parent, run_id=run_id)
        if summary.waiting_for:
            print(summary.waiting_for, file=sys.stderr)
    print(result.run)


def compare(
    v1: Path = typer.Argument(..., help="v1: a bundle, model folder or run's train folder."),
    v2: Path = typer.Argument(..., help="v2: the same for the new student."),
    run: Path = typer.Option(..., "--run", help="The coldstart run (its held-out real inputs and judge)."),
    max_new_tokens: int = typer.Option(128, min=1, max=MAX_NEW_TOKENS, help="Longest answer each student writes per input."),
) -> None:
    """Compare v1 and v2 on the held-out real inputs; writes RUN/coldstart/compare.json."""
    from distill.coldstart.compare import compare as compare_students
    from distill.coldstart.compare import spec_judge

    report = compare_students(v1, v2, run / "coldstart" / "heldout.jsonl", spec_judge(run), max_new_tokens=max_new_tokens)
    (run / "coldstart" / "compare.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    win = report["win_rate_v2"]
    for name in ("v1", "v2"):
        grade = report[name]["grade"]
        print(f"{name}: {report[name]['bits_per_byte']:.3f} bits/byte on teacher answers; judge grade "
              f"{_interval(grade)}", file=sys.stderr)
    print(f"v2 win rate over v1 (both orders, {report['judgements']} judgements): {_interval(win)}; "
          f"v2 {'better' if report['v2_better'] else 'NOT better'}", file=sys.stderr)
    print(run / "coldstart" / "compare.json")


def _interval(stats: dict) -> str:
    if stats["mean"] is None:
        return "n/a"
    if stats["low"] is None:
        return f"{stats['mean']:.2f} (n={stats['n']})"
    return f"{stats['mean']:.2f} [{stats['low']:.2f}, {stats['high']:.2f}] (n={stats['n']})"


def drift(run: Path = typer.Argument(..., help="A coldstart run directory.")) -> None:
    """How the real inputs differ from the simulated ones: RUN/coldstart/drift.html."""
    from distill.coldstart.drift import drift_report

    path = drift_report(run)
    print(f"drift report written: {path}", file=sys.stderr)
    print(path)


def promote(
    deployment: Path = typer.Argument(..., help="The deployment file (created on first promote)."),
    bundle: Path = typer.Option(..., "--bundle", help="The released bundle to send traffic to."),
    percent: int = typer.Option(100, min=0, max=100, help="Share of traffic for the bundle (100 switches over)."),
    comparison: Path = typer.Option(None, help="compare.json from `distill compare`: refuse unless v2 was better."),
    force: str = typer.Option(None, metavar="REASON", help="Promote although the comparison says v2 is not better."),
) -> None:
    """Switch (or split) a deployment's traffic to a released bundle; every switch is an event."""
    from distill.coldstart.promote import promote as promote_bundle

    current = promote_bundle(deployment, bundle, percent=percent, comparison=comparison, force=force)
    routes = ", ".join(f"{r['model']} {r['percent']}%" for r in current["routes"])
    print(f"{deployment}: {current['name']} -> {routes}", file=sys.stderr)


def rollback(deployment: Path = typer.Argument(..., help="The deployment file.")) -> None:
    """Put back the deployment's previous routes (an event too)."""
    from distill.coldstart.promote import rollback as roll_back

    current = roll_back(deployment)
    routes = ", ".join(f"{r['model']} {r['percent']}%" for r in current["routes"])
    print(f"{deployment}: rolled back -> {routes}", file=sys.stderr)

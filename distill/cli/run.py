"""`distill run SPEC`: every stage from spec to a verified bundle, skipping what is already done."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from distill.cli.params import RecordsOpt


def run(
    spec: Annotated[Path, typer.Argument(help="The task spec YAML file.")],
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="Replace the spec's teacher: offline, openai:MODEL, anthropic:MODEL, hf:DIR.")] = None,
    records: RecordsOpt = None,
    run_id: Annotated[str, typer.Option("--run-id", help="Run directory name under runs/<spec-name>/.")] = "main",
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where run directories live.")] = Path("runs"),
    override_gate: Annotated[Optional[str], typer.Option("--override-gate", help="Local development only: release despite a failed gate, with this written reason (needs DISTILL_ALLOW_GATE_OVERRIDE=1).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Run nothing: say which stages would run, and why.")] = False,
) -> None:
    """Plan, generate, review, train, evaluate and release; re-running skips every stage whose inputs are unchanged."""
    from distill.pipeline import run_pipeline
    from distill.rundir import RunDir
    from distill.synthesis import override_teacher
    from distill.synthesis.cost import estimate_plan, load_prices
    from distill.validate import check_spec

    checked = check_spec(spec)
    for warning in checked.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    loaded = override_teacher(checked.loaded, teacher, records)
    if check:
        from distill.pipeline import stale_stages

        stale = stale_stages(loaded, RunDir.create(loaded, root=runs_dir, run_id=run_id), override_reason=override_gate)
        for name, reasons in stale.items():
            print(f"{name}: {'; '.join(reasons)}")
        print("every stage is up to date" if not stale else f"{len(stale)} stage(s) would run", file=sys.stderr)
        return
    print(estimate_plan(loaded, load_prices(None)).summary(), file=sys.stderr)
    summary = run_pipeline(loaded, runs_dir=runs_dir, run_id=run_id, override_reason=override_gate,
                           show_progress=sys.stderr.isatty() or bool(os.environ.get("DISTILL_PROGRESS")))
    print(summary.text(RunDir.open(summary.run_dir)), file=sys.stderr)
    if summary.waiting_for:
        raise typer.Exit(4)
    print(summary.bundle)

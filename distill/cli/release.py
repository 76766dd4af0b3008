"""`distill release RUN` and `distill verify BUNDLE`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def release(
    run: Path = typer.Argument(..., help="The run directory (runs/<spec-name>/<run-id>)."),
    override_gate: str = typer.Option(None, "--override-gate", metavar="REASON",
                                      help="Release although the gate fails (local development only: needs "
                                           "DISTILL_ALLOW_GATE_OVERRIDE=1). The reason is stamped into the bundle."),
) -> None:
    """Gate the run, then write the bundle (weights, cards, manifest) and its tar.gz under RUN/release/."""
    from distill.release import release as write_release
    from distill.rundir import RunDir
    from distill.stages import release_inputs, run_stage

    run_dir = RunDir.open(run)
    inputs = release_inputs(run_dir.path, run_dir.load_spec(), override_gate)
    _, bundle = run_stage(run_dir, "release", inputs, lambda: write_release(run, override_reason=override_gate))
    print(f"bundle written: {bundle} and {bundle.name}.tar.gz", file=sys.stderr)
    print(bundle)


def verify(bundle: Path = typer.Argument(..., help="A bundle directory or its .tar.gz.")) -> None:
    """Check every file of a bundle against its manifest: tampered, missing or extra files fail."""
    from distill.release import verify as verify_bundle

    report = verify_bundle(bundle)
    for problem in report.problems:
        print(f"FAIL {problem}", file=sys.stderr)
    if not report.ok:
        print(f"{bundle}: {len(report.problems)} problem(s)", file=sys.stderr)
        raise typer.Exit(1)
    print(f"OK {report.name} {report.version}: {report.files_checked} files match the manifest ({bundle})")

"""`distill run SPEC`: plan -> generate -> review -> train -> eval -> release, in one command.

Each stage's inputs (settings, the files it reads, the upstream output) are compared with the record of
what it last completed with (`distill.stages`); a stage whose inputs are unchanged is skipped, and the
run says why each stage runs or is skipped. Once one stage runs, every later stage runs too. An
interrupted stage runs again and resumes its own partial work (the answer cache, the review store,
training checkpoints). The run stops at human sign-off unless the safety policy allows automatic
sign-off (the offline quickstart), which is recorded.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

from distill.keys import check_spec_secrets
from distill.rundir import RunDir, run_path
from distill.spec import LoadedSpec
from distill.stage_table import STAGE_TABLE, Dispatch, hold_run, inputs_now, run_one
from distill.stages import STAGES

__all__ = ["STAGES", "RunSummary", "run_pipeline", "stale_stages"]


@dataclass
class StageOutcome:
    name: str
    skipped: bool
    seconds: float
    detail: str = ""


@dataclass
class RunSummary:
    run_dir: Path
    stages: list[StageOutcome] = field(default_factory=list)
    waiting_for: str | None = None  # set when the run stopped at human sign-off
    bundle: Path | None = None

    def text(self, run: RunDir) -> str:
        lines = [f"run: {self.run_dir}"]
        for outcome in self.stages:
            state = "skipped (inputs unchanged)" if outcome.skipped else f"{outcome.seconds:7.1f} s"
            lines.append(f"  {outcome.name:<9} {state}  {outcome.detail}".rstrip())
        counts = run.stage("generate").get("counts", {})
        if counts:
            lines.append("records: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if self.waiting_for:
            lines.append(f"stopped: {self.waiting_for}")
        if self.bundle:
            lines.append(f"bundle: {self.bundle}  (verify with `distill verify {self.bundle}`)")
        return "\n".join(lines)


def run_pipeline(loaded: LoadedSpec, *, runs_dir: Path = Path("runs"), run_id: str = "main",
                 override_reason: str | None = None, show_progress: bool = True,
                 on_stage: Callable[[str], None] | None = None, dispatch: Dispatch | None = None) -> RunSummary:
    """Run every stage that is not fresh. `loaded` carries any command-line overrides already;
    `on_stage(name)` is told before each stage that runs (the service turns it into the job's status).
    `dispatch(name, work)` runs a stage's work elsewhere and returns its result (the service's Ray executor
    runs it as a Ray task); by default it runs here. Holds the run's lock throughout, so a second command
    on the same run fails at once; with `dispatch`, each stage's work holds it wherever it runs, and the
    caller guarantees one driver per run (the service's job lease does)."""
    check_spec_secrets(loaded)  # before anything is written under runs_dir
    path = run_path(loaded.spec.name, root=runs_dir, run_id=run_id)
    with nullcontext() if dispatch else hold_run(path):
        run = RunDir.create(loaded, root=runs_dir, run_id=run_id)
        return _run_stages(run, loaded, _flags(override_reason, show_progress), on_stage, dispatch)


def _flags(override_reason: str | None, show_progress: bool) -> dict[str, dict[str, Any]]:
    """What `distill run` sets of each stage's flags; every other one is the spec's."""
    return {"generate": {"show_progress": show_progress}, "release": {"override_reason": override_reason}}


def _run_stages(run: RunDir, loaded: LoadedSpec, flags: dict[str, dict[str, Any]],
                on_stage: Callable[[str], None] | None, dispatch: Dispatch | None) -> RunSummary:
    summary = RunSummary(run.path)
    upstream_ran = None
    for name, stage in STAGE_TABLE.items():
        started = time.monotonic()
        ran, result = run_one(name, run, loaded, skip_if_fresh=True, upstream_ran=upstream_ran, dispatch=dispatch,
                              on_start=partial(on_stage, name) if on_stage else None, **flags.get(name, {}))
        if ran and stage.state_of(result) is None:
            raise stage.stopped(result, run.path)
        if ran and stage.state_of(result) == "waiting":
            summary.waiting_for = _waiting_message(run)
            break
        summary.stages.append(StageOutcome(name, skipped=not ran, seconds=time.monotonic() - started,
                                           detail=stage.summary(result) if ran else ""))
        upstream_ran = name if ran else upstream_ran
    if summary.waiting_for is None:
        summary.bundle = Path(RunDir.open(run.path).stage("release").get("bundle", "")) or None
    return summary


def _waiting_message(run: RunDir) -> str:
    return (f"the dataset needs a human sign-off: `distill review {run.path}` shows what to check, "
            f"`distill review {run.path} signoff --help` how to sign; then run this command again")


def stale_stages(loaded: LoadedSpec, run: RunDir, *, override_reason: str | None = None) -> dict[str, list[str]]:
    """Which stages `run_pipeline` would run, and why, without running anything ({} when all are fresh)."""
    stale: dict[str, list[str]] = {}
    flags = _flags(override_reason, show_progress=False)
    for name in STAGE_TABLE:
        reasons = RunDir.open(run.path).stale_reasons(name, inputs_now(name, run, loaded, **flags.get(name, {})))
        if stale:
            reasons.insert(0, f"{list(stale)[-1]} runs before it")
        if reasons:
            stale[name] = reasons
    return stale

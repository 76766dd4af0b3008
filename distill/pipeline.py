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

from distill import stages
from distill.errors import Problem, RunDirError
from distill.keys import check_spec_secrets
from distill.rundir import RunDir, run_path
from distill.runlock import run_lock
from distill.spec import LoadedSpec

STAGES = stages.STAGES


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


Step = tuple[str, Callable[[], dict[str, Any]], Callable[[], Any]]


def run_pipeline(loaded: LoadedSpec, *, runs_dir: Path = Path("runs"), run_id: str = "main",
                 override_reason: str | None = None, show_progress: bool = True,
                 on_stage: Callable[[str], None] | None = None,
                 dispatch: Callable[[str, Callable[[], Any]], Any] | None = None) -> RunSummary:
    """Run every stage that is not fresh. `loaded` carries any command-line overrides already;
    `on_stage(name)` is told before each stage that runs (the service turns it into the job's status).
    `dispatch(name, work)` runs a stage's work elsewhere and returns its result (the service's Ray executor
    runs it as a Ray task); by default it runs here. Holds the run's lock throughout, so a second command
    on the same run fails at once; with `dispatch`, each stage's work holds it wherever it runs, and the
    caller guarantees one driver per run (the service's job lease does)."""
    check_spec_secrets(loaded)  # before anything is written under runs_dir
    path = run_path(loaded.spec.name, root=runs_dir, run_id=run_id)
    with nullcontext() if dispatch else run_lock(path):
        return _run_stages(RunDir.create(loaded, root=runs_dir, run_id=run_id), loaded, override_reason,
                           show_progress, on_stage, dispatch)


def _run_stages(run: RunDir, loaded: LoadedSpec, override_reason: str | None, show_progress: bool,
                on_stage: Callable[[str], None] | None,
                dispatch: Callable[[str, Callable[[], Any]], Any] | None) -> RunSummary:
    summary = RunSummary(run.path)
    upstream_ran = None
    for name, inputs_of, work in _steps(loaded, run, override_reason, show_progress):
        started = time.monotonic()
        if dispatch is not None:
            work = (lambda name=name, work=work: dispatch(name, partial(_locked, run.path, work)))
        intact = _output_intact(name, run)
        ran, detail = stages.run_stage(run, name, inputs_of(), work, skip_if_fresh=intact, upstream_ran=upstream_ran,
                                       on_start=(lambda name=name: on_stage(name)) if on_stage else None,
                                       rerender=partial(RERENDER[name], run.path) if name in RERENDER else None)
        if ran and detail is None:
            summary.waiting_for = _waiting_message(run)
            break
        summary.stages.append(StageOutcome(name, skipped=not ran, seconds=time.monotonic() - started,
                                           detail=str(detail or "")))
        upstream_ran = name if ran else upstream_ran
    if summary.waiting_for is None:
        summary.bundle = Path(RunDir.open(run.path).stage("release").get("bundle", "")) or None
    return summary


def _rerender_review(run_dir: Path) -> None:
    from distill.review.report import rerender_report

    rerender_report(run_dir)


def _rerender_eval(run_dir: Path) -> None:
    from distill.evaluate.report import rerender_eval_report

    rerender_eval_report(run_dir)


RERENDER = {"review": _rerender_review, "eval": _rerender_eval}  # a report whose template changed, drawn again


def _locked(path: Path, work: Callable[[], Any]) -> Any:
    """A stage's work under the run's lock, in whichever process runs it."""
    with run_lock(path):
        return work()


def _output_intact(name: str, run: RunDir) -> bool:
    """A stage counts as done only while what it wrote is still whole: a release whose bundle no longer
    verifies (deleted, or left without its weights) is written again even when its inputs are unchanged."""
    if name != "release":
        return True
    from distill.release import verify

    bundle = RunDir.open(run.path).stage("release").get("bundle")
    intact = bool(bundle) and verify(Path(bundle)).ok
    if not intact and bundle:
        stages.say(f"[release] the bundle {bundle} does not verify: it is written again")
    return intact


def stale_stages(loaded: LoadedSpec, run: RunDir, *, override_reason: str | None = None) -> dict[str, list[str]]:
    """Which stages `run_pipeline` would run, and why, without running anything ({} when all are fresh)."""
    stale: dict[str, list[str]] = {}
    for name, inputs_of, _ in _steps(loaded, run, override_reason, show_progress=False):
        reasons = RunDir.open(run.path).stale_reasons(name, inputs_of())
        if stale:
            reasons.insert(0, f"{list(stale)[-1]} runs before it")
        if reasons:
            stale[name] = reasons
    return stale


def _steps(loaded: LoadedSpec, run: RunDir, override_reason: str | None, show_progress: bool) -> list[Step]:
    """Each stage's inputs (computed when its turn comes: they include the upstream output) and work."""
    from distill.evaluate.stage import eval_settings_from_spec, judge_reference
    from distill.review.stage import review_auto_signoff, spec_review_settings
    from distill.train import spec_train_config
    from distill.train.config import pinned_fields

    spec, path = loaded.spec, run.path
    review = spec_review_settings(loaded)
    config = spec_train_config(loaded)
    evaluation = eval_settings_from_spec(spec, loaded.directory)
    judge_line = judge_reference(loaded, None)[1]
    return [
        ("generate", lambda: stages.generate_inputs(path, loaded), lambda: _generate(loaded, run, show_progress)),
        ("review", lambda: stages.review_inputs(path, policy=review["policy"], judge_model=review["judge"] and review["judge_model"],
                                                eval_files=review["eval_files"], auto_signoff=review_auto_signoff(review)),
         lambda: _review(run, review)),
        ("train", lambda: stages.train_inputs(path, config, spec.kind),
         lambda: _train(run, config, spec.kind, pinned=pinned_fields(loaded))),
        ("eval", lambda: stages.eval_inputs(path, loaded, evaluation, judge=judge_line, heldout=None),
         lambda: _evaluate(run, evaluation)),
        ("release", lambda: stages.release_inputs(path, loaded, override_reason), lambda: _release(run, override_reason)),
    ]


# --- the stages, each a call into its own package ---


def _generate(loaded: LoadedSpec, run: RunDir, show_progress: bool) -> str:
    from distill.synthesis import generate

    from distill.synthesis.progress import usd

    result = generate(loaded, run, show_progress=show_progress)
    if not result.complete:
        why = result.tally.aborted or ("the spending cap was reached" if result.tally.stopped_by_cap else "records are missing")
        stages.say(result.summary)
        raise RunDirError(Problem(f"generation stopped before every record was done: {why}", file=run.path,
                                  hint="fix the cause, then run again to resume"))
    return f"{result.tally.done} records, {usd(result.spent_total_usd)} spent"


def _review(run: RunDir, settings: dict[str, Any]) -> str | None:
    """The automatic review; returns None when a human must sign off before training."""
    from distill.review.stage import review_with_settings, summary_line

    return summary_line(review_with_settings(run.path, settings))


def _waiting_message(run: RunDir) -> str:
    return (f"the dataset needs a human sign-off: `distill review {run.path}` shows what to check, "
            f"`distill review {run.path} signoff --help` how to sign; then run this command again")


def _train(run: RunDir, config, kind: str, *, pinned: set[str]) -> str:
    from distill.review import reviewed_examples
    from distill.train import train_student
    from distill.train.budget import planned_config, write_plan
    from distill.train.preference import run_preference

    examples = reviewed_examples(run.path)
    config, plan = planned_config(config, [e["text"] for e in examples], run.path / "train", pinned=pinned)
    result = train_student(examples, run.path / "train", config, kind=kind, replace_other=True)
    if plan is not None:
        write_plan(run.path / "train", plan)
    tuned = run_preference(run.path, config, kind)  # training.preference: DPO after the supervised phase
    return f"{result.tokens:,} tokens, validation {result.val_bpb:.3f} bits/byte" + (f"; {tuned}" if tuned else "")


def _evaluate(run: RunDir, settings) -> str:
    from distill.evaluate.stage import evaluate_run

    result = evaluate_run(run.path, settings=settings)
    return f"validation {result.validation_bpb:.3f} bits/byte"


def _release(run: RunDir, override_reason: str | None) -> str:
    from distill.release import release

    return str(release(run.path, override_reason=override_reason))

"""The five stages, each wired once: its settings (the spec, with a stage command's flags), its input
record, its work, and the line `distill run` prints for it.

`distill run` (`distill.pipeline`), the stage commands (`distill generate`, `review`, `train`, `eval`,
`release`) and the service's runner (through `run_pipeline`) all run a stage with `run_one(name, ...)`;
the stage commands reach it through `run_command`, which opens (for generate: creates) the run. This
module is the one layer that takes the run's lock: `run_one` holds it for a stage, `hold_run` for a
whole `distill run`; a stage's work that runs elsewhere (`dispatch`, a Ray task) holds it where it runs.

Adding a stage is one `Stage` in `STAGE_TABLE` (and its name in `distill.stages.STAGES`, in run order).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from distill import stages
from distill.errors import DistillError, Problem, RunDirError
from distill.evaluate.report import rerender_eval_report
from distill.evaluate.stage import EvalResult, eval_settings_from_spec, evaluate_run, judge_reference
from distill.keys import check_spec_secrets
from distill.release import release, verify
from distill.review import reviewed_examples
from distill.review.policy import load_policy
from distill.review.report import rerender_report
from distill.review.stage import review_auto_signoff, review_with_settings, spec_review_settings, summary_line
from distill.rundir import RunDir, StageState, run_path
from distill.runlock import run_lock
from distill.spec import LoadedSpec
from distill.synthesis import generate
from distill.synthesis.progress import usd
from distill.train import make_train_config, spec_train_config, train_student
from distill.train.budget import planned_config, write_plan
from distill.train.config import pinned_fields
from distill.train.preference import run_preference

Dispatch = Callable[[str, Callable[[], Any]], Any]


@dataclass(frozen=True)
class Stage:
    """One stage. `settings(loaded, **flags)` is everything its inputs and work read (a stage command's flags
    replace the spec's values; `distill run` passes none but its own); `inputs(run_dir, loaded, settings)`
    its input record (`distill.stages`); `run(run, loaded, settings)` its work; `summary(result)` the line
    `distill run` prints, None when a person must act before the next stage (the review's sign-off)."""

    name: str
    settings: Callable[..., Any]
    inputs: Callable[[Path, LoadedSpec, Any], dict[str, Any]]
    run: Callable[[RunDir, LoadedSpec, Any], Any]
    summary: Callable[[Any], str | None]
    finished: Callable[[Any], bool] = lambda result: True  # False: stopped early, resumes next time, nothing recorded
    stopped: Callable[[Any, Path], DistillError] | None = None  # why `distill run` cannot go on after an early stop
    rerender: Callable[[Path], None] | None = None  # the report drawn again when only its templates changed
    intact: Callable[[Path], bool] = lambda run_dir: True  # what it wrote is still whole (else it runs again)
    lock: Callable[[Any], dict[str, Any]] = lambda settings: {}  # `run_lock`'s options (a generate shard's)
    creates_run: bool = False  # the first stage makes the run directory; later ones open it

    def state_of(self, result: Any) -> StageState | None:
        if not self.finished(result):
            return None
        return "waiting" if self.summary(result) is None else "done"


# --- generate ---


@dataclass(frozen=True)
class GenerateSettings:
    shard: tuple[int, int] = (0, 1)
    mode: str = "online"
    max_cost_usd: float | None = None
    prices: Path | None = None
    batch_poll_s: float = 30.0
    executor: str = "local"
    ray_address: str | None = None
    shards: int | None = None
    show_progress: bool = True


def generate_settings(loaded: LoadedSpec, **flags: Any) -> GenerateSettings:
    return GenerateSettings(**flags)


def generate_work(run: RunDir, loaded: LoadedSpec, settings: GenerateSettings):
    if settings.executor == "ray":
        from distill.scale import import_ray  # the optional distill[ray] extra, loaded only when asked for

        import_ray()
        from distill.scale.ray_synthesis import generate_on_ray

        return generate_on_ray(loaded, run, address=settings.ray_address, shards=settings.shards,
                               max_cost_usd=settings.max_cost_usd, prices_path=settings.prices,
                               show_progress=settings.show_progress)
    return generate(loaded, run, shard=settings.shard, mode=settings.mode, max_cost_usd=settings.max_cost_usd,  # type: ignore[arg-type]
                    prices_path=settings.prices, show_progress=settings.show_progress, batch_poll_s=settings.batch_poll_s)


def generation_stopped(result, run_dir: Path) -> DistillError:
    why = result.tally.aborted or ("the spending cap was reached" if result.tally.stopped_by_cap else "records are missing")
    stages.say(result.summary)
    return RunDirError(Problem(f"generation stopped before every record was done: {why}", file=run_dir,
                               hint="fix the cause, then run again to resume"))


def generate_lock(settings: GenerateSettings) -> dict[str, Any]:
    """A lone shard shares the run with the other shards; the Ray driver shares it with its own shard tasks."""
    return {"shard": settings.shard, "driver": settings.executor == "ray"}


GENERATE = Stage("generate", generate_settings, lambda run_dir, loaded, settings: stages.generate_inputs(run_dir, loaded),
                 generate_work, summary=lambda result: f"{result.tally.done} records, {usd(result.spent_total_usd)} spent",
                 finished=lambda result: result.complete, stopped=generation_stopped, lock=generate_lock, creates_run=True)


# --- review ---


def review_settings(loaded: LoadedSpec, *, no_judge: bool = False, policy: str | None = None,
                    eval_files: list[Path] = ()) -> dict[str, Any]:
    settings = spec_review_settings(loaded, judge=not no_judge)
    if policy:
        settings["policy"] = load_policy(policy)
    settings["eval_files"] = [*settings["eval_files"], *eval_files]
    return settings


def review_stage_inputs(run_dir: Path, loaded: LoadedSpec, settings: dict[str, Any]) -> dict[str, Any]:
    return stages.review_inputs(run_dir, policy=settings["policy"], judge_model=settings["judge"] and settings["judge_model"],
                                eval_files=settings["eval_files"], auto_signoff=review_auto_signoff(settings))


def review_work(run: RunDir, loaded: LoadedSpec, settings: dict[str, Any]):
    return review_with_settings(run.path, settings)


REVIEW = Stage("review", review_settings, review_stage_inputs, review_work, summary=summary_line, rerender=rerender_report)


# --- train ---


@dataclass(frozen=True)
class TrainSettings:
    config: Any  # TrainConfig
    kind: str
    pinned: set[str] = field(default_factory=set)
    replace_other: bool = True


def train_settings(loaded: LoadedSpec, *, minutes: float | None = None, steps: int | None = None,
                   tokens: int | None = None, compile: bool | None = None, threads: int | None = None,
                   replace_other: bool = True) -> TrainSettings:
    """The spec's training settings; a budget flag replaces the spec's budget. `replace_other`: a train/
    folder holding a training from other inputs is cleared (`distill run`) or refused (`distill train`)."""
    config = spec_train_config(loaded)
    overrides: dict[str, Any] = {}
    if config.budget is not None and (minutes is not None or tokens is not None) and steps is None:
        overrides["budget"] = {"minutes": minutes} if minutes is not None else {"tokens": tokens}
    elif minutes is not None or steps is not None or tokens is not None:
        overrides.update(max_minutes=minutes, max_steps=steps, max_tokens=tokens, budget=None)
    if compile is not None:
        overrides["compile"] = compile
    if threads is not None:
        overrides["num_threads"] = threads
    if overrides:
        config = make_train_config({**config.model_dump(), **overrides})
    return TrainSettings(config, loaded.spec.kind, pinned_fields(loaded), replace_other)


def train_work(run: RunDir, loaded: LoadedSpec, settings: TrainSettings):
    examples = reviewed_examples(run.path)
    config, plan = planned_config(settings.config, [e["text"] for e in examples], run.path / "train", pinned=settings.pinned)
    result = train_student(examples, run.path / "train", config, kind=settings.kind, replace_other=settings.replace_other)
    if plan is not None:
        write_plan(run.path / "train", plan)
    tuned = run_preference(run.path, config, settings.kind)  # training.preference: DPO after the supervised phase
    if tuned:
        stages.say(f"[train] {tuned}")
    return result


TRAIN = Stage("train", train_settings,
              lambda run_dir, loaded, settings: stages.train_inputs(run_dir, settings.config, settings.kind), train_work,
              summary=lambda result: f"{result.tokens:,} tokens, validation {result.val_bpb:.3f} bits/byte")


# --- eval ---


@dataclass(frozen=True)
class EvalStageSettings:
    settings: Any  # EvalSettings
    judge: str | None = None
    no_judge: bool = False
    heldout: Path | None = None
    against: Path | None = None
    judge_line: str = ""


def eval_stage_settings(loaded: LoadedSpec, *, judge: str | None = None, no_judge: bool = False,
                        heldout: Path | None = None, against: Path | None = None, **overrides: Any) -> EvalStageSettings:
    """The spec's evaluation section; each flag given (`prompts`, `samples_per_prompt`, ...) replaces its value."""
    settings = eval_settings_from_spec(loaded.spec, loaded.directory)
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    line = "Not graded (--no-judge)." if no_judge else judge_reference(loaded, judge)[1]
    return EvalStageSettings(settings, judge, no_judge, heldout, against, line)


def eval_stage_inputs(run_dir: Path, loaded: LoadedSpec, chosen: EvalStageSettings) -> dict[str, Any]:
    return stages.eval_inputs(run_dir, loaded, chosen.settings, judge=chosen.judge_line, heldout=chosen.heldout)


def eval_work(run: RunDir, loaded: LoadedSpec, chosen: EvalStageSettings) -> EvalResult:
    return evaluate_run(run.path, settings=chosen.settings, judge=chosen.judge, no_judge=chosen.no_judge,
                        heldout=chosen.heldout, against=chosen.against)


EVAL = Stage("eval", eval_stage_settings, eval_stage_inputs, eval_work,
             summary=lambda result: f"validation {result.validation_bpb:.3f} bits/byte", rerender=rerender_eval_report)


# --- release ---


@dataclass(frozen=True)
class ReleaseSettings:
    override_reason: str | None = None
    signing_key: Path | None = None
    formats: list[str] | None = None  # `distill export`: replaces the spec's release.formats
    openssf_key: Path | None = None  # the OpenSSF model signature's key (else $DISTILL_OPENSSF_KEY)


def release_intact(run_dir: Path) -> bool:
    """A release counts as done only while its bundle still verifies (not deleted, not left without its weights)."""
    bundle = RunDir.open(run_dir).stage("release").get("bundle")
    intact = bool(bundle) and verify(Path(bundle)).ok
    if not intact and bundle:
        stages.say(f"[release] the bundle {bundle} does not verify: it is written again")
    return intact


def release_work(run: RunDir, loaded: LoadedSpec, settings: ReleaseSettings) -> Path:
    return release(run.path, override_reason=settings.override_reason, signing_key=settings.signing_key,
                   formats=settings.formats, openssf_key=settings.openssf_key)


RELEASE = Stage("release", lambda loaded, **flags: ReleaseSettings(**flags),
                lambda run_dir, loaded, s: stages.release_inputs(run_dir, loaded, s.override_reason, s.formats),
                release_work, summary=str, intact=release_intact)


STAGE_TABLE: dict[str, Stage] = {stage.name: stage for stage in (GENERATE, REVIEW, TRAIN, EVAL, RELEASE)}
assert tuple(STAGE_TABLE) == stages.STAGES, "every stage has one entry, in run order"


# --- running one ---


@contextmanager
def hold_run(run_path: Path, **lock: Any) -> Iterator[None]:
    """The run's lock (`distill.runlock`), for a stage or, in `distill run`, for every stage in turn."""
    with run_lock(run_path, **lock):
        yield


def run_one(name: str, run: RunDir, loaded: LoadedSpec, *, skip_if_fresh: bool = False, upstream_ran: str | None = None,
            on_start: Callable[[], None] | None = None, dispatch: Dispatch | None = None,
            **flags: Any) -> tuple[bool, Any]:
    """Run stage `name` on `run` under the run's lock and record its inputs (`stages.run_stage`: skip when
    fresh, say why it runs). `dispatch(name, work)` runs the work elsewhere, which holds the lock there.
    Returns (ran, the work's result)."""
    stage = STAGE_TABLE[name]
    settings = stage.settings(loaded, **flags)
    work = partial(stage.run, run, loaded, settings)
    lock = stage.lock(settings)
    if dispatch is not None:
        work = partial(dispatch, name, partial(_locked, run.path, lock, work))
    with nullcontext() if dispatch is not None else hold_run(run.path, **lock):
        fresh_allowed = skip_if_fresh and stage.intact(run.path)
        return stages.run_stage(run, name, stage.inputs(run.path, loaded, settings), work, skip_if_fresh=fresh_allowed,
                                upstream_ran=upstream_ran, state_of=stage.state_of, on_start=on_start,
                                rerender=partial(stage.rerender, run.path) if stage.rerender else None)


def _locked(run_path: Path, lock: dict[str, Any], work: Callable[[], Any]) -> Any:
    """A stage's work under the run's lock, in whichever process runs it."""
    with hold_run(run_path, **lock):
        return work()


def run_command(name: str, where: Path | tuple[Path, str], loaded: LoadedSpec | None = None, **flags: Any) -> tuple[RunDir, Any]:
    """A stage command: `where` is the run directory, or for generate (which makes it) (runs folder, run id)
    with the spec `loaded`. The lock is held from before the run is opened until its inputs are recorded.
    Returns (the run, the work's result)."""
    stage = STAGE_TABLE[name]
    if stage.creates_run:
        runs_dir, run_id = where  # type: ignore[misc]
        check_spec_secrets(loaded)  # before anything, the lock file included, is written under the runs folder
        path = run_path(loaded.spec.name, root=runs_dir, run_id=run_id)
    else:
        path = RunDir.open(where).path  # type: ignore[arg-type]
    lock = stage.lock(stage.settings(loaded, **flags)) if stage.creates_run else {}
    with hold_run(path, **lock):
        if stage.creates_run:
            run = RunDir.create(loaded, root=runs_dir, run_id=run_id)
        else:
            run = RunDir.open(path)
            loaded = run.load_spec()
        return run, run_one(name, run, loaded, **flags)[1]


def inputs_now(name: str, run: RunDir, loaded: LoadedSpec, **flags: Any) -> dict[str, Any]:
    """Stage `name`'s input record as it would be now (`distill run --check`)."""
    stage = STAGE_TABLE[name]
    return stage.inputs(run.path, loaded, stage.settings(loaded, **flags))

"""`distill run SPEC`: plan -> generate -> review -> train -> eval -> release, in one command.

Each stage records, in the run manifest, the fingerprint of the inputs it last completed with; a stage
whose inputs are unchanged is skipped, and one that was interrupted runs again (each stage resumes its
own partial work: the answer cache, the review store, training checkpoints). The run stops at human
sign-off unless the safety policy allows automatic sign-off (the offline quickstart), which is recorded.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from distill.errors import Problem, RunDirError
from distill.keys import check_spec_secrets
from distill.rundir import RunDir, file_sha256, fingerprint, run_path
from distill.runlock import run_lock
from distill.spec import LoadedSpec

STAGES = ("generate", "review", "train", "eval", "release")


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


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_pipeline(loaded: LoadedSpec, *, runs_dir: Path = Path("runs"), run_id: str = "main",
                 override_reason: str | None = None, show_progress: bool = True) -> RunSummary:
    """Run every stage that is not fresh. `loaded` carries any command-line overrides already."""
    check_spec_secrets(loaded)  # before anything is written under runs_dir
    with run_lock(run_path(loaded.spec.name, root=runs_dir, run_id=run_id)):
        return _run_stages(RunDir.create(loaded, root=runs_dir, run_id=run_id), loaded, override_reason, show_progress)


def _run_stages(run: RunDir, loaded: LoadedSpec, override_reason: str | None, show_progress: bool) -> RunSummary:
    summary = RunSummary(run.path)
    spec = loaded.spec
    upstream = fingerprint(spec.model_dump(mode="json", exclude={"safety", "student", "training", "evaluation", "release"}))
    steps: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        ("generate", lambda: upstream, lambda: _generate(loaded, run, show_progress)),
        ("review", lambda: _review_inputs(run, loaded), lambda: _review(run, loaded)),
        ("train", lambda: _train_inputs(run, loaded), lambda: _train(run, loaded)),
        ("eval", lambda: fingerprint(spec.evaluation.model_dump(mode="json")), lambda: _evaluate(run, loaded)),
        ("release", lambda: fingerprint(spec.release.model_dump(mode="json"), override_reason),
         lambda: _release(run, override_reason)),
    ]
    previous = ""
    for name, inputs_of, work in steps:
        inputs = fingerprint(previous, inputs_of())
        own_state = run.stage(name).get("state", "done")  # the review keeps its state in RUN/review instead
        if own_state == "done" and run.manifest.get("pipeline", {}).get(name) == inputs and _output_intact(name, run):
            summary.stages.append(StageOutcome(name, skipped=True, seconds=0.0))
            say(f"[{name}] inputs unchanged since it completed: skipped")
        else:
            say(f"[{name}] running")
            started = time.monotonic()
            detail = work()
            run = RunDir.open(run.path)  # the stage updated the manifest on disk
            if name == "review" and detail is None:
                summary.waiting_for = _waiting_message(run)
                break
            run.manifest.setdefault("pipeline", {})[name] = inputs
            run.save()
            summary.stages.append(StageOutcome(name, skipped=False, seconds=time.monotonic() - started, detail=str(detail)))
        previous = inputs
    if summary.waiting_for is None:
        summary.bundle = Path(run.stage("release").get("bundle", "")) or None
    return summary


def _output_intact(name: str, run: RunDir) -> bool:
    """A stage counts as done only while what it wrote is still whole (a bundle that verifies, a saved model)."""
    if name == "release":
        from distill.release import verify

        bundle = run.stage("release").get("bundle")
        return bool(bundle) and verify(Path(bundle)).ok
    if name == "train":
        return any((run.path / "train" / "model").glob("*.safetensors"))
    return True


# --- the stages, each a call into its own package ---


def _generate(loaded: LoadedSpec, run: RunDir, show_progress: bool) -> str:
    from distill.synthesis import generate

    from distill.synthesis.progress import usd

    result = generate(loaded, run, show_progress=show_progress)
    if not result.complete:
        why = result.tally.aborted or ("the spending cap was reached" if result.tally.stopped_by_cap else "records are missing")
        say(result.summary)
        raise RunDirError(Problem(f"generation stopped before every record was done: {why}", file=run.path,
                                  hint="fix the cause, then run again to resume"))
    return f"{result.tally.done} records, {usd(result.spent_total_usd)} spent"


def _review_inputs(run: RunDir, loaded: LoadedSpec) -> str:
    from distill.review.policy import spec_policy

    return fingerprint(loaded.spec.safety.model_dump(mode="json"), spec_policy(loaded).model_dump(mode="json"),
                       file_sha256(run.path / "dataset" / "dataset_info.json"))


def _review(run: RunDir, loaded: LoadedSpec) -> str | None:
    """The automatic review; returns None when a human must sign off before training."""
    from distill.review import review_stage

    return review_stage(run.path, loaded)


def _waiting_message(run: RunDir) -> str:
    return (f"the dataset needs a human sign-off: `distill review {run.path}` shows what to check, "
            f"`distill review {run.path} signoff --help` how to sign; then run this command again")


def _train_inputs(run: RunDir, loaded: LoadedSpec) -> str:
    from distill.review import signoff_state

    return fingerprint(loaded.spec.student.model_dump(mode="json"), loaded.spec.training.model_dump(mode="json"),
                       signoff_state(run.path))


def _train(run: RunDir, loaded: LoadedSpec) -> str:
    from distill.review import reviewed_examples
    from distill.train import train_config_from_spec, train_student

    spec = loaded.spec
    config = train_config_from_spec(spec.student.model_dump(mode="json"), spec.training.model_dump(mode="json"),
                                    spec_dir=loaded.directory, file=loaded.path)
    result = train_student(reviewed_examples(run.path), run.path / "train", config, kind=spec.kind)
    return f"{result.tokens:,} tokens, validation {result.val_bpb:.3f} bits/byte"


def _evaluate(run: RunDir, loaded: LoadedSpec) -> str:
    from distill.evaluate.stage import EvalSettings, evaluate_run

    evaluation = loaded.spec.evaluation
    result = evaluate_run(run.path, settings=EvalSettings(
        prompts=evaluation.prompts, samples=evaluation.samples_per_prompt, max_new_tokens=evaluation.max_new_tokens,
        probe_samples=evaluation.probe_samples, seed=loaded.spec.seed))
    return f"validation {result['bpb']['validation']['bits_per_byte']:.3f} bits/byte"


def _release(run: RunDir, override_reason: str | None) -> str:
    from distill.release import release

    bundle = release(run.path, override_reason=override_reason)
    run = RunDir.open(run.path)
    run.manifest["stages"]["release"]["bundle"] = str(bundle)
    run.save()
    return str(bundle)

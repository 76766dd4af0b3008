"""What can fail after a human signs off, checked before anyone reviews: at submit against the planned
records (training's batch, the eval's rubric, probe sets and held-out files), and again when the review
has kept its records, before the job waits for a reviewer. A reviewer's work is never spent on a job
that cannot finish.

Each check is a certainty, never a guess: a training split is refused only when even its largest
possible size (every kept record in it but the validation share, one token per byte) fills less than
one batch.
"""

from __future__ import annotations

from pathlib import Path

from distill.errors import DistillError, Problem
from distill.review.policy import spec_policy
from distill.spec import LoadedSpec


def planned_problems(loaded: LoadedSpec) -> list[Problem]:
    """Problems that would stop training or eval of the spec's planned records, located in the spec."""
    spec = loaded.spec
    problems = []
    if spec.kind == "instruct":
        problems += _batch_problems(loaded, spec.records, None, "planned records")
    try:
        spec_policy(loaded)
    except DistillError:
        return problems  # the spec check reports the policy; the eval needs it
    try:
        _eval_needs(loaded)
    except DistillError as exc:
        problems += exc.problems
    return problems


def reviewed_problems(loaded: LoadedSpec, kept_texts: list[str]) -> list[Problem]:
    """Problems training the records the review kept would meet (before they go to a reviewer)."""
    return _batch_problems(loaded, len(kept_texts), kept_texts, "records the review kept")


def _batch_problems(loaded: LoadedSpec, records: int, texts: list[str] | None, what: str) -> list[Problem]:
    spec, training = loaded.spec, loaded.spec.training
    n_val = max(1, round(records * training.val_fraction))
    n_train = records - n_val
    if spec.kind == "text" and texts is not None:
        most_tokens = sum(len(t.encode("utf-8")) + 2 for t in texts)  # a token covers a byte or more; +start, end
        rows = max(0, (most_tokens - 1) // spec.student.context_length)
        unit = f"rows of {spec.student.context_length} tokens"
    else:
        rows, unit = n_train, "training examples"
    if rows >= training.batch_size:
        return []
    line = loaded.document.locate(("training", "batch_size"))[0]
    return [Problem(f"the {records} {what} give at most {rows} {unit} after the validation share, fewer than one batch "
                    f"of {training.batch_size}: training would fail after the sign-off", file=str(loaded.path), line=line,
                    key="training.batch_size", hint=f"set training.batch_size to {max(1, rows)} or less, or plan more records")]


def _eval_needs(loaded: LoadedSpec) -> None:
    """Build the eval's task (rubric, policy, held-out files) and load its probe sets, as eval will."""
    from distill.evaluate.probes import load_probes
    from distill.evaluate.stage import eval_task_from_spec

    task = eval_task_from_spec(loaded, loaded.spec.name)
    sets = loaded.spec.evaluation.probe_sets or (("instruct",) if task.kind == "instruct" else ("story",))
    load_probes(list(sets))


def kept_texts(run_dir: Path) -> list[str]:
    from distill.review.store import build_view, trainable

    return [r.text for r in build_view(run_dir) if trainable(r)]

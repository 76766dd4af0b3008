"""The one place the service touches the pipeline: validate and plan a spec, run a job's stages, and read
a run directory's progress, cost, review and release state. Everything else in the service talks to
these functions, so a change in the stage API is adapted here only.
"""

from __future__ import annotations

import copy
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from distill.rundir import stage_completed
from distill.service import progress as live
from distill.spec import LoadedSpec

STATUS_OF_STAGE = {"generate": "generating", "review": "reviewing", "train": "training", "eval": "evaluating",
                   "release": "releasing"}
STAGES = tuple(STATUS_OF_STAGE)
RUN_ID = "main"


@dataclass(frozen=True)
class CheckedSpec:
    loaded: LoadedSpec
    estimate_usd: float | None  # the plan's online cost; None when the model has no price
    warnings: list[str]


def check_and_plan(spec_file: Path, *, server: bool = False,
                   more: Callable[[LoadedSpec], list] | None = None) -> CheckedSpec:
    """Exactly `distill validate`'s checks (raises SpecError with every located problem), then the plan.
    `server`: an upload's paths stay inside it; `more`: the service's own checks, in the same pass, with
    what would fail after the sign-off (training's batch against the planned records, the eval's needs).
    A warning when the policy's sign-off sample cannot reach its limit."""
    from distill.review.signoff import spec_signoff_outlook
    from distill.service.prechecks import planned_problems
    from distill.synthesis.cost import estimate_plan, load_prices
    from distill.validate import check_spec

    def service_checks(loaded: LoadedSpec) -> list:
        return planned_problems(loaded) + (more(loaded) if more else [])

    checked = check_spec(spec_file, server=server, more=service_checks)
    plan = estimate_plan(checked.loaded, load_prices(None))
    signoff_warning = spec_signoff_outlook(checked.loaded)[1]
    return CheckedSpec(checked.loaded, plan.online_usd, checked.warnings + ([signoff_warning] if signoff_warning else []))


def job_spec(spec_file: Path, max_cost_usd: float | None) -> LoadedSpec:
    """The spec a job runs: the upload, with the tenant's remaining budget as the teacher's spending cap."""
    from distill.validate import check_spec

    return with_cap(check_spec(spec_file).loaded, max_cost_usd)


def with_cap(loaded: LoadedSpec, max_cost_usd: float | None) -> LoadedSpec:
    if max_cost_usd is None:
        return loaded
    teacher = loaded.spec.teacher
    cap = max_cost_usd if teacher.max_cost_usd is None else min(teacher.max_cost_usd, max_cost_usd)
    spec = loaded.spec.model_copy(update={"teacher": teacher.model_copy(update={"max_cost_usd": cap})})
    return loaded._replace(spec=spec)


def run_dir_for(runs_dir: Path, spec_name: str) -> Path:
    return (runs_dir / spec_name / RUN_ID).resolve()


def run_job(spec_file: Path, runs_dir: Path, max_cost_usd: float | None, on_stage: Callable[[str], None],
            dispatch: Callable[[str, Callable[[], Any]], Any] | None = None) -> str | None:
    """Run (or resume) every stage that is not fresh. Returns the bundle path, or None when the
    dataset waits for a human sign-off. `dispatch`: where each stage's work runs (`run_pipeline`)."""
    from distill.pipeline import run_pipeline

    loaded = job_spec(spec_file, max_cost_usd)
    run_dir = run_dir_for(runs_dir, loaded.spec.name)
    if (run_dir / "coldstart" / "lineage.json").is_file():  # a cold-start run: v2's own spec (version, start)
        from distill.rundir import RunDir

        loaded = with_cap(RunDir.open(run_dir).load_spec(), max_cost_usd)
    summary = run_pipeline(loaded, runs_dir=runs_dir, run_id=RUN_ID,
                           show_progress=False, on_stage=on_stage, dispatch=dispatch)
    if summary.waiting_for and not signed_off(run_dir):  # before a reviewer spends time on it
        from distill.errors import ConfigError
        from distill.service.prechecks import kept_texts, reviewed_problems

        problems = reviewed_problems(loaded, kept_texts(run_dir))
        if problems:
            raise ConfigError(*problems)
    return None if summary.waiting_for else str(summary.bundle)


def signed_off(run_dir: Path) -> bool:
    """True when the review's current sign-off exists (the job may leave awaiting_review)."""
    from distill.review.signoff import read_signoff, signoff_current
    from distill.review.store import build_view, review_dir, view_digest

    signoff = read_signoff(review_dir(run_dir))
    return signoff is not None and signoff_current(signoff, view_digest(build_view(run_dir)))


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {"stages": {}}


def file_stamp(*paths: Path) -> tuple:
    """What changes when any of `paths` is written, created or removed: (inode, mtime, size) each."""
    stamps = []
    for path in paths:
        try:
            info = path.stat()
        except (FileNotFoundError, NotADirectoryError):  # absent, or a file stands where its folder would
            stamps.append(None)
        else:
            stamps.append((info.st_ino, info.st_mtime_ns, info.st_size))
    return tuple(stamps)


class StampedCache:
    """Values computed from files, recomputed only when the files' stamp changed. Job status is polled
    by every watching client; most polls find the run directory as it was, and answer from memory.
    Of several requests that find a value stale at once, one computes it and the others wait for it."""

    def __init__(self, keep: int = 256):
        self.keep = keep
        self._values: dict[Any, tuple[tuple, Any]] = {}
        self._computing: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, stamp: tuple, compute: Callable[[], Any]) -> Any:
        with self._lock:
            cached = self._values.get(key)
            computing = self._computing.setdefault(key, threading.Lock())
        if cached is not None and cached[0] == stamp:
            return cached[1]
        with computing:
            with self._lock:
                cached = self._values.get(key)
            if cached is not None and cached[0] == stamp:  # computed while this request waited
                return cached[1]
            value = compute()
            with self._lock:
                self._values.pop(key, None)
                self._values[key] = (stamp, value)
                while len(self._values) > self.keep:
                    oldest = next(iter(self._values))  # the least recently computed
                    del self._values[oldest]
                    self._computing.pop(oldest, None)
        return value


_CACHED = StampedCache()


def spent_usd(run_dir: Path) -> float:
    """What the teacher's answers have cost so far (the answer cache records each answer's cost)."""
    path = run_dir / "generate" / "cache.sqlite"
    stamp = file_stamp(path, path.with_name(path.name + "-wal"))
    return 0.0 if stamp[0] is None else _CACHED.get(("spent", path), stamp, lambda: _sum_costs(path))


def _sum_costs(path: Path) -> float:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute("SELECT (SELECT COALESCE(SUM(cost_usd), 0) FROM answers)"
                         " + (SELECT COALESCE(SUM(cost_usd), 0) FROM unusable)").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return 0.0  # the generator has created the file but not its tables yet: nothing is spent
    finally:
        db.close()
    return float(row[0])


def progress(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per stage: its state from the run manifest, how long it has run, and for the running stage what
    its files show so far (`distill.service.progress`: records for generation; step, loss, bpb, tokens/s
    and time left for training)."""
    files = (run_dir / "manifest.json", run_dir / "spec.resolved.json", run_dir / "generate" / "records.jsonl",
             run_dir / "train" / "metrics.jsonl")
    stages = copy.deepcopy(_CACHED.get(("progress", run_dir), file_stamp(*files), lambda: _progress(run_dir)))
    for stage in stages.values():  # what moves with the clock is added after the cache
        seconds = live.elapsed(stage.pop("_manifest"))
        if seconds is not None:
            stage["elapsed_seconds"] = seconds
        if "records_written" in stage:
            stage.update(live.generation(stage["records_written"], stage["records"], seconds))
    return stages


def _progress(run_dir: Path) -> dict[str, dict[str, Any]]:
    manifest = read_manifest(run_dir)
    resolved = run_dir / "spec.resolved.json"
    records = json.loads(resolved.read_text())["records"] if resolved.is_file() else 0
    out: dict[str, dict[str, Any]] = {}
    for name in STAGES:
        stage = manifest.get("stages", {}).get(name, {})
        done = stage_completed(manifest, name)
        out[name] = {"state": "done" if done else stage.get("state", "pending"), "seconds": stage.get("seconds"),
                     "counts": stage.get("counts", {}), "_manifest": {"state": stage.get("state"), "started_at": stage.get("started_at")}}
    log = run_dir / "generate" / "records.jsonl"
    if out["generate"]["state"] != "done" and log.is_file():
        with log.open("rb") as handle:
            out["generate"]["records_written"] = min(records, sum(1 for _ in handle))
        out["generate"]["records"] = records
    if out["train"]["state"] == "running":
        out["train"].update(live.training(run_dir / "train"))
    return out


def bundle_archive(run_dir: Path) -> Path | None:
    """The released bundle's tar.gz, once the release stage (and so the gate) has passed."""
    manifest = read_manifest(run_dir)
    if not stage_completed(manifest, "release"):
        return None
    bundle = Path(manifest["stages"]["release"]["bundle"])
    archive = bundle.parent / f"{bundle.name}.tar.gz"
    return archive if archive.is_file() else None


def bundle_dir(run_dir: Path) -> Path | None:
    archive = bundle_archive(run_dir)
    return None if archive is None else archive.parent / archive.name.removesuffix(".tar.gz")


EVAL_FILES = {"html": "report.html", "md": "report.md", "json": "eval.json"}
CARDS = {"model": "README.md", "dataset": "DATASET_CARD.md"}


def eval_report(run_dir: Path, form: str) -> Path | None:
    path = run_dir / "eval" / EVAL_FILES[form]
    return path if path.is_file() else None


def card(run_dir: Path, which: str) -> Path | None:
    bundle = bundle_dir(run_dir)
    return None if bundle is None or not (bundle / CARDS[which]).is_file() else bundle / CARDS[which]


def dataset_archive(run_dir: Path) -> Path | None:
    """The reviewed dataset as the student trained on it (the records the review kept), as JSONL."""
    from distill.review.store import build_view, trainable

    if not stage_completed(read_manifest(run_dir), "train"):
        return None
    path = run_dir / "service-dataset.jsonl"
    if not path.is_file():
        from distill.rundir import write_atomic

        kept = [r for r in build_view(run_dir) if trainable(r)]
        write_atomic(path, "".join(json.dumps({"id": r.id, "prompt": r.prompt, "text": r.text}, ensure_ascii=False) + "\n"
                                   for r in kept))
    return path

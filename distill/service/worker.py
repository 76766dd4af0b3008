"""The worker child process: runs one job's stages and reports status and events to the database.

    python -m distill.service.worker --database-url URL JOB_ID
    python -m distill.service.worker --database-url URL --ray-address ADDR JOB_ID   (stages as Ray tasks)

It dies with the server that started it (a watchdog notices the parent is gone), so a restarted server
can resume the job from its run directory without two processes writing it. With `--ray-address` it
joins that Ray cluster and each stage's work runs there as a task (`distill.scale.ray_stages`); the
bookkeeping (run manifest, job status and events) stays here, and the tasks die with it.

The worker lowers its own CPU priority (`WORKER_NICENESS`) before any stage starts, and every thread and
process a stage makes inherits it: training takes whatever CPU the API leaves, so status and review
requests stay quick while a job trains on the same machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from distill.errors import DistillError
from distill.service import jobs, runner
from distill.service.db import Job, make_engine, make_sessions
from distill.service.progress import ProgressReporter, describe_progress

WORKER_NICENESS = 10


def _die_with_parent(parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(137)

    threading.Thread(target=watch, daemon=True).start()


def run_worker(database_url: str, job_id: str, dispatch: Callable[[str, Callable[[], Any]], Any] | None = None) -> int:
    """Run the job's stages (each stage's work through `dispatch` when given) and record the outcome."""
    sessions = make_sessions(make_engine(database_url))
    with sessions() as session:
        job = session.get(Job, job_id)
        spec_file, runs_dir, cap = Path(job.spec_file), Path(job.run_dir).parents[1], job.max_cost_usd
        run_dir = Path(job.run_dir)

        def on_stage(name: str) -> None:
            session.refresh(job)
            if job.status not in jobs.TERMINAL:
                jobs.set_status(session, job, runner.STATUS_OF_STAGE[name], f"{name} started", stage=name)

        try:
            with ProgressReporter(lambda: runner.progress(run_dir), _progress_writer(sessions, job_id)):
                bundle = runner.run_job(spec_file, runs_dir, cap, on_stage, dispatch)
        except DistillError as exc:
            session.rollback()
            session.refresh(job)
            job.error = {"code": type(exc).__name__, "message": str(exc),
                         "problems": [{"message": p.message, "key": p.key, "hint": p.hint} for p in exc.problems]}
            jobs.set_status(session, job, "failed", f"job failed: {exc.problems[0].message}")
            return 2
        except Exception as exc:  # a bug: keep the traceback in the worker log, tell the customer less
            traceback.print_exc()
            session.rollback()
            session.refresh(job)
            job.error = {"code": "internal_error", "message": f"{type(exc).__name__} (see the server's worker log for {job.id})"}
            jobs.set_status(session, job, "failed", "job failed with an internal error")
            return 1
        session.refresh(job)
        if bundle is None:
            jobs.set_status(session, job, "awaiting_review", "the dataset waits for a reviewer's sign-off")
        else:
            jobs.set_status(session, job, "succeeded", "released; the bundle can be downloaded", bundle=Path(bundle).name)
    return 0


def _progress_writer(sessions, job_id: str) -> Callable[[str, dict[str, Any]], None]:
    """Writes a running stage's progress as a `progress` event (from the reporter's thread: its own session)."""
    def write(stage: str, progress: dict[str, Any]) -> None:
        with sessions() as session:
            jobs.add_event(session, job_id, "progress", describe_progress(stage, progress), {"stage": stage, **progress})
            session.commit()

    return write


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m distill.service.worker")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--ray-address", help="run each stage as a task on this Ray cluster")
    parser.add_argument("job_id")
    args = parser.parse_args()
    _die_with_parent(os.getppid())
    os.nice(WORKER_NICENESS)
    if args.ray_address is None:
        sys.exit(run_worker(args.database_url, args.job_id))
    from distill.scale.ray_stages import run_stage_on_ray
    from distill.scale.ray_synthesis import connected

    with connected(args.ray_address):
        code = run_worker(args.database_url, args.job_id, dispatch=run_stage_on_ray)
    sys.exit(code)


if __name__ == "__main__":
    main()

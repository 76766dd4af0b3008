"""A service job's stages as Ray tasks (`distill serve --executor ray`).

The job's worker process (`python -m distill.service.worker --ray-address ...`) is the Ray driver: it
runs the pipeline's bookkeeping (which stages are stale, the run manifest, the job's status and events
in the database) and hands each stage's work to `run_stage_on_ray`, which runs it as one task with a
resource request: a CPU for generate, review, eval and release; for train also a GPU when the cluster
has one. The run directory must be on the folder every node shares.

Should the task's worker process or its node die, Ray runs the task again elsewhere (`max_retries`), and
the stage resumes from its run-dir files (the answer cache, the review store, training checkpoints).
Should the driver die (the server was killed, the job cancelled), Ray stops its tasks with it, so a
re-claimed job never has two writers.
"""

from __future__ import annotations

from typing import Any, Callable

import ray

from distill.scale.ray_synthesis import task_result

STAGE_RETRIES = 3  # a stage whose worker process or node dies is run again this many times


@ray.remote(max_retries=STAGE_RETRIES, retry_exceptions=False)
def stage_task(work: Callable[[], Any]) -> Any:
    """One stage's work on a node of the cluster; returns what the stage returns."""
    return work()


def stage_resources(name: str) -> dict[str, float]:
    gpus = 1 if name == "train" and ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return {"num_cpus": 1, "num_gpus": gpus}


def run_stage_on_ray(name: str, work: Callable[[], Any]) -> Any:
    """`run_pipeline`'s dispatch: the stage as a task named `distill-<stage>` (its worker process is
    called `ray::distill-<stage>` while it runs); waits for it and returns its result. A user mistake
    found on the worker (a missing key there) is raised as itself."""
    task = stage_task.options(name=f"distill-{name}", **stage_resources(name))
    return task_result(task.remote(work))

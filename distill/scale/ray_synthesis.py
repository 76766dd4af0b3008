"""`distill generate --executor ray`: the spec's shards as Ray tasks, one rate budget, one dataset.

The driver (the machine that runs the command) cuts the records into N deterministic shards (shard i
takes indices i, i+N, ...: the same `--shard i/N` split as on the command line), starts one task per
shard and shows their progress. Every shard runs the ordinary engine against the run directory on the
shared folder: its answers land in the run's content-addressed cache, its rows in its own log. A shard
whose worker or node dies is run again by Ray (`max_retries`); what it had already been answered comes
from the cache, so nothing is paid for twice. All shards reserve their spending against one cap (a
`SpendBudget` actor), so together they spend at most the spec's `max_cost_usd` (or `--max-cost`). When
every shard is done, the driver builds the dataset from the logs exactly as a one-process run does, so
the result is the same, byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any, Iterator

import ray

from distill.errors import DistillError
from distill.prompts import PromptRenderer
from distill.rundir import RunDir
from distill.runlock import run_lock
from distill.scale.ray_budget import SharedCap, SharedLimiter, shared_limiter, spend_budget
from distill.spec import LoadedSpec, Teacher
from distill.synthesis.dataset import log_path
from distill.synthesis.engine import Tally
from distill.synthesis.generate import GenerateResult, finish_generate, generate, record_generate
from distill.synthesis.progress import GenerateProgress
from distill.synthesis.recovery import open_cache

# A shard against an API mostly waits on the network: four share a core. A self-hosted teacher (hf)
# runs the model in the shard, so it takes a whole GPU.
API_SHARD_CPUS = 0.25
SHARD_RETRIES = 3  # a shard whose worker process or node dies is run again this many times


@contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Joined to the cluster at `address` for the block (None: $RAY_ADDRESS, else the cluster started on
    this machine by `ray start`, else a private one-machine cluster), and left after it.

    Workers' output stays in Ray's logs; Ray's own notices to the driver (a worker died, a task is
    retried), which it prints on stdout, go to stderr, so stdout keeps only distill's data."""
    if ray.is_initialized():  # a caller that joined already (a benchmark, the service) stays joined
        yield
        return
    with redirect_stdout(sys.stderr):
        ray.init(address=address, namespace="distill", log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=True)
        try:
            yield
        finally:
            ray.shutdown()


@ray.remote(max_retries=SHARD_RETRIES, retry_exceptions=False)
def generate_shard(loaded: LoadedSpec, run_path: str, shard: tuple[int, int], limiter: SharedLimiter | None,
                   budget: ray.actor.ActorHandle | None, options: dict[str, Any]) -> Tally:
    """One shard's records into the run's cache and its shard log (the dataset is the driver's job)."""
    spending = SharedCap(budget, shard[0]) if budget is not None else None
    with run_lock(Path(run_path), shard=shard):  # this task's process holds its shard, as the driver holds the run
        result = generate(loaded, RunDir.open(run_path), shard=shard, limiter=limiter, spending=spending,
                          build_dataset=False, show_progress=False, **options)
    return result.tally


def shard_resources(teacher: Teacher) -> dict[str, float]:
    return {"num_cpus": 1, "num_gpus": 1} if teacher.provider == "hf" else {"num_cpus": API_SHARD_CPUS}


def generate_on_ray(loaded: LoadedSpec, run: RunDir, *, address: str | None = None, shards: int | None = None,
                    max_cost_usd: float | None = None, prices_path: Path | None = None, show_progress: bool = True,
                    backoff_base_s: float = 1.0) -> GenerateResult:
    """Generate (or resume) every record over `shards` Ray tasks (default: one per CPU of the cluster)."""
    with connected(address):
        return _generate_on_ray(loaded, run, shards=shards, max_cost_usd=max_cost_usd, prices_path=prices_path,
                                show_progress=show_progress, backoff_base_s=backoff_base_s)


def _generate_on_ray(loaded: LoadedSpec, run: RunDir, *, shards: int | None, max_cost_usd: float | None,
                     prices_path: Path | None, show_progress: bool, backoff_base_s: float) -> GenerateResult:
    count = shards or max(1, int(ray.cluster_resources().get("CPU", 1)))
    renderer = PromptRenderer(loaded)
    run.start_stage("generate")
    limiter = shared_limiter(loaded.spec.teacher)
    cap = max_cost_usd if max_cost_usd is not None else loaded.spec.teacher.max_cost_usd
    budget = spend_budget(cap, spent_so_far(run)) if cap is not None else None  # one cap for all the shards
    options = {"max_cost_usd": max_cost_usd, "prices_path": prices_path, "backoff_base_s": backoff_base_s}
    task = generate_shard.options(**shard_resources(loaded.spec.teacher))
    pending = {task.remote(loaded, str(run.path), (i, count), limiter, budget, options): i for i in range(count)}
    started = time.monotonic()
    tallies = _wait_for_shards(pending, run.path / "generate", count, loaded.spec.records, show_progress)
    spent_total = spent_so_far(run)
    result = finish_generate(run.path, loaded.spec.records, loaded.spec.teacher, merge_tallies(tallies),
                             total=loaded.spec.records, whole_run=True,
                             template_hashes=json.dumps(renderer.template_hashes, sort_keys=True),
                             spent_total=spent_total, cap=cap, elapsed_s=time.monotonic() - started)
    record_generate(run, result, whole_run=True)
    return result


def spent_so_far(run: RunDir) -> float:
    """What the run's answers cost, across invocations (a lost cache is rebuilt from the logs first)."""
    cache = open_cache(run.path / "generate")
    try:
        return cache.total_cost()
    finally:
        cache.close()


def _wait_for_shards(pending: dict[Any, int], generate_dir: Path, count: int, records: int,
                     show_progress: bool) -> list[Tally]:
    """Each shard's tally, in shard order; the progress bar counts the rows the shards have logged."""
    tallies: dict[int, Tally] = {}
    logs = [LogLines(log_path(generate_dir, (i, count))) for i in range(count)]
    with GenerateProgress(records, enabled=show_progress) as progress:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=1.0)
            for ref in ready:
                tallies[pending.pop(ref)] = task_result(ref)
            progress.show_finished(min(records, sum(log.count() for log in logs)))
    return [tallies[i] for i in range(count)]


def task_result(ref: Any) -> Any:
    """A task's result; a user mistake found on a worker (a missing API key there) is raised as itself."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, DistillError):
            raise exc.cause from None
        raise


class LogLines:
    """Counts the lines of a growing shard log, reading only what was appended since the last look."""

    def __init__(self, path: Path):
        self.path, self.offset, self.lines = path, 0, 0

    def count(self) -> int:
        if self.path.exists():
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
            self.offset += len(chunk)
            self.lines += chunk.count(b"\n")
        return self.lines


def merge_tallies(tallies: list[Tally]) -> Tally:
    """The shards' tallies added up into the run's."""
    total = Tally()
    for tally in tallies:
        for field in dataclasses.fields(Tally):
            mine, theirs = getattr(total, field.name), getattr(tally, field.name)
            if isinstance(mine, dict):
                for kind, times in theirs.items():
                    mine[kind] = mine.get(kind, 0) + times
            elif isinstance(mine, bool) or mine is None or isinstance(theirs, str):
                setattr(total, field.name, mine or theirs)  # stopped by the cap / why a shard aborted
            else:
                setattr(total, field.name, mine + theirs)
    return total

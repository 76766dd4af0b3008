"""How torch's CPU threads share a busy machine.

torch runs its CPU ops on an OpenMP thread pool (GNU libgomp in the pip wheels), one thread per core.
Every op ends at a barrier where the threads wait for the slowest. By default libgomp's idle threads
spin there for a few hundred thousand iterations before sleeping, which is right on a machine of one's
own. On a shared one it is ruinous: when another process takes a core, the torch thread on that core
runs only part of the time, each of the thousands of barriers in a training step waits for it, and the
threads spinning at the barrier burn the very CPU time it needs. Measured on a 2-core machine under
other engineers' load: the `tiny` preset trained at 438 tokens/s with spinning threads and at 1,535
with sleeping ones; with one more single-threaded busy process, 269 against 1,028.

`set_thread_environment` makes waiting threads sleep (`OMP_WAIT_POLICY=PASSIVE`) and sizes the pool to
the CPUs this process may actually use: its affinity mask and, in a container, its cgroup CPU quota.
libgomp and MKL read these variables once, when torch loads them, so this runs when `distill` is
imported (before torch in every distill command and in every child process, which inherits them). A
value the user set wins. A program that imports torch before distill keeps torch's own settings.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota if there is one."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = Path("/sys/fs/cgroup/cpu.max")
    if quota.is_file():
        limit, _, period = quota.read_text().partition(" ")
        if limit != "max" and period.strip():  # "max 100000" means no quota
            cpus = min(cpus, max(1, math.ceil(int(limit) / int(period))))
    return max(1, cpus)


def set_thread_environment() -> None:
    """Threads that sleep at barriers, as many as the CPUs available; for torch to read when it loads."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "OMP_NUM_THREADS" not in os.environ and available_cpus() < (os.cpu_count() or 1):
        os.environ["OMP_NUM_THREADS"] = str(available_cpus())

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


class ThreadTuner:
    """Picks torch's intra-op thread count during CPU training, from the loop's own tokens/s.

    With the machine to itself a training runs fastest on every core. When other processes take cores,
    each barrier waits for a thread that is not running, and fewer threads can be faster: measured on a
    2-core machine under load, the `small` preset trained at 207 tokens/s on 2 threads and 355 on one.
    So every `explore_every` logged windows the tuner runs one window at the other count and keeps the
    faster of the two adjacent windows. An exploration that loses doubles the wait before the next one
    (up to `max_explore_every`), so a quiet machine pays about one slower window in fifty.
    """

    def __init__(self, cores: int, *, explore_every: int = 4, max_explore_every: int = 32):
        self.counts = sorted({cores, max(1, cores // 2), 1}, reverse=True)  # all cores first
        self.current = self.counts[0]
        self.home = self.current  # the count the last comparison chose
        self.rates: dict[int, float] = {}
        self.first_every, self.max_every = explore_every, max_explore_every
        self.every, self.windows, self.since = explore_every, 0, 0
        self.turn = 0  # which other count to try next

    def observe(self, tokens_per_s: float) -> int | None:
        """The tokens/s of the window just logged, run at `current` threads; the count to switch to, or None."""
        self.windows += 1
        if self.windows == 1 or len(self.counts) == 1:  # the first window holds compilation and warm-up
            return None
        self.rates[self.current] = tokens_per_s
        if self.current != self.home:  # an exploration window just ended: keep the faster
            if tokens_per_s > self.rates[self.home]:
                self.home, self.every = self.current, self.first_every
            else:
                self.every = min(self.max_every, self.every * 2)
            return self._switch(self.home)
        self.since += 1
        if self.since < self.every:
            return None
        self.since = 0
        others = [c for c in self.counts if c != self.home]
        self.turn += 1
        return self._switch(others[self.turn % len(others)])

    def _switch(self, count: int) -> int | None:
        changed = count != self.current
        self.current = count
        return count if changed else None

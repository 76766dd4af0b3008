"""torch's CPU threads sleep rather than spin when they wait, in every distill process (distill.threads)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO
from distill.threads import ThreadTuner, available_cpus

SHOW = ("import distill, torch, os; "
        "print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads())")


def python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**clean, **env}, capture_output=True,
                          text=True, check=True).stdout.split()


def test_importing_distill_before_torch_makes_waiting_threads_sleep_one_per_available_cpu() -> None:
    policy, threads = python(SHOW)
    assert policy == "PASSIVE"
    assert int(threads) == min(available_cpus(), int(threads))  # never more threads than CPUs we may use
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)


def test_a_users_own_settings_win() -> None:
    assert python(SHOW, OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1") == ["ACTIVE", "1"]


def test_child_processes_inherit_the_setting() -> None:
    code = ("import distill, subprocess, sys; "
            "print(subprocess.run([sys.executable, '-c', 'import os; print(os.environ[\"OMP_WAIT_POLICY\"])'], "
            "capture_output=True, text=True).stdout)")
    assert python(code) == ["PASSIVE"]


def run_tuner(tuner: ThreadTuner, rate_of, windows: int) -> list[int]:
    """The thread count each window ran at, when a window at n threads trains at rate_of(n) tokens/s."""
    used = []
    for _ in range(windows):
        used.append(tuner.current)
        tuner.observe(rate_of(tuner.current))
    return used


def test_on_a_quiet_machine_the_tuner_keeps_every_core_and_looks_less_and_less_often() -> None:
    used = run_tuner(ThreadTuner(2), {2: 4000.0, 1: 2300.0}.get, 200)
    assert used[0] == 2 and used.count(1) <= 8  # exploration windows only, ever rarer
    explored = [i for i, n in enumerate(used) if n == 1]
    assert all(b - a >= a_gap for a, b, a_gap in zip(explored, explored[1:], (4, 8, 16, 32, 32, 32, 32)))


def test_when_another_process_takes_a_core_the_tuner_moves_to_fewer_threads_and_back() -> None:
    rates = {2: 4000.0, 1: 2300.0}
    tuner = ThreadTuner(2)
    run_tuner(tuner, rates.get, 20)
    rates.update({2: 200.0, 1: 350.0})  # a busy process appears: the barrier waits for a descheduled thread
    busy = run_tuner(tuner, rates.get, 20)
    assert busy[-10:].count(1) >= 7  # all but the exploration windows
    rates.update({2: 4000.0, 1: 2300.0})  # it ends
    quiet = run_tuner(tuner, rates.get, 20)
    assert quiet[-10:].count(2) >= 7


def test_a_four_core_machine_also_tries_half_its_cores() -> None:
    assert ThreadTuner(4).counts == [4, 2, 1] and ThreadTuner(1).counts == [1]

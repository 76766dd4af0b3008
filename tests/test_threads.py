"""torch's CPU threads sleep rather than spin when they wait, in every distill process (distill.threads)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO
from distill.threads import available_cpus

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

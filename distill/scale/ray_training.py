"""`distill train RUN --executor ray`: training as one Ray task with a resource request.

The task asks the cluster for a node with `gpus` GPUs (and a CPU) and runs the ordinary
`distill train RUN` there, under `accelerate launch` when it has several GPUs, so synthesis and review
can run elsewhere meanwhile. The run directory must be on the folder every node shares. Should the
worker or its node die, Ray runs the task again (`max_retries`), and the training resumes from its
newest checkpoint to the weights an uninterrupted run ends with.
"""

from __future__ import annotations

import ctypes
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import ray

from distill.errors import ConfigError, Problem
from distill.scale.ray_synthesis import connected, task_result

TRAIN_RETRIES = 3
PR_SET_PDEATHSIG = 1  # Linux prctl: the signal a child gets when its parent dies


def _die_with_parent() -> None:
    """In the training child: if the Ray worker dies, so does the training (no second writer on resume)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@ray.remote(max_retries=TRAIN_RETRIES, retry_exceptions=False)
def train_on_node(run_path: str, args: list[str], gpus: int) -> dict[str, Any]:
    """`distill train` on this node; returns the result it prints."""
    command = [sys.executable, "-m", "distill", "train", run_path, *args]
    if gpus > 1:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "-m", "distill", "train", run_path, *args]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=_die_with_parent)
    if done.returncode == 2:  # a user mistake, already worded by the CLI
        raise ConfigError(*[line.removeprefix("error: ") for line in done.stderr.splitlines() if line.startswith("error: ")])
    if done.returncode != 0:
        raise RuntimeError(f"distill train failed on {ray.util.get_node_ip_address()} (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def train_on_ray(run: Path, args: list[str], *, address: str | None = None, gpus: int | None = None) -> dict[str, Any]:
    """Train RUN on the cluster; `gpus` None: one GPU when the cluster has any, else the CPU."""
    with connected(address):
        available = int(ray.cluster_resources().get("GPU", 0))
        wanted = (1 if available else 0) if gpus is None else gpus
        if wanted > available:
            raise ConfigError(Problem(f"--gpus {wanted}: the Ray cluster has {available} GPU(s)", key="--gpus",
                                      hint="add GPU nodes (ray start --num-gpus N) or ask for fewer"))
        task = train_on_node.options(num_cpus=1, num_gpus=wanted)
        return task_result(task.remote(str(Path(run).resolve()), args, wanted))

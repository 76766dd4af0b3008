"""A real two-node Ray cluster on this machine's loopback, for tests and benchmarks.

Two `ray start --block` processes, one CPU each: a head node advertising 127.0.0.2 and a second node
joining it, which Ray gives 127.0.0.1. (Ray rewrites the addresses 127.0.0.1 and localhost into the
machine's network address; any other loopback address it uses as given, so all traffic stays on
loopback.) Each runs in its own session and is stopped, with everything it started, on exit.

    with LoopbackRayCluster(env={"PYTHONPATH": repo}) as cluster:
        subprocess.run(["distill", "generate", spec, "--executor", "ray", "--ray-address", cluster.address])
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class LoopbackRayCluster:
    """`env`: extra environment for the nodes, which their workers inherit (PYTHONPATH, API keys)."""

    def __init__(self, *, env: dict[str, str] | None = None, cpus_per_node: int = 1):
        self.folder = Path(tempfile.mkdtemp(prefix="distill-ray-", dir="/tmp"))  # short: Ray's socket paths must fit
        self.port = free_port()
        self.address = f"127.0.0.2:{self.port}"
        self.env = {**os.environ, **(env or {}), "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # stop at once when told to
        self.cpus_per_node = cpus_per_node
        self.nodes: list[subprocess.Popen] = []

    def start(self) -> LoopbackRayCluster:
        ray = [str(Path(sys.executable).with_name("ray")), "start", "--block", "--num-cpus", str(self.cpus_per_node),
               "--disable-usage-stats", "--dashboard-agent-listen-port", "0"]
        commands = [
            ray + ["--head", "--node-ip-address", "127.0.0.2", "--port", str(self.port), "--include-dashboard=false",
                   "--temp-dir", str(self.folder)],
            ray + ["--address", self.address],
        ]
        try:
            for index, command in enumerate(commands):
                log = self.folder / f"node-{index}.log"
                with log.open("w") as handle:
                    self.nodes.append(subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=self.env,
                                                       start_new_session=True, preexec_fn=_stop_with_parent))
                deadline = time.monotonic() + 120
                while "Ray runtime started" not in log.read_text():
                    if self.nodes[-1].poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"ray start failed:\n{log.read_text()[-3000:]}")
                    time.sleep(0.5)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in reversed(self.nodes):  # the second node first, while the head can still see it leave
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(node.pid, signal.SIGKILL)  # anything of this node's session still running
            except ProcessLookupError:
                pass
            node.wait()
        self.nodes.clear()
        shutil.rmtree(self.folder, ignore_errors=True)  # Ray's session files and logs

    def __enter__(self) -> LoopbackRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_with_parent() -> None:
    """In a node's `ray start`: SIGTERM when the process that started it dies, so a test run that is
    killed (a timeout, Ctrl-C twice) does not leave a cluster running."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

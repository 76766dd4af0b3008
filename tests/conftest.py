"""Shared fixtures. `tests/` is on sys.path (pyproject), so tests import `teacher_server` directly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TINYSTORIES_SAMPLE = SHARED / "data" / "tinystories" / "tinystories_v1_train_head_2MiB.txt"


def run_distill(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real `distill` CLI in a subprocess (as a user would), capturing stdout and stderr."""
    return subprocess.run([sys.executable, "-m", "distill", *map(str, args)], cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def tinystories_sample() -> Path:
    if not TINYSTORIES_SAMPLE.is_file():
        pytest.skip("the shared TinyStories sample is not beside the checkout")
    return TINYSTORIES_SAMPLE


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (`@pytest.mark.anyio`) run on asyncio, like distill itself."""
    return "asyncio"


@pytest.fixture
def api_keys(monkeypatch):
    """Dummy keys for the loopback teacher server; real keys never enter tests."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster():
    """A real two-node Ray cluster on loopback, one CPU each, shared by the whole test session.

    The head advertises 127.0.0.2 and the second node 127.0.0.1 (both loopback): Ray rewrites the
    addresses 127.0.0.1 and localhost into the machine's network address, any other loopback address
    it uses as given. Both are `ray start --block` processes in their own session, stopped in teardown.
    Yields the address to pass as `--ray-address`.
    """
    pytest.importorskip("ray")
    import signal
    import tempfile
    import time

    folder = Path(tempfile.mkdtemp(prefix="distill-ray-", dir="/tmp"))  # short: Ray's socket paths must fit
    port = free_port()
    address = f"127.0.0.2:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # stop at once
           "DISTILL_TEST_TEACHER_KEY": "test-key"}  # workers read API keys from their own environment
    ray = [str(Path(sys.executable).with_name("ray")), "start", "--block", "--num-cpus", "1", "--disable-usage-stats",
           "--dashboard-agent-listen-port", "0"]
    nodes = [
        ray + ["--head", "--node-ip-address", "127.0.0.2", "--port", str(port), "--include-dashboard=false",
               "--temp-dir", str(folder)],
        ray + ["--address", address],
    ]
    started: list[subprocess.Popen] = []
    try:
        for index, command in enumerate(nodes):
            log = folder / f"node-{index}.log"
            with log.open("w") as handle:
                started.append(subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True))
            deadline = time.monotonic() + 120
            while "Ray runtime started" not in log.read_text():
                if started[-1].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ray start failed:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield address
    finally:
        for process in reversed(started):  # the second node first, while the head can still see it leave
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(process.pid, signal.SIGKILL)  # anything of this node's session still running
            except ProcessLookupError:
                pass
            process.wait()

"""Shared fixtures. `tests/` is on sys.path (pyproject), so tests import `teacher_server` directly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ray_cluster import LoopbackRayCluster, free_port  # noqa: F401 (free_port: for the tests)

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



@pytest.fixture(scope="session")
def ray_cluster():
    """A real two-node Ray cluster on loopback (`ray_cluster.LoopbackRayCluster`), one CPU per node,
    shared by the whole test session. Yields the address to pass as `--ray-address`."""
    pytest.importorskip("ray")
    with LoopbackRayCluster(env={"PYTHONPATH": str(REPO), "DISTILL_TEST_TEACHER_KEY": "test-key"}) as cluster:
        yield cluster.address

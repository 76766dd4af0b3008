"""`distill generate --executor ray` on a real two-node Ray cluster on loopback (the `ray_cluster` fixture).

Four shards against the loopback teacher server, which enforces the limit itself and counts what it
answered: together the shards stay within the spec's requests per minute (the server refuses nothing),
no prompt is paid twice, and the dataset is byte for byte the one a one-process run writes; the same
holds when one shard's worker process is killed with SIGKILL midway.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_distill
from distill.rundir import RunDir
from distill.spec import load_spec
from distill.synthesis import generate
from teacher_server import TeacherServer
from test_synthesis_generate import KEY_ENV, write_spec

ray_test = pytest.mark.ray

RECORDS = 80
RPM = 600  # 10 requests a second: the 80 records take about 8 s of sending
SHARDS = 4
CONCURRENCY = 4  # per shard, from write_spec


def ray_spec(folder: Path, base_url: str) -> Path:
    return write_spec(folder, base_url, records=RECORDS, json_step=False, extra_teacher=f"  rate_limit: {{rpm: {RPM}}}")


def generate_command(spec: Path, runs: Path, address: str) -> list[str]:
    return [sys.executable, "-m", "distill", "generate", str(spec), "--runs-dir", str(runs), "--executor", "ray",
            "--ray-address", address, "--shards", str(SHARDS)]


def dataset_files(run_root: Path) -> dict[str, bytes]:
    folder = run_root / "synth-test" / "main" / "dataset"
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def one_process_dataset(tmp_path_factory) -> dict[str, bytes]:
    """The dataset an ordinary one-process `generate` writes for the same spec."""
    folder = tmp_path_factory.mktemp("one-process")
    with pytest.MonkeyPatch.context() as patch, TeacherServer() as server:
        patch.setenv(KEY_ENV, "test-key")
        loaded = load_spec(ray_spec(folder, server.openai_base_url))
        result = generate(loaded, RunDir.create(loaded, root=folder / "runs"), show_progress=False)
    assert result.complete
    return dataset_files(folder / "runs")


def assert_within_limit_and_paid_once(stats: dict, *, in_flight_at_kill: int = 0) -> None:
    # The server's own token bucket holds RPM with one second of burst: a single request over the
    # combined limit would have been refused with a 429.
    assert stats["rate_limited"] == 0
    window = stats["last_request_at"] - stats["first_request_at"]
    assert (stats["completion_requests"] - 1) / window * 60 <= RPM * 1.02
    assert stats["unique_prompts"] == RECORDS
    # Only a request being answered at the very moment of a kill can be answered twice.
    assert stats["duplicate_answers"] <= in_flight_at_kill


@ray_test
@pytest.mark.slow
def test_four_shards_share_one_rate_budget_and_write_the_one_process_dataset(ray_cluster, tmp_path, one_process_dataset):
    with TeacherServer(latency=0.1, rpm=RPM, burst_seconds=1.0) as server:
        spec = ray_spec(tmp_path, server.openai_base_url)
        done = subprocess.run(generate_command(spec, tmp_path / "runs", ray_cluster), cwd=REPO, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        stats = server.stats()
    assert_within_limit_and_paid_once(stats)
    assert stats["completion_requests"] == RECORDS  # nothing retried, nothing refused
    logs = sorted(p.name for p in (tmp_path / "runs" / "synth-test" / "main" / "generate").glob("records*.jsonl"))
    assert logs == [f"records.shard-{i}-of-{SHARDS}.jsonl" for i in range(SHARDS)]
    assert f"records: {RECORDS} ok" in done.stderr and done.stdout.strip().endswith("dataset")
    assert dataset_files(tmp_path / "runs") == one_process_dataset


def shard_workers() -> list[int]:
    """Processes running a shard right now (Ray names a worker after the task it runs)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::generate_shard"):
                found.append(int(entry.name))
        except OSError:
            continue  # it ended while we looked
    return found


@ray_test
@pytest.mark.slow
def test_a_shard_whose_worker_is_killed_is_run_again_without_paying_twice(ray_cluster, tmp_path, one_process_dataset):
    with TeacherServer(latency=0.1, rpm=RPM, burst_seconds=1.0) as server:
        spec = ray_spec(tmp_path, server.openai_base_url)
        driver = subprocess.Popen(generate_command(spec, tmp_path / "runs", ray_cluster), cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while server.stats()["answers"] < RECORDS // 4 or not shard_workers():
            assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[1]
            time.sleep(0.1)
        victim = shard_workers()[0]
        os.kill(victim, signal.SIGKILL)
        answered_at_kill = server.stats()["answers"]
        stdout, stderr = driver.communicate(timeout=300)
        assert driver.returncode == 0, stderr
        stats = server.stats()
    assert answered_at_kill < RECORDS, "the run finished before a worker could be killed"
    assert_within_limit_and_paid_once(stats, in_flight_at_kill=CONCURRENCY)
    assert dataset_files(tmp_path / "runs") == one_process_dataset


@pytest.mark.parametrize("flags, message", [
    (["--executor", "ray", "--shard", "0/2"], "--shard picks one shard for this machine"),
    (["--executor", "ray", "--mode", "batch"], "--mode batch sends one batch from one machine"),
    (["--executor", "ray", "--shards", "0"], "--shards must be at least 1"),
    (["--shards", "4"], "--shards needs --executor ray"),
    (["--ray-address", "127.0.0.2:6379"], "--ray-address needs --executor ray"),
    (["--executor", "dask"], "--executor must be local or ray"),
])
def test_executor_flags_that_do_not_fit_are_refused_before_anything_starts(tmp_path, flags, message):
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1", records=2, json_step=False)
    done = run_distill("generate", spec, "--runs-dir", tmp_path / "runs", *flags)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()

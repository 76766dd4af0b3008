"""`distill generate --executor ray` on a real two-node Ray cluster on loopback (the `ray_cluster` fixture).

Four shards against the loopback teacher server, which enforces the limit itself and counts what it
answered: together the shards stay within the spec's requests per minute (the server refuses nothing),
no prompt is paid twice, and the dataset is byte for byte the one a one-process run writes; the same
holds when one shard's worker process is killed with SIGKILL midway. The shards share one spending cap:
together they stop at it, and a higher cap resumes without paying twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

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
BURST_S = 2.0


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
    # The server's own token bucket holds RPM (BURST_S seconds' worth may arrive at once, for the
    # scheduling jitter of a loaded 2-core machine): one request over the combined limit would have
    # been refused with a 429 (four shards each pacing itself to RPM would send at four times RPM).
    assert stats["rate_limited"] == 0
    assert stats["unique_prompts"] == RECORDS
    # Only a request being answered at the very moment of a kill can be answered twice.
    assert stats["duplicate_answers"] <= in_flight_at_kill


@ray_test
@pytest.mark.slow
def test_four_shards_share_one_rate_budget_and_write_the_one_process_dataset(ray_cluster, tmp_path, one_process_dataset):
    with TeacherServer(latency=0.1, rpm=RPM, burst_seconds=BURST_S) as server:
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
    with TeacherServer(latency=0.1, rpm=RPM, burst_seconds=BURST_S) as server:
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


PRICES = "openai: {gpt-4o-mini: {input: 0.15, output: 0.60}}\n"
CAP_USD = 0.0012  # about 40% of what the 80 records cost (0.003): each shard alone would fit under it


def spent(run_root: Path) -> float:
    from distill.synthesis.cache import AnswerCache

    cache = AnswerCache(run_root / "synth-test" / "main" / "generate" / "cache.sqlite")
    try:
        return cache.total_cost()
    finally:
        cache.close()


@ray_test
@pytest.mark.slow
def test_four_shards_share_one_spending_cap_and_a_higher_cap_resumes(ray_cluster, tmp_path, one_process_dataset):
    (tmp_path / "prices.yaml").write_text(PRICES)
    with TeacherServer(latency=0.1, rpm=RPM, burst_seconds=BURST_S) as server:
        spec = ray_spec(tmp_path, server.openai_base_url)
        command = generate_command(spec, tmp_path / "runs", ray_cluster) + ["--prices", str(tmp_path / "prices.yaml")]
        capped = subprocess.run(command + ["--max-cost", str(CAP_USD)], cwd=REPO, capture_output=True, text=True,
                                timeout=300)
        answered_under_cap = server.stats()["answers"]
        spent_under_cap = spent(tmp_path / "runs")
        resumed = subprocess.run(command + ["--max-cost", "1"], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        stats = server.stats()
    # The four shards together stop at the one cap (each checking its own spending would finish the run).
    assert capped.returncode == 3, capped.stderr
    assert "Traceback" not in capped.stderr and "spending cap" in capped.stderr and "--max-cost" in capped.stderr
    assert 0 < spent_under_cap <= CAP_USD, spent_under_cap
    assert 0 < answered_under_cap < RECORDS
    # The raised cap finishes the rest; nothing answered under the first cap is bought again.
    assert_within_limit_and_paid_once(stats)
    assert stats["duplicate_answers"] == 0 and stats["answers"] == RECORDS
    assert spent(tmp_path / "runs") > CAP_USD
    assert dataset_files(tmp_path / "runs") == one_process_dataset


@pytest.mark.parametrize("flags, message", [
    (["--executor", "ray", "--shard", "0/2"], "--shard picks one shard for this machine"),
    (["--executor", "ray", "--mode", "batch"], "--mode batch sends one batch from one machine"),
    (["--executor", "ray", "--shards", "0"], "--shards"),  # refused by the flag's own bound, before anything starts
    (["--shards", "4"], "--shards needs --executor ray"),
    (["--ray-address", "127.0.0.2:6379"], "--ray-address needs --executor ray"),
    (["--executor", "dask"], "--executor must be local or ray"),
])
def test_executor_flags_that_do_not_fit_are_refused_before_anything_starts(tmp_path, flags, message):
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1", records=2, json_step=False)
    done = run_distill("generate", spec, "--runs-dir", tmp_path / "runs", *flags)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


def train_worker() -> int | None:
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::train_on_node"):
                return int(entry.name)
        except OSError:
            continue
    return None


@ray_test
@pytest.mark.slow
def test_training_as_a_ray_task_survives_its_worker_dying(ray_cluster, tmp_path):
    """`distill train --executor ray`: the task's worker is killed with SIGKILL after a checkpoint; Ray runs
    the task again, and the training resumes to the weights of a plain local `distill train`."""
    import shutil

    from safetensors.torch import load_file
    from test_pipeline import small_spec

    spec = small_spec(tmp_path)
    spec.write_text(spec.read_text()  # the tiny Llama of test_train_loop: seconds of training
                    .replace("preset: tiny", "preset: custom\n  custom: {hidden_size: 32, num_hidden_layers: 2, "
                             "num_attention_heads: 2, intermediate_size: 64}")
                    .replace("context_length: 256", "context_length: 64").replace("batch_size: 16", "batch_size: 8")
                    .replace("eval_every: 3", "eval_every: 100").replace("checkpoint_every: 200", "checkpoint_every: 5"))
    assert run_distill("generate", spec, "--runs-dir", tmp_path / "runs", timeout=300).returncode == 0
    run = tmp_path / "runs" / "tinystories-quickstart" / "main"
    reviewed = run_distill("review", run, timeout=300)
    assert reviewed.returncode == 0, reviewed.stderr[-2000:]
    local = tmp_path / "local"
    shutil.copytree(run, local)

    flags = ["--steps", "30", "--threads", "1"]
    driver = subprocess.Popen([sys.executable, "-m", "distill", "train", str(run), *flags, "--executor", "ray",
                               "--ray-address", ray_cluster], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    checkpoints = run / "train" / "checkpoints"
    deadline = time.monotonic() + 300
    while not (checkpoints / "step-00000005").is_dir() or train_worker() is None:
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[1][-3000:]
        time.sleep(0.05)
    os.kill(train_worker(), signal.SIGKILL)
    assert not (run / "train" / "result.json").exists(), "killed too late: training had finished"
    stdout, stderr = driver.communicate(timeout=600)
    assert driver.returncode == 0, stderr[-3000:]
    assert json.loads(stdout)["steps"] == 30  # stdout holds the result alone, Ray's notices went to stderr

    plain = run_distill("train", local, *flags, timeout=600)
    assert plain.returncode == 0, plain.stderr[-3000:]
    ours, theirs = load_file(run / "train" / "model" / "model.safetensors"), load_file(local / "train" / "model" / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

"""Live progress in job status, read from the files a running stage writes: training's step, tokens,
loss, validation bits per byte, tokens/s and time left from metrics.jsonl against the run's budget;
generation's records, rate and time left; and the worker's reporter writing progress only when it moved."""

from __future__ import annotations

import json
import time
from pathlib import Path

from distill.rundir import write_json_atomic
from distill.service import runner
from distill.service.progress import ProgressReporter, describe_progress, training_series


def _run_dir(tmp_path: Path, running: str, started_ago: float) -> Path:
    run_dir = tmp_path / "run"
    (run_dir / "train").mkdir(parents=True)
    stages = {"generate": {"state": "done", "inputs": {}, "seconds": 3.0},
              "review": {"state": "done", "inputs": {}, "seconds": 1.0},
              running: {"state": "running", "started_at": time.time() - started_ago}}
    write_json_atomic(run_dir / "manifest.json", {"stages": stages})
    write_json_atomic(run_dir / "spec.resolved.json", {"records": 100})
    return run_dir


def _metrics(run_dir: Path, rows: list[dict]) -> None:
    with (run_dir / "train" / "metrics.jsonl").open("a") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)


def test_training_progress_follows_metrics_against_the_budget(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path, "train", started_ago=30)
    write_json_atomic(run_dir / "train" / "run.json", {"config": {"max_steps": 200, "max_tokens": None, "max_minutes": None}})
    assert "step" not in runner.progress(run_dir)["train"]  # no metrics yet: state and clock only
    _metrics(run_dir, [{"step": 10, "tokens": 5120, "seconds": 10.0, "loss": 5.5, "tokens_per_s": 512.0},
                       {"step": 10, "tokens": 5120, "seconds": 10.5, "val_loss": 5.4, "val_bpb": 2.5}])
    _metrics(run_dir, [{"step": 50, "tokens": 25600, "seconds": 50.0, "loss": 3.25, "tokens_per_s": 520.0}])
    train = runner.progress(run_dir)["train"]
    assert train["state"] == "running" and train["elapsed_seconds"] >= 30
    assert (train["step"], train["tokens"], train["loss"], train["val_bpb"], train["tokens_per_s"]) == (50, 25600, 3.25, 2.5, 520.0)
    assert train["fraction"] == 0.25 and train["eta_seconds"] == 150  # 50 s for a quarter: 150 s left
    _metrics(run_dir, [{"step": 100, "tokens": 51200, "seconds": 100.0, "loss": 3.0, "tokens_per_s": 512.0}])
    assert runner.progress(run_dir)["train"]["step"] == 100  # a new row is seen at once
    assert describe_progress("train", runner.progress(run_dir)["train"]) == \
        "train, step 100, loss 3.000, val bpb 2.500, 0.5k tok/s, 1m 40s left"


def test_training_time_left_on_a_minutes_budget(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path, "train", started_ago=5)
    write_json_atomic(run_dir / "train" / "run.json", {"config": {"max_steps": None, "max_tokens": None, "max_minutes": 2}})
    _metrics(run_dir, [{"step": 7, "tokens": 700, "seconds": 30.0, "loss": 4.0, "tokens_per_s": 23.3}])
    train = runner.progress(run_dir)["train"]
    assert train["fraction"] == 0.25 and train["eta_seconds"] == 90


def test_generation_progress_has_a_rate_and_time_left(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path, "generate", started_ago=20)
    (run_dir / "generate").mkdir()
    (run_dir / "generate" / "records.jsonl").write_text("{}\n" * 25)
    generate = runner.progress(run_dir)["generate"]
    assert (generate["records_written"], generate["records"], generate["fraction"]) == (25, 100, 0.25)
    assert 1.0 < generate["records_per_s"] <= 1.25 and 55 <= generate["eta_seconds"] <= 60


def test_series_for_the_chart_is_thinned_evenly(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path, "train", started_ago=1)
    _metrics(run_dir, [{"step": i, "tokens": i, "seconds": i, "loss": 1.0 / i} for i in range(1, 1001)])
    series = training_series(run_dir / "train", points=100)
    assert len(series) == 100 and series[0] == {"step": 1, "loss": 1.0} and series[1]["step"] == 11


def test_reporter_writes_only_when_progress_moved(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path, "train", started_ago=1)
    write_json_atomic(run_dir / "train" / "run.json", {"config": {"max_steps": 10}})
    written: list[tuple[str, dict]] = []
    with ProgressReporter(lambda: runner.progress(run_dir), lambda stage, p: written.append((stage, p)), every=0.05):
        time.sleep(0.3)  # no metrics yet: one report of the running stage, then nothing new
        _metrics(run_dir, [{"step": 1, "tokens": 10, "seconds": 1.0, "loss": 2.0}])
        time.sleep(0.3)
    assert [(stage, p.get("step")) for stage, p in written] == [("train", None), ("train", 1)]

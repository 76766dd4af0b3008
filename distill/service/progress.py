"""Live progress of a running stage, read from the files the stage writes as it goes:

    generate  generate/records.jsonl      records written, records/s, time left
    train     train/metrics.jsonl         step, tokens, loss, validation bits per byte, tokens/s, time left
              train/run.json              the budget (max_steps / max_tokens / max_minutes) the fraction is of

Every stage also shows how long it has been running (the run manifest's `started_at`). The job status
(`runner.progress`) adds these to each stage; the worker writes them as `progress` events, at most one
every `EVERY_S` per job, so the events stream and the web app's chart follow a run live.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("distill.service")
EVERY_S = 2.0
TAIL_BYTES = 64 * 1024  # enough for the last train row and the last evaluation row
SERIES_POINTS = 300


def elapsed(stage: dict[str, Any]) -> float | None:
    started = stage.get("started_at")
    return None if started is None or stage.get("state") != "running" else round(time.time() - started, 1)


def generation(written: int, records: int, seconds: float | None) -> dict[str, Any]:
    rate = written / seconds if seconds and written else None
    left = (records - written) / rate if rate else None
    return {"records_written": written, "records": records, "records_per_s": _round(rate, 2),
            "eta_seconds": _round(left, 0), "fraction": round(written / records, 4) if records else None}


def training(train_dir: Path) -> dict[str, Any]:
    """The newest training row and evaluation from metrics.jsonl, and how much of the budget is spent;
    during the preference phase (training.preference) its step, DPO loss and margin, `phase: preference`."""
    preference = preference_phase(train_dir)
    if preference:
        return preference
    rows = _tail_rows(train_dir / "metrics.jsonl")
    last = next((r for r in reversed(rows) if "loss" in r), None)
    if last is None:
        return {}
    val = next((r for r in reversed(rows) if "val_bpb" in r), None)
    fraction = _fraction(last, _budget(train_dir / "run.json"))
    left = last["seconds"] * (1 - fraction) / fraction if fraction else None
    return {"step": last["step"], "tokens": last["tokens"], "loss": round(last["loss"], 4),
            "val_bpb": round(val["val_bpb"], 4) if val else None, "tokens_per_s": last.get("tokens_per_s"),
            "fraction": round(fraction, 4), "eta_seconds": _round(left, 0)}


def preference_phase(train_dir: Path) -> dict[str, Any]:
    """The preference phase's progress from train/preference/metrics.jsonl while it runs ({} otherwise)."""
    metrics, run, result = (train_dir / "preference" / "metrics.jsonl", train_dir / "preference" / "run.json",
                            train_dir / "result.json")
    rows = _tail_rows(metrics)
    if not rows or not run.is_file() or (result.is_file() and result.stat().st_mtime > metrics.stat().st_mtime):
        return {}  # not started, or finished (result.json is written last)
    steps = json.loads(run.read_text()).get("settings", {}).get("steps") or rows[-1]["step"]
    last = rows[-1]
    return {"phase": "preference", "step": last["step"], "tokens": 0, "loss": round(last["loss"], 4),
            "margin": round(last["margin"], 4), "val_bpb": None, "tokens_per_s": None,
            "fraction": round(min(1.0, last["step"] / steps), 4), "eta_seconds": None}


def training_series(train_dir: Path, points: int = SERIES_POINTS) -> list[dict[str, Any]]:
    """The loss, validation-bpb (and KL to the teacher) curve so far (every row when short, else an even thinning), for a chart."""
    path = train_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []
    keep = [{k: r[k] for k in ("step", "loss", "val_bpb", "kl_per_token") if r.get(k) is not None}
            for r in rows if "loss" in r or "val_bpb" in r]  # kl_per_token: with training.distillation
    stride = max(1, len(keep) // points)
    return keep[::stride] if stride > 1 else keep


def training_method(train_dir: Path) -> dict[str, Any] | None:
    """How the student learns (train/distillation.json, with training.distillation): text only or distribution."""
    path = train_dir / "distillation.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def describe_progress(stage: str, p: dict[str, Any]) -> str:
    """One line for the event log: "train step 40, loss 3.214, val bpb 2.41, 5.2k tok/s, 1m 20s left"."""
    parts = [stage]
    if "step" in p:
        parts.append(f"step {p['step']}, loss {p['loss']:.3f}")
        if p.get("val_bpb") is not None:
            parts.append(f"val bpb {p['val_bpb']:.3f}")
        if p.get("tokens_per_s"):
            parts.append(f"{p['tokens_per_s'] / 1e3:.1f}k tok/s")
    elif "records_written" in p:
        parts.append(f"{p['records_written']}/{p['records']} records")
    else:
        parts.append(p["state"])
    if p.get("eta_seconds") is not None:
        minutes, seconds = divmod(int(p["eta_seconds"]), 60)
        parts.append(f"{minutes}m {seconds:02d}s left" if minutes else f"{seconds}s left")
    return ", ".join(parts)


def _tail_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    start = max(0, path.stat().st_size - TAIL_BYTES)
    with path.open("rb") as handle:
        handle.seek(start)
        lines = handle.read().splitlines()[1 if start else 0:]  # from mid-file, the first line is cut
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line being written
            continue
    return rows


def _budget(run_json: Path) -> tuple[Any, Any, Any]:
    """(max_steps, max_tokens, max_minutes) as `TrainConfig.budget` reads them (10 minutes when none is set)."""
    config = json.loads(run_json.read_text()).get("config", {}) if run_json.is_file() else {}
    steps, tokens, minutes = config.get("max_steps"), config.get("max_tokens"), config.get("max_minutes")
    return (steps, tokens, minutes) if steps or tokens or minutes else (None, None, 10.0)


def _fraction(row: dict, budget: tuple[Any, Any, Any]) -> float:
    steps, tokens, minutes = budget
    fractions = [0.0]
    if steps:
        fractions.append(row["step"] / steps)
    if tokens:
        fractions.append(row["tokens"] / tokens)
    if minutes:
        fractions.append(row["seconds"] / (60 * minutes))
    return min(1.0, max(fractions))


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class ProgressReporter:
    """A thread in the worker: every `every` seconds, the running stage's progress; `write` is called
    when it changed (the worker writes it as a `progress` event)."""

    def __init__(self, read: Callable[[], dict[str, dict[str, Any]]], write: Callable[[str, dict[str, Any]], None],
                 every: float = EVERY_S):
        self.read, self.write, self.every = read, write, every
        self._stop = threading.Event()
        self._last: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._loop, name="distill-progress", daemon=True)

    def __enter__(self) -> "ProgressReporter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self._report()
            except Exception:  # progress is a view: a failed read or write must not stop the job; log it
                log.exception("progress report failed")

    def _report(self) -> None:
        stages = self.read()
        running = next((name for name, s in stages.items() if s["state"] == "running"), None)
        if running is None:
            return
        now = {"stage": running, **{k: stages[running].get(k) for k in ("records_written", "step", "val_bpb")}}
        if now != self._last:  # the clock alone moving is no news
            self._last = now
            self.write(running, stages[running])

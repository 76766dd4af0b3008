"""Where training reports: metrics JSONL, the loss-curve PNG, the progress bar, optional trackers.

`metrics.jsonl` gets one row per logged step (`loss`, `lr`, `grad_norm`, `tokens_per_s`, `mfu`; with
`training.distillation` also `kl_per_token`, `teacher_agreement` and `taught_share`) and
one per evaluation (`val_loss`, `val_bpb`); every row carries `step`, `tokens` and `seconds`. On resume
the rows written after the checkpoint are dropped, because the resumed run writes them again.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from distill.files import write_atomic


class MetricsLog:
    """Append-only JSONL of training metrics, written by the main process only."""

    def __init__(self, path: Path, *, after_step: int, enabled: bool):
        self.path, self.enabled = path, enabled
        if enabled and path.is_file():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= after_step]
            write_atomic(path, "".join(line + "\n" for line in kept))

    def write(self, row: dict) -> None:
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")

    @staticmethod
    def read(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def plot_loss_curve(rows: list[dict], path: Path) -> None:
    """Training and validation loss (nats/token) and validation bits per byte against tokens seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    taught = [r for r in rows if r.get("kl_per_token") is not None]  # training.distillation's KL to the teacher
    fig, axes = plt.subplots(1, 3 if taught else 2, figsize=(16 if taught else 11, 4))
    left, right = axes[0], axes[1]
    left.plot([r["tokens"] for r in train], [r["loss"] for r in train], label="train", lw=1)
    left.plot([r["tokens"] for r in val], [r["val_loss"] for r in val], "o-", label="validation", ms=3)
    left.set(xlabel="tokens", ylabel="loss (nats/token)", title="loss")
    left.legend()
    right.plot([r["tokens"] for r in val], [r["val_bpb"] for r in val], "o-", color="tab:green", ms=3)
    right.set(xlabel="tokens", ylabel="bits per byte", title="validation bits per byte")
    if taught:
        axes[2].plot([r["tokens"] for r in taught], [r["kl_per_token"] for r in taught], color="tab:purple", lw=1)
        axes[2].set(xlabel="tokens", ylabel="KL (nats/token)", title="KL to the teacher's top-k")
    for axis in axes:
        axis.grid(alpha=0.3)
    save_curve(fig, path)


def save_curve(fig, path: Path) -> None:
    """Write a training figure whole or not at all (a temp file renamed over `path`), then close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def progress_bar(enabled: bool) -> Progress:
    """A progress bar on stderr; its `stats` field carries step, loss, tokens/s and MFU."""
    return Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[stats]}"),
        console=Console(stderr=True),
        disable=not enabled,
    )

"""The progress bar on stderr (done, cached, failed, rate, spend, ETA) and the end-of-run summary."""

from __future__ import annotations

import math
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from distill.synthesis.engine import Tally


class GenerateProgress:
    def __init__(self, total: int, *, enabled: bool = True):
        self.console = Console(file=sys.stderr)
        self.progress = Progress(
            TextColumn("generate"), BarColumn(), MofNCompleteColumn(),
            TextColumn("cached {task.fields[cached]:,}  failed {task.fields[failed]:,}  "
                       "{task.fields[rate]:.1f} rec/s  ${task.fields[spent]:.4f}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, disable=not enabled, transient=False,
        )
        self.task = self.progress.add_task("generate", total=total, cached=0, failed=0, rate=0.0, spent=0.0)

    def __enter__(self) -> GenerateProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def update(self, tally: Tally) -> None:
        task = self.progress.tasks[0]
        finished = tally.done + tally.failed
        rate = (finished - tally.from_cache) / task.elapsed if task.elapsed else 0.0
        self.progress.update(self.task, completed=finished, cached=tally.from_cache, failed=tally.failed,
                             rate=rate, spent=tally.spent_usd)

    def show_finished(self, finished: int) -> None:
        """Progress seen from outside the engine (a distributed run counts the rows its shards logged)."""
        task = self.progress.tasks[0]
        rate = finished / task.elapsed if task.elapsed else 0.0
        self.progress.update(self.task, completed=finished, rate=rate)

    def message(self, text: str) -> None:
        self.console.print(text)


def summary(tally: Tally, *, total: int, elapsed_s: float, spent_total: float, max_cost: float | None) -> str:
    lines = [
        f"records: {tally.done:,} ok, {tally.failed:,} failed, {total - tally.done - tally.failed:,} not done "
        f"({tally.from_cache:,} entirely from the cache)",
        f"requests sent: {tally.requests:,} ({tally.retries:,} retries, {tally.rate_limited:,} rate-limited) "
        f"in {elapsed_s:.1f} s",
        f"spent this run: {usd(tally.spent_usd)}; run total: {usd(spent_total)}"
        + (f" of a {usd(max_cost)} cap" if max_cost is not None else ""),
    ]
    if tally.failures:
        lines.append("failures: " + ", ".join(f"{kind} x{count}" for kind, count in sorted(tally.failures.items())))
    if tally.aborted:
        lines.append(f"stopped: {tally.aborted}; the remaining requests were not sent. Fix the cause (API key, "
                     f"model name, access) and run the same command again to resume")
    elif tally.stopped_by_cap:
        lines.append(f"stopped: the next request could cost more than is left of the {usd(max_cost)} spending cap "
                     f"(its worst case is reserved before sending); resume with a higher cap (--max-cost USD) to "
                     f"finish the remaining records")
    return "\n".join(lines)


def usd(value: float | None) -> str:
    """Dollars with the digits that matter: $12.50, $0.0003, $0.000012 (a cap of $0.0003 is not "$0.00")."""
    if value is None:
        return "no cap"
    if value == 0 or abs(value) >= 1:
        return f"${value:,.2f}"
    text = f"{value:.{2 - int(math.floor(math.log10(abs(value))))}f}"  # three significant digits
    while len(text.split(".")[1]) > 2 and text.endswith("0"):
        text = text[:-1]
    return f"${text}"

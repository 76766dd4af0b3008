"""What the job page shows, gathered from the job row and its run directory (through `runner`, like
the API): the stage timeline, progress, recent events, and once released the sha256, the eval
report's charts and sample completions, and the model and dataset cards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from distill.evaluate.result import EvalResult
from distill.service import downloads, jobs, runner
from distill.service.db import Job
from distill.service.events import latest_events
from distill.service.progress import training_series

TIMELINE = ("queued", "generating", "reviewing", "awaiting_review", "training", "evaluating", "releasing", "succeeded")
CHARTS = ("bpb_curve.png", "scores.png", "probes.png")


def timeline(status: str) -> list[dict[str, str]]:
    """Each step as done, now or later (a failed or cancelled job shows where it stopped)."""
    if status in TIMELINE:
        at = TIMELINE.index(status)
        return [{"name": s, "state": "done" if i < at or status == "succeeded" else "now" if i == at else "later"}
                for i, s in enumerate(TIMELINE)]
    return [{"name": s, "state": "later"} for s in TIMELINE] + [{"name": status, "state": "now"}]


def job_view(session: Session, job: Job) -> dict[str, Any]:
    summary = jobs.job_summary(job, detail=True)
    run_dir = Path(job.run_dir)
    archive = runner.bundle_archive(run_dir)
    view = {"job": summary, "timeline": timeline(job.status), "events": latest_events(session, job.id, 50),
            "sha256": downloads.sha256(archive) if archive else None, "bundle_name": archive.name if archive else None,
            "bundle_bytes": archive.stat().st_size if archive else None, "charts": [], "samples": [], "cards": {},
            "train_series": training_series(run_dir / "train")}
    if archive is None:
        return view
    report = runner.eval_report(run_dir, "json")
    if report is not None:
        view["charts"] = [c for c in CHARTS if (report.parent / c).is_file()]
        view["samples"] = EvalResult.from_json(report).samples[:6]
    for which in ("model", "dataset"):
        card = runner.card(run_dir, which)
        view["cards"][which] = card.read_text(encoding="utf-8", errors="replace") if card else None
    return view

"""What the job page shows, gathered from the job row and its run directory (through `runner`, like
the API): the stage timeline (the stage a failed job stopped in marked, and a job whose worker has
started shown as starting, not queued), the spending cap that applies, progress, recent events, and once
released the sha256, the eval report's charts and sample completions, and the model and dataset cards
as sanitised HTML."""

from __future__ import annotations

import json
from datetime import timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from distill.evaluate.result import EvalResult
from distill.service import downloads, jobs, runner
from distill.service.db import Event, Job, utcnow
from distill.service.events import latest_events
from distill.service.progress import training_method, training_series
from distill.service.web.documents import card_html
from distill.spec import load_spec

TIMELINE = ("queued", "generating", "reviewing", "awaiting_review", "training", "evaluating", "releasing", "succeeded")
CHARTS = ("bpb_curve.png", "scores.png", "probes.png")


def timeline(status: str, stopped_at: str | None = None) -> list[dict[str, str]]:
    """Each step as done, now or later. A failed or cancelled job shows where it stopped: `stopped_at`
    (a TIMELINE step) marked with the status, the steps before it done."""
    if status in TIMELINE:
        at = TIMELINE.index(status)
        return [{"name": s, "state": "done" if i < at or status == "succeeded" else "now" if i == at else "later"}
                for i, s in enumerate(TIMELINE)]
    mark = status if status in ("failed", "cancelled") else "now"
    if stopped_at not in TIMELINE:
        return [{"name": s, "state": "later"} for s in TIMELINE] + [{"name": status, "state": mark}]
    at = TIMELINE.index(stopped_at)
    return [{"name": s, "state": "done" if i < at else mark if i == at else "later"} for i, s in enumerate(TIMELINE)]


def job_view(session: Session, job: Job) -> dict[str, Any]:
    summary = jobs.job_summary(job, detail=True)
    run_dir = Path(job.run_dir)
    archive = runner.bundle_archive(run_dir)
    view = {"job": summary, "timeline": timeline(job.status), "events": latest_events(session, job.id, 50),
            "sha256": downloads.sha256(archive) if archive else None, "bundle_name": archive.name if archive else None,
            "bundle_bytes": archive.stat().st_size if archive else None, "charts": [], "samples": [], "cards": {},
            "train_series": training_series(run_dir / "train"), "train_method": training_method(run_dir / "train")}
    view.update(where_it_is(session, job, summary), caps=spending_caps(job))
    if archive is None:
        return view
    view["formats"] = bundle_formats(runner.bundle_dir(run_dir))
    report = runner.eval_report(run_dir, "json")
    if report is not None:
        view["charts"] = [c for c in CHARTS if (report.parent / c).is_file()]
        view["samples"] = EvalResult.from_json(report).samples[:6]
    for which in ("model", "dataset"):
        card = runner.card(run_dir, which)
        view["cards"][which] = card_html(card.read_text(encoding="utf-8", errors="replace"),
                                         f"/ui/jobs/{job.id}/figures/") if card else None
    return view


def bundle_formats(bundle: Path | None) -> list[dict[str, str]]:
    """One row per form of the model in a released bundle, as its manifest records it: the files, their size,
    and for an exported form its parity with safetensors and the runtime that measured it (plain text; the
    template escapes it)."""
    try:
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        formats, files = manifest.get("formats") or {}, manifest["files"]
    except (OSError, TypeError, ValueError, KeyError):
        return []
    rows, order = [], ("safetensors", "onnx", "int8", "gguf")  # the trained model first, as `distill verify` shows
    for form, entry in sorted(formats.items() if isinstance(formats, dict) else (),
                              key=lambda item: (order.index(item[0]) if item[0] in order else len(order), item[0])):
        names = [n for n in (entry.get("files") or []) if isinstance(n, str)] if isinstance(entry, dict) else []
        size = sum(int((files.get(n) or {}).get("bytes") or 0) for n in names)
        rows.append({"format": str(form), "files": ", ".join(names), "size": _size(size),
                     **_parity_cells(form, entry.get("parity") if isinstance(entry, dict) else None)})
    return rows


def _parity_cells(form: str, parity: Any) -> dict[str, str]:
    if not isinstance(parity, dict):
        return {"delta": "reference" if form == "safetensors" else "not measured", "greedy": "", "probes": "",
                "runtime": ""}
    if not parity.get("measured"):
        return {"delta": f"not run: {parity.get('why') or 'no runtime'}", "greedy": "", "probes": "", "runtime": ""}
    try:
        greedy = parity.get("greedy_agreement")
        return {"delta": "reference" if form == "safetensors" else f"{float(parity['bpb_delta']):+.3%}",
                "greedy": "" if greedy is None else f"{float(greedy):.0%}",
                "probes": f"{parity.get('probe_verdicts_same')}/{parity.get('probes')}",
                "runtime": str(parity.get("runtime") or "")}
    except (KeyError, TypeError, ValueError):
        return {"delta": "unreadable", "greedy": "", "probes": "", "runtime": ""}


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def where_it_is(session: Session, job: Job, summary: dict[str, Any]) -> dict[str, Any]:
    """The status to show and the timeline. A queued job whose worker holds the lease is starting (the
    worker loads the pipeline before its first stage reports), with the stage it starts next; a failed
    job names the stage it failed in (None: before any stage started)."""
    if job.status == "queued" and _leased(job):
        upcoming = next((n for n, p in (summary.get("progress") or {}).items() if p["state"] != "done"), None)
        step = runner.STATUS_OF_STAGE.get(upcoming, "queued")
        return {"shown_status": "starting", "next_stage": upcoming, "failed_stage": None,
                "timeline": timeline(step)}
    for progress in (summary.get("progress") or {}).values():
        if job.status in jobs.TERMINAL and progress["state"] == "running":
            progress["state"] = job.status  # its worker stopped mid-stage and wrote no end
    failed = failed_stage(session, job.id) if job.status == "failed" else None
    stopped = runner.STATUS_OF_STAGE.get(failed) if failed else None
    if job.status == "cancelled":
        stopped = _last_step(session, job.id)
    return {"shown_status": job.status, "next_stage": None, "failed_stage": failed,
            "timeline": timeline(job.status, stopped)}


def _leased(job: Job) -> bool:
    until = job.lease_until
    if job.lease_owner is None or until is None:
        return False
    return (until if until.tzinfo else until.replace(tzinfo=timezone.utc)) > utcnow()


def _status_events(session: Session, job_id: str) -> list[Event]:
    """The job's status events, newest first (a job has a few dozen)."""
    return list(session.scalars(select(Event).where(Event.job_id == job_id, Event.type == "status")
                                .order_by(Event.id.desc()).limit(500)))


def failed_stage(session: Session, job_id: str) -> str | None:
    """The stage a failed job was in: the last stage the worker reported starting (None: none started)."""
    return next(((e.data or {})["stage"] for e in _status_events(session, job_id) if (e.data or {}).get("stage")), None)


def _last_step(session: Session, job_id: str) -> str | None:
    """The timeline step a cancelled job was at when it was cancelled."""
    steps = ((e.data or {}).get("status") for e in _status_events(session, job_id))
    return next((s for s in steps if s in TIMELINE), None)


def spending_caps(job: Job) -> dict[str, Any]:
    """The caps on the teacher's spending: the spec's `teacher.max_cost_usd`, what was left of the tenant's
    cap when the job was submitted, and the one that applies (the lower; None when neither is set)."""
    spec_cap = load_spec(Path(job.spec_file)).spec.teacher.max_cost_usd
    tenant_cap = job.max_cost_usd
    caps = [c for c in (spec_cap, tenant_cap) if c is not None]
    applies = min(caps) if caps else None
    source = None if applies is None else "spec" if applies == spec_cap else "tenant"
    return {"spec": spec_cap, "tenant": tenant_cap, "applies": applies, "source": source}

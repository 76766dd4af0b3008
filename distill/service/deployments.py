"""Hosted cold start: per-tenant deployments of released jobs, their captures, the next job built from
them, and promotion/rollback through the release gate.

- A deployment serves a released job's verified bundle with the OpenAI-compatible app of
  `distill.serving.api` under `/v1/deployments/<id>/` (the `DeploymentGateway` below, mounted by the app).
  Its routes live in a deployment file (`distill.coldstart.promote`), under the job's data folder.
- Captures of a job are one JSONL file in its data folder (`DATA/jobs/<job>/captures/captures.jsonl`), in
  the standalone server's format: written by the deployment (redacted, opt-out honoured) or uploaded.
- `POST /v1/jobs/<id>/coldstart` builds the next job's run with `distill.coldstart.loop.build_next_run`
  (the same call as `distill coldstart`) in the background; the executor then reviews, trains, evaluates
  and releases it like any job.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from distill.errors import DistillError, Problem
from distill.service import jobs, runner
from distill.service.accounts import new_id
from distill.service.db import Deployment, Job, User
from distill.service.problems import Conflict

CAPTURE_FILE = "captures.jsonl"
MAX_CAPTURE_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_CAPTURE_LINE_BYTES = 256 * 1024
MAX_PROBLEMS = 100  # bad lines reported per upload


class CaptureUploadError(DistillError):
    """An uploaded capture log has lines that are not captures; nothing of it was kept."""


def capture_path(data_dir: Path, job_id: str) -> Path:
    return jobs.job_folder(data_dir, job_id) / "captures" / CAPTURE_FILE


def can_use(user: User, deployment: Deployment) -> bool:
    """Tenant members (customers of the tenant) and admins."""
    return user.role == "admin" or user.tenant_id == deployment.tenant_id


def create_deployment(session: Session, user: User, job: Job, data_dir: Path, *, capture: bool, rate: float,
                      retention_days: int) -> Deployment:
    from distill.coldstart.promote import promote

    bundle = runner.bundle_dir(Path(job.run_dir))
    if bundle is None or job.status != "succeeded":
        raise Conflict(Problem(f"job {job.id} is {job.status}; only a released job can be deployed", key="job_id"))
    existing = session.scalar(select(Deployment).where(Deployment.job_id == job.id))
    if existing is not None:
        raise Conflict(Problem(f"job {job.id} is already deployed as {existing.id}", key="job_id",
                               hint=f"use /v1/deployments/{existing.id}; promote or roll it back to change what it serves"))
    deployment_id = new_id("dep")
    file = jobs.job_folder(data_dir, job.id) / "deployments" / f"{deployment_id}.json"
    file.parent.mkdir(parents=True, exist_ok=True)
    promote(file, bundle)  # verifies the bundle and its gate; records the "create" switch
    row = Deployment(id=deployment_id, tenant_id=job.tenant_id, job_id=job.id, created_by=user.id, file=str(file),
                     capture_enabled=capture, capture_rate=rate, retention_days=retention_days)
    session.add(row)
    jobs.add_event(session, job.id, "deployment", f"deployment {deployment_id} created (capture "
                   f"{'on at ' + format(rate, '.0%') if capture else 'off'})", {"deployment_id": deployment_id})
    session.commit()
    return row


def deployment_summary(row: Deployment) -> dict[str, Any]:
    from distill.coldstart.promote import read_events
    from distill.serving.deployment import read_deployment

    file = Path(row.file)
    current = read_deployment(file)
    return {"id": row.id, "job_id": row.job_id, "tenant_id": row.tenant_id, "name": current["name"],
            "routes": [{"model": r["model"], "percent": r["percent"]} for r in current["routes"]],
            "capture": {"enabled": row.capture_enabled, "rate": row.capture_rate, "retention_days": row.retention_days},
            "path": f"/v1/deployments/{row.id}", "created_at": jobs.iso(row.created_at), "events": read_events(file)}


def switch(session: Session, row: Deployment, action: str, target: Job | None, data_dir: Path, *,
           percent: int = 100, force: str | None = None) -> dict[str, Any]:
    """Promote (or split to) `target`'s release through the release gate and the comparison on held-out
    real inputs, or roll back; every switch is an event on the deployment's job (and the target job)."""
    from distill.coldstart.promote import promote, rollback

    file = Path(row.file)
    if action == "rollback":
        current = rollback(file)
    else:
        bundle = runner.bundle_dir(Path(target.run_dir))
        if bundle is None or target.status != "succeeded":
            raise Conflict(Problem(f"job {target.id} is {target.status}; only a released job can take traffic",
                                   key="job_id"))
        comparison = compare_on_real_inputs(target, row)
        current = promote(file, bundle, percent=percent, comparison=comparison, force=force)
    routes = ", ".join(f"{r['model']} {r['percent']}%" for r in current["routes"])
    data = {"deployment_id": row.id, "action": action, "routes": current["routes"], "reason": force}
    for job_id in {row.job_id, *([target.id] if target is not None else [])}:
        jobs.add_event(session, job_id, "deployment", f"deployment {row.id}: {action} -> {routes}", data)
    session.commit()
    return current


def compare_on_real_inputs(target: Job, row: Deployment) -> Path | None:
    """The comparison (`distill compare`) of the serving bundle and the target on the target run's held-out
    real inputs; computed once and kept in the run. None when the target is not a cold-start run."""
    from distill.coldstart.compare import compare, spec_judge
    from distill.serving.deployment import read_deployment

    run = Path(target.run_dir)
    heldout, report = run / "coldstart" / "heldout.jsonl", run / "coldstart" / "compare.json"
    if not heldout.is_file():
        return None
    if not report.is_file():
        current = read_deployment(Path(row.file))
        v1 = Path(max(current["routes"], key=lambda r: r["percent"])["bundle"])
        result = compare(v1, runner.bundle_dir(run), heldout, spec_judge(run))
        report.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return report


# --- captures ---


def ingest_captures(data: bytes, data_dir: Path, job_id: str, filename: str) -> int:
    """Check every line of an uploaded capture log (all problems, each with its line number), redact each
    one again, and append them to the job's captures. Returns how many lines were kept."""
    from distill.serving.capture import FORMAT, Redactor, locked

    from distill.service.uploads import UploadTooLarge

    if len(data) > MAX_CAPTURE_UPLOAD_BYTES:
        raise UploadTooLarge(Problem(f"the upload is over {MAX_CAPTURE_UPLOAD_BYTES // (1024 * 1024)} MiB",
                                         file=filename, hint="split the log and upload the parts"))
    problems, lines = [], []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CaptureUploadError(Problem(f"not UTF-8 text (byte {exc.start})", file=filename)) from None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        problem = _line_problem(raw, FORMAT)
        if problem:
            problems.append(Problem(problem, file=filename, line=number))
        else:
            lines.append(json.loads(raw))
    if len(problems) > MAX_PROBLEMS:
        more = Problem(f"{len(problems) - MAX_PROBLEMS} more bad lines", file=filename, line=problems[MAX_PROBLEMS].line)
        problems = [*problems[:MAX_PROBLEMS], more]
    if problems:
        raise CaptureUploadError(*problems)
    redactor = Redactor()
    path = capture_path(data_dir, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    cleaned = [json.dumps(_redacted(line, redactor), ensure_ascii=False) + "\n" for line in lines]
    with locked(path):
        with path.open("a", encoding="utf-8") as handle:
            handle.writelines(cleaned)
    return len(cleaned)


def _line_problem(raw: str, form: str) -> str | None:
    if len(raw.encode("utf-8")) > MAX_CAPTURE_LINE_BYTES:
        return f"line is over {MAX_CAPTURE_LINE_BYTES // 1024} KiB"
    try:
        line = json.loads(raw)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg})"
    if not isinstance(line, dict) or line.get("format") != form:
        return f"not a capture line (expected format {form!r})"
    inputs = line.get("inputs")
    messages = inputs.get("messages") if isinstance(inputs, dict) else None
    prompts = inputs.get("prompt") if isinstance(inputs, dict) else None
    if messages is None and prompts is None:
        return "inputs needs messages or prompt"
    if messages is not None and not (isinstance(messages, list) and all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and isinstance(m.get("role"), str) for m in messages)):
        return "inputs.messages must be a list of {role, content} with text content"
    if prompts is not None and not (isinstance(prompts, list) and all(isinstance(p, str) for p in prompts)):
        return "inputs.prompt must be a list of strings"
    if not isinstance(line.get("request_id"), str) or not line["request_id"]:
        return "request_id is missing"
    try:
        created = datetime.fromisoformat(str(line.get("created")))
    except ValueError:
        return "created is not an ISO 8601 time"
    if created.tzinfo is None:
        return "created needs a time zone (captures are in UTC)"
    outputs = line.get("outputs", [])
    if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
        return "outputs must be a list of strings"
    return None


def _redacted(line: dict[str, Any], redactor) -> dict[str, Any]:
    codes = set(line.get("redacted") or [])

    def clean(text: str) -> str:
        redacted, found = redactor.redact(text)
        codes.update(found)
        return redacted

    inputs = line["inputs"]
    if "messages" in inputs:
        kept = {"messages": [{"role": m["role"], "content": clean(m["content"])} for m in inputs["messages"]]}
    else:
        kept = {"prompt": [clean(p) for p in inputs["prompt"]]}
    return {**line, "inputs": kept, "outputs": [clean(o) for o in line.get("outputs", [])], "redacted": sorted(codes)}


def list_captures(path: Path, *, request_id: str | None, since: datetime | None, until: datetime | None,
                  limit: int, before: list[str] | None = None) -> tuple[list[dict[str, Any]], list[str] | None]:
    """The newest `limit` matching captures (oldest first), older than the key `before` when given, and
    the key to pass as `before` for the page before them (None: there is none)."""
    from distill.serving.capture import aware, read_captures

    if not path.is_file():
        return [], None
    since, until = aware(since), aware(until)
    out = []
    for line in read_captures(path):
        created = datetime.fromisoformat(line["created"])
        if request_id and line["request_id"] != request_id:
            continue
        if (since and created < since) or (until and created >= until):
            continue
        if before is not None and capture_key(line) >= before:
            continue
        out.append(line)
    out.sort(key=capture_key)
    page = out[-limit:]
    return page, capture_key(page[0]) if len(out) > limit else None


def capture_key(line: dict[str, Any]) -> list[str]:
    """(created in UTC at microsecond precision, request id): the order captures are paged in."""
    created = datetime.fromisoformat(line["created"]).astimezone(timezone.utc)
    return [created.isoformat(timespec="microseconds"), line["request_id"]]


# --- the next job ---


def start_coldstart(sessions: sessionmaker, session: Session, user: User, v1: Job, data_dir: Path, wake) -> Job:
    """A new job whose run is built from v1's captures in a background thread (status `validating` meanwhile,
    which no executor picks up); queued once the dataset is written, or failed with the located problem."""
    captures = capture_path(data_dir, v1.id)
    if v1.status != "succeeded":
        raise Conflict(Problem(f"job {v1.id} is {v1.status}; cold start needs a released v1", key="job_id"))
    if not captures.is_file() or not captures.read_text(encoding="utf-8").strip():
        raise Conflict(Problem(f"job {v1.id} has no captures yet", key="captures",
                               hint="switch capture on for its deployment, or POST a capture log to its /captures"))
    job_id = new_id("job")
    runs = jobs.job_folder(data_dir, job_id) / "runs"
    job = Job(id=job_id, tenant_id=v1.tenant_id, created_by=user.id, spec_name=v1.spec_name, spec_file=v1.spec_file,
              run_dir=str(runner.run_dir_for(runs, v1.spec_name)), status="validating", max_cost_usd=v1.max_cost_usd)
    session.add(job)
    session.flush()
    lineage = {"parent_job": v1.id, "parent_run": v1.run_dir}
    jobs.add_event(session, job.id, "status", f"cold start from job {v1.id}'s captures", {"status": "validating", **lineage})
    jobs.add_event(session, v1.id, "info", f"cold start: next job {job.id}", {"next_job": job.id})
    session.commit()
    threading.Thread(target=_build, args=(sessions, job.id, v1.id, Path(v1.run_dir), captures, runs, wake),
                     name=f"coldstart-{job.id}", daemon=True).start()
    return job


def _build(sessions: sessionmaker, job_id: str, parent_job: str, v1_run: Path, captures: Path, runs: Path, wake) -> None:
    from distill.coldstart.loop import build_next_run

    with sessions() as session:
        job = session.get(Job, job_id)
        try:
            result = build_next_run(v1_run, captures, run_id=runner.RUN_ID, root=runs, show_progress=False)
        except DistillError as exc:
            job.error = {"code": type(exc).__name__, "message": str(exc),
                         "problems": [{"message": p.message, "key": p.key, "hint": p.hint} for p in exc.problems]}
            jobs.set_status(session, job, "failed", f"cold start failed: {exc.problems[0].message}")
            return
        except Exception as exc:  # a bug: the traceback goes to the server log
            import traceback

            traceback.print_exc()
            job.error = {"code": "internal_error", "message": type(exc).__name__}
            jobs.set_status(session, job, "failed", "cold start failed with an internal error")
            return
        from distill.rundir import write_json_atomic

        lineage_file = result.run / "coldstart" / "lineage.json"
        write_json_atomic(lineage_file, {"parent_job": parent_job, **json.loads(lineage_file.read_text())})
        jobs.add_event(session, job.id, "info", "cold-start dataset written", {"counts": result.counts,
                                                                                "spent_usd": result.spent_usd})
        jobs.set_status(session, job, "queued", "cold-start run queued for review, training and release")
    wake()


def lineage(job: Job) -> dict[str, Any] | None:
    path = Path(job.run_dir) / "coldstart" / "lineage.json"
    return json.loads(path.read_text()) if path.is_file() else None


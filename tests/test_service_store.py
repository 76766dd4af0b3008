"""The service's store on SQLite and on PostgreSQL (when DISTILL_TEST_POSTGRES_URL names a server):
Alembic from empty to head, accounts and tokens, job submission with its events, the status machine,
and the lease that keeps two executors from running one job."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, update

from distill.errors import SpecError
from distill.service import accounts, jobs
from distill.service.db import Event, Job, make_engine, make_sessions, migrate, utcnow
from distill.service.executor import claim
from distill.service.uploads import UploadError
from service_live import POSTGRES_ENV, fresh_postgres, small_spec, tar_folder


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'distill.db'}"
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"{POSTGRES_ENV} is not set (scripts/test-postgres.sh starts a throwaway server)")
    return fresh_postgres(admin_url)


@pytest.fixture
def session(database_url: str):
    migrate(database_url)
    engine = make_engine(database_url)
    with make_sessions(engine)() as session:
        yield session
    engine.dispose()


def test_upgrade_from_empty_to_head_twice(database_url: str) -> None:
    migrate(database_url)
    migrate(database_url)  # every server start runs it: the second time is a no-op
    engine = make_engine(database_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"tenants", "users", "assignments", "tokens", "jobs", "events", "alembic_version"} <= tables


def test_tokens_are_hashed_revocable_and_scoped(session) -> None:
    accounts.create_tenant(session, "acme")
    user = accounts.create_user(session, "ann", "customer", tenant="acme")
    token, text = accounts.issue_token(session, user)
    assert token.sha256 != text and text not in token.sha256 and len(token.sha256) == 64
    assert accounts.authenticate(session, text).id == user.id
    assert accounts.authenticate(session, text[:-1] + ("A" if text[-1] != "A" else "B")) is None
    assert accounts.authenticate(session, "not-a-token") is None
    accounts.revoke_token(session, token.id)
    assert accounts.authenticate(session, text) is None


def test_roles_and_reviewer_assignments(session) -> None:
    accounts.create_tenant(session, "acme")
    accounts.create_tenant(session, "other")
    rita = accounts.create_user(session, "rita", "reviewer", assign=["acme"])
    assert accounts.visible_tenants(session, rita) == [accounts.find_tenant(session, "acme").id]
    assert accounts.visible_tenants(session, accounts.create_user(session, "root", "admin")) is None
    with pytest.raises(Exception, match="customer needs a tenant"):
        accounts.create_user(session, "nobody", "customer")
    with pytest.raises(Exception, match="already exists"):
        accounts.create_tenant(session, "acme")


def test_submit_records_a_queued_job_with_events(session, tmp_path: Path) -> None:
    accounts.create_tenant(session, "acme")
    ann = accounts.create_user(session, "ann", "customer", tenant="acme")
    spec = small_spec(tmp_path / "spec")
    job = jobs.submit_job(session, ann, tar_folder(spec.parent), "quick.tar.gz", "quick.yaml", tmp_path / "data")
    assert job.status == "queued" and job.estimate_usd == 0.0
    assert Path(job.run_dir).is_relative_to((tmp_path / "data" / "jobs" / job.id).resolve())
    events = session.scalars(select(Event).where(Event.job_id == job.id).order_by(Event.id)).all()
    assert [e.data.get("status") for e in events if e.type == "status"] == ["validating", "queued"]
    jobs.set_status(session, job, "generating")
    jobs.cancel_job(session, job)  # running: the executor stops it
    assert job.cancel_requested and job.status == "generating"


def test_refused_upload_leaves_nothing_behind(session, tmp_path: Path) -> None:
    accounts.create_tenant(session, "acme")
    ann = accounts.create_user(session, "ann", "customer", tenant="acme")
    with pytest.raises(SpecError):
        jobs.submit_job(session, ann, b"name: x\nrecords: -1\n", "spec.yaml", None, tmp_path / "data")
    with pytest.raises(UploadError, match="cannot tell which YAML"):
        jobs.submit_job(session, ann, tar_folder(small_spec(tmp_path / "two").parent), "s.tar.gz", None, tmp_path / "data")
    assert session.scalars(select(Job)).all() == []
    assert list((tmp_path / "data" / "jobs").iterdir()) == []


def test_a_lease_is_claimed_once(session, tmp_path: Path) -> None:
    """Two executors racing for one runnable job: the conditional update lets exactly one win."""
    accounts.create_tenant(session, "acme")
    ann = accounts.create_user(session, "ann", "customer", tenant="acme")
    job = jobs.submit_job(session, ann, tar_folder(small_spec(tmp_path / "spec").parent), "q.tar.gz", "quick.yaml", tmp_path / "d")
    assert (claim(session, job.id, "a"), claim(session, job.id, "b")) == (True, False)
    session.refresh(job)
    assert job.lease_owner == "a"
    session.execute(update(Job).where(Job.id == job.id).values(lease_until=utcnow() - timedelta(seconds=1)))
    session.commit()  # its executor died: the lease runs out and another takes the job over
    assert claim(session, job.id, "b")


def test_a_status_move_raced_by_two_sessions_happens_once(database_url: str, tmp_path: Path) -> None:
    """The sign-off request and an executor both see a job leave awaiting_review: one event, not two."""
    migrate(database_url)
    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    with sessions() as first, sessions() as second:
        accounts.create_tenant(first, "acme")
        ann = accounts.create_user(first, "ann", "customer", tenant="acme")
        job = jobs.submit_job(first, ann, tar_folder(small_spec(tmp_path / "spec").parent), "q.tar.gz", "quick.yaml", tmp_path / "d")
        jobs.set_status(first, job, "awaiting_review", "waiting for the sign-off")
        seen_by_second = second.get(Job, job.id)
        assert seen_by_second.status == "awaiting_review"
        moves = [jobs.transition(first, job, "awaiting_review", "queued", "signed off"),
                 jobs.transition(second, seen_by_second, "awaiting_review", "queued", "signed off")]
        assert moves == [True, False] and seen_by_second.status == "queued"
        events = first.scalars(select(Event).where(Event.job_id == job.id, Event.message == "signed off")).all()
        assert len(events) == 1
    engine.dispose()


def test_cancel_of_a_queued_job_is_immediate(session, tmp_path: Path) -> None:
    accounts.create_tenant(session, "acme")
    ann = accounts.create_user(session, "ann", "customer", tenant="acme")
    job = jobs.submit_job(session, ann, tar_folder(small_spec(tmp_path / "spec").parent), "q.tar.gz", "quick.yaml", tmp_path / "d")
    jobs.cancel_job(session, job)
    assert job.status == "cancelled" and job.finished_at is not None and not job.cancel_requested

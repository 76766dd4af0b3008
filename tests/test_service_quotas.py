"""Per-tenant limits and fairness on the service's store (SQLite): jobs waiting and submissions a minute
refused with the limit named and a Retry-After; the next job picked from the tenant served least
recently; spending caps that are finite and not negative; sessions that end with their token; and what
would fail after a sign-off refused at submit or before review."""

from __future__ import annotations

import math
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from conftest import REPO, run_distill
from distill.errors import ConfigError, SpecError
from distill.service import accounts, jobs
from distill.service.db import Job, make_engine, make_sessions, migrate, utcnow
from distill.service.demo import set_up_demo
from distill.service.prechecks import planned_problems, reviewed_problems
from distill.service.quotas import Limits, QuotaExceeded, check_submission, pick_fairly, tenant_load
from distill.service.web.sessions import find_session, start_session
from distill.spec import load_spec
from service_live import small_spec, tar_folder


@pytest.fixture
def session(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'distill.db'}"
    migrate(url)
    engine = make_engine(url)
    with make_sessions(engine)() as session:
        yield session
    engine.dispose()


def _job(session, tenant: str, user: str, minutes_ago: float, status: str = "queued") -> Job:
    job = Job(id=accounts.new_id("job"), tenant_id=tenant, created_by=user, spec_name="s", spec_file="s.yaml",
              run_dir="run", status=status, created_at=utcnow() - timedelta(minutes=minutes_ago))
    session.add(job)
    session.commit()
    return job


def _tenants(session) -> tuple[str, str, str, str]:
    a, b = accounts.create_tenant(session, "a"), accounts.create_tenant(session, "b")
    ann = accounts.create_user(session, "ann", "customer", tenant="a")
    bob = accounts.create_user(session, "bob", "customer", tenant="b")
    return a.id, ann.id, b.id, bob.id


def test_jobs_waiting_past_the_limit_are_refused_naming_it(session) -> None:
    a, ann, b, _ = _tenants(session)
    limits = Limits(queued=3, per_minute=100)
    for _ in range(3):
        _job(session, a, ann, minutes_ago=5)
    with pytest.raises(QuotaExceeded) as refused:
        check_submission(session, a, limits)
    assert refused.value.problems[0].key == "quota.queued" and refused.value.retry_after > 0
    check_submission(session, b, limits)  # another tenant is not held back by a's backlog


def test_submissions_past_the_per_minute_limit_wait_until_the_oldest_ages_out(session) -> None:
    a, ann, _, _ = _tenants(session)
    limits = Limits(queued=100, per_minute=2)
    _job(session, a, ann, minutes_ago=0.75, status="succeeded")
    _job(session, a, ann, minutes_ago=0.1, status="succeeded")
    with pytest.raises(QuotaExceeded) as refused:
        check_submission(session, a, limits)
    assert refused.value.problems[0].key == "quota.per_minute" and "2 a minute" in refused.value.problems[0].message
    assert 10 <= refused.value.retry_after <= 16  # the older one leaves the minute in ~15 s
    session.execute(update(Job).values(created_at=utcnow() - timedelta(minutes=2)))
    session.commit()
    check_submission(session, a, limits)


def test_the_next_job_comes_from_the_tenant_served_least_recently(session) -> None:
    a, ann, b, bob = _tenants(session)
    backlog = [_job(session, a, ann, minutes_ago=10 - i) for i in range(5)]
    first = backlog[0]
    first.started_at, first.status, first.lease_until = utcnow(), "generating", utcnow() + timedelta(seconds=10)
    session.commit()
    late = _job(session, b, bob, minutes_ago=1)
    running, served = tenant_load(session, utcnow())
    assert running == {a: 1}
    waiting = backlog[1:] + [late]
    assert pick_fairly(waiting, running, served, free=1, limit_running=2) == [late]  # b before a's older backlog
    assert pick_fairly(waiting, running, served, free=3, limit_running=2) == [late, backlog[1]]  # a: 2 running at most
    assert pick_fairly(backlog[1:], running, served, free=2, limit_running=1) == []  # a is at its running limit


def test_a_spending_cap_must_be_a_finite_amount_not_below_zero(session, tmp_path: Path) -> None:
    for cap in (-1.0, math.nan, math.inf):
        with pytest.raises(ConfigError, match="spending cap must be a finite amount"):
            accounts.create_tenant(session, "x", spending_cap_usd=cap)
    tenant = accounts.create_tenant(session, "x", spending_cap_usd=0.0)
    with pytest.raises(ConfigError, match="spending cap"):
        accounts.set_spending_cap(session, tenant.id, math.nan)
    for cap in ("-5", "nan"):
        done = run_distill("admin", "--data-dir", tmp_path / "admin", "tenant", f"t{cap}", "--spending-cap", cap)
        assert done.returncode == 2 and "--spending-cap" in done.stderr and "Traceback" not in done.stderr


def test_revoking_a_token_ends_its_browser_sessions_and_a_demo_restart_ends_the_demos(session, tmp_path: Path) -> None:
    a, ann, _, _ = _tenants(session)
    token, text = accounts.issue_token(session, session.get(accounts.User, ann))
    other, other_text = accounts.issue_token(session, session.get(accounts.User, ann))
    (row, cookie), (_, other_cookie) = start_session(session, text), start_session(session, other_text)
    assert find_session(session, cookie).id == row.id
    accounts.revoke_token(session, token.id)
    assert find_session(session, cookie) is None and find_session(session, other_cookie) is not None

    demo_tokens = set_up_demo(session, tmp_path / "data")
    _, demo_cookie = start_session(session, demo_tokens["demo-reviewer"])
    assert find_session(session, demo_cookie) is not None
    set_up_demo(session, tmp_path / "data")  # a restart: new demo tokens, the old ones revoked
    assert find_session(session, demo_cookie) is None


def _instruct_spec(folder: Path, records: int, batch_size: int) -> Path:
    folder.mkdir()
    shutil.copytree(REPO / "specs" / "words", folder / "words")
    text = (REPO / "specs" / "tinystories-instruct.yaml").read_text()
    text = re.sub(r"^records: \d+", f"records: {records}", text, flags=re.M)
    text = re.sub(r"^training:\n", f"training:\n  batch_size: {batch_size}\n", text, count=1, flags=re.M)
    text = re.sub(r"^(training:\n  batch_size: \d+\n)((?:  .*\n)*?)  batch_size: \d+\n", r"\1\2", text, flags=re.M)
    (folder / "spec.yaml").write_text(text)
    return folder / "spec.yaml"


def test_a_training_batch_the_planned_records_cannot_fill_is_refused_at_submit(tmp_path: Path) -> None:
    problems = planned_problems(load_spec(_instruct_spec(tmp_path / "small", records=10, batch_size=16)))
    assert [p.key for p in problems] == ["training.batch_size"]
    assert "fewer than one batch of 16" in problems[0].message and problems[0].line
    assert planned_problems(load_spec(_instruct_spec(tmp_path / "fits", records=40, batch_size=16))) == []


def test_kept_records_too_short_for_one_batch_are_refused_before_review(tmp_path: Path) -> None:
    loaded = load_spec(small_spec(tmp_path / "spec", records=40))  # text: batch 16 rows of the context length
    rows = loaded.spec.training.batch_size * loaded.spec.student.context_length
    assert reviewed_problems(loaded, ["Once upon a time."] * 10)[0].key == "training.batch_size"
    assert reviewed_problems(loaded, ["x" * (rows // 10 + 10)] * 10) == []


def test_submit_runs_the_checks_that_would_fail_after_sign_off(session, tmp_path: Path) -> None:
    _tenants(session)
    spec = _instruct_spec(tmp_path / "spec", records=10, batch_size=16)
    ann = accounts.find_user(session, "ann")
    with pytest.raises(SpecError, match="fewer than one batch"):
        jobs.submit_job(session, ann, tar_folder(spec.parent), "spec.tar.gz", "spec.yaml", tmp_path / "data")


def test_an_eval_need_that_would_fail_after_sign_off_is_refused_at_submit(tmp_path: Path) -> None:
    spec = small_spec(tmp_path / "spec", records=40)
    spec.write_text(spec.read_text().replace("evaluation:\n", "evaluation:\n  probe_sets: [no-such-set]\n", 1))
    problems = planned_problems(load_spec(spec))
    assert any("probe set 'no-such-set' not found" in p.message for p in problems), problems


def test_a_job_whose_lease_ran_out_is_claimed_while_loaded(session, tmp_path: Path) -> None:
    """A restarted server loads the runnable jobs (SQLite hands their lease times back without a zone)
    and claims one whose dead server's lease ran out."""
    from sqlalchemy import select

    from distill.service.executor import claim

    a, ann, _, _ = _tenants(session)
    job = _job(session, a, ann, minutes_ago=1, status="generating")
    session.execute(update(Job).where(Job.id == job.id).values(lease_owner="dead", lease_until=utcnow() - timedelta(seconds=1)))
    session.commit()
    session.expunge_all()
    loaded = list(session.scalars(select(Job)))
    assert claim(session, loaded[0].id, "new")
    session.refresh(loaded[0])
    assert loaded[0].lease_owner == "new"

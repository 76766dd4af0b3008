"""Human review has one core (distill.review.actions) under three faces: the CLI, the API and the web pages.
The core's query, bulk decisions with the expected-count guard, progress and the record's context are
tested directly; the API and the web pages over real HTTP against `distill serve` with jobs awaiting
review (their run directories made and reviewed here, so no teacher or training is needed)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from distill.cli.review import app as review_app
from distill.errors import RunDirError
from distill.review import actions
from distill.review.actions import CountChanged, Query
from distill.review.audit import read_log
from distill.review.store import build_view, review_dir
from distill.rundir import RunDir
from distill.service.db import Job, Tenant, User, make_engine, make_sessions
from distill.spec import load_spec
from service_live import LiveServer
from test_review_cli import STORY
from test_review_stage import make_run

REPO = Path(__file__).resolve().parents[1]
VARIABLES = {"noun": "ball", "verb": "play", "adjective": "kind"}


def reviewed_run(root: Path) -> Path:
    """Six stories under the children policy: 1 and 3 pending (a toy gun), 2 rejected (a phone number)."""
    path = RunDir.create(load_spec(REPO / "specs" / "tinystories.yaml"), root=root).path
    texts = [STORY.replace("Mia", name) for name in ("Mia", "Zoe", "Sam", "Ben", "Kim", "Leo")]
    texts[1] = texts[1].replace("red ball", "toy gun")
    texts[3] = texts[3].replace("red ball", "toy gun")
    texts[2] += "Call her dad at (312) 448-9021."
    make_run(path, texts, variables=[VARIABLES] * 6)
    done = CliRunner().invoke(review_app, [str(path), "--no-judge"], catch_exceptions=False)
    assert done.exit_code == 0, done.stderr
    return path


@pytest.fixture
def run(tmp_path) -> Path:
    return reviewed_run(tmp_path)


def ids(records) -> list[int]:
    return [r.id for r in records]


def test_one_query_holds_every_filter(run) -> None:
    view = build_view(run)
    assert ids(actions.find(view, Query(status="pending"))) == [1, 3]
    assert ids(actions.find(view, Query(reason="lexicon"))) == [1, 3]  # a prefix matches the codes under it
    stage = next(f.stage for f in view[2].reasons)
    assert ids(actions.find(view, Query(stage=stage))) == [2]
    assert ids(actions.find(view, Query(q="ZOE"))) == [1]
    assert ids(actions.find(view, Query(status="pending", ids=(3, 4)))) == [3]
    with pytest.raises(RunDirError, match="unknown status 'keep'"):
        Query(status="keep")


def test_bulk_decision_refuses_a_count_that_changed(run) -> None:
    before = len(read_log(review_dir(run)))
    with pytest.raises(CountChanged, match="now matches 2 records, not the 3 you confirmed"):
        actions.decide(run, Query(status="pending"), "reject", reviewer="ana", expected_count=3)
    assert len(read_log(review_dir(run))) == before  # nothing decided
    entry, decided = actions.decide(run, Query(status="pending"), "reject", reviewer="ana", note="no guns",
                                    expected_count=2)
    assert decided == [1, 3] and entry["ids"] == [1, 3]
    assert [r.status for r in build_view(run)] == ["kept", "rejected", "rejected", "rejected", "kept", "kept"]


def test_progress_and_the_next_pending_record(run) -> None:
    view = build_view(run)
    assert actions.progress(view) == {"decided": 0, "pending": 2, "total": 6}
    assert actions.next_pending(view, 1).id == 3 and actions.next_pending(view, 3).id == 1  # wraps round
    actions.decide(run, [1], "accept", reviewer="ana")
    view = build_view(run)
    assert actions.progress(view) == {"decided": 1, "pending": 1, "total": 6}
    assert actions.next_pending(view, 3).id == 3 and actions.next_pending(view, None, Query(q="Mia")) is None


def test_a_text_kind_record_shows_its_sampled_variables(run) -> None:
    assert build_view(run)[0].prompt == ""  # tinystories trains on the text alone
    assert actions.record_context(run, 0)["variables"] == VARIABLES


def test_the_rules_are_written_once() -> None:
    """What the student may train on is said in one place; web pages call no route; one permission rule."""
    def grep(pattern: str, where: str) -> list[str]:
        found = subprocess.run(["grep", "-rlE", "--include=*.py", "--include=*.html", pattern, where], cwd=REPO, capture_output=True, text=True).stdout
        return sorted(found.split())

    assert grep(r'\("kept", "redacted"\)', "distill") == ["distill/review/store.py"]
    assert grep(r"service\.routers|from distill\.service import .*routers", "distill/service/web") == []
    assert grep(r"user\.role (not )?in |require_role", "distill/service") == ["distill/service/permissions.py"]


# --- the API and the web pages, over HTTP ---


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A server with tenant acme (customer ann, reviewer rita) and two of acme's jobs awaiting review."""
    root = tmp_path_factory.mktemp("faces")
    (root / "data").mkdir()
    server = LiveServer(root / "data")
    server.admin("tenant", "acme")
    tokens = {"ann": server.admin("user", "ann", "--role", "customer", "--tenant", "acme"),
              "rita": server.admin("user", "rita", "--role", "reviewer", "--assign", "acme")}
    sessions = make_sessions(make_engine(server.database_url))
    with sessions() as session:
        tenant = session.query(Tenant).one()
        ann = session.query(User).filter_by(name="ann").one()
        for name in ("api", "web"):
            run_dir = reviewed_run(root / name)
            session.add(Job(id=f"job_{name}", tenant_id=tenant.id, created_by=ann.id, spec_name="tinystories",
                            spec_file=str(run_dir / "spec.yaml"), run_dir=str(run_dir), status="awaiting_review"))
        session.commit()
    server.start()
    yield server, tokens
    server.stop()


def test_api_filters_by_stage_and_guards_the_bulk_count(live) -> None:
    server, tokens = live
    with server.client(tokens["rita"]) as rita:
        url = "/v1/jobs/job_api"
        pending = rita.get(f"{url}/records", params={"status": "pending"}).json()
        assert pending["total"] == 2
        stage = rita.get(f"{url}/records/2").json()["findings"][0]["stage"]
        assert [r["id"] for r in rita.get(f"{url}/records", params={"stage": stage}).json()["records"]] == [2]
        refused = rita.post(f"{url}/review/bulk", json={"query": {"status": "pending"}, "decision": "reject",
                                                        "reason": "guns", "expected": 3})
        assert refused.status_code == 409 and "now matches 2 records, not the 3" in refused.json()["detail"]
        assert rita.get(f"{url}/records", params={"status": "pending"}).json()["total"] == 2  # nothing decided
        done = rita.post(f"{url}/review/bulk", json={"query": {"reason": "lexicon", "status": "pending"},
                                                     "decision": "reject", "reason": "guns", "expected": 2})
        assert done.status_code == 200 and done.json()["affected"] == 2 and done.json()["entry"]["ids"] == [1, 3]
        assert rita.get(f"{url}/records", params={"status": "pending"}).json()["total"] == 0


@contextmanager
def log_in(server: LiveServer, token: str) -> Iterator[httpx.Client]:
    """A browser-like client with a session cookie (no redirects followed)."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        csrf = form_csrf(client.get("/ui/login"))
        assert client.post("/ui/login", data={"token": token, "csrf": csrf, "next": "/ui/"}).status_code == 303
        yield client


def form_csrf(page: httpx.Response) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_web_review_shows_context_and_progress_and_opens_the_next_pending(live) -> None:
    server, tokens = live
    with log_in(server, tokens["rita"]) as rita:
        page = rita.get("/ui/jobs/job_web/review", params={"record": 0})
        assert page.status_code == 200
        assert re.search(r"Decided by a person: <strong>0</strong> / 6", page.text)
        assert 'id="f-stage"' in page.text and "<dt>noun</dt><dd>ball</dd>" in page.text
        assert "(none: the student learns this text without a prompt)" in page.text
        csrf = form_csrf(page)
        act = {"csrf": csrf, "record": "1", "f_status": "pending"}
        refused = rita.post("/ui/jobs/job_web/review/decide", data={**act, "decision": "reject"})
        assert "say+why+you+reject" in refused.headers["location"]
        moved = rita.post("/ui/jobs/job_web/review/decide", data={**act, "decision": "accept", "advance": "1"})
        assert moved.status_code == 303 and "record=3" in moved.headers["location"]  # no reason needed to accept
        after = rita.get(moved.headers["location"])
        assert re.search(r"Decided by a person: <strong>1</strong> / 6", after.text) and "record 1: accepted" in after.text
        bulk = rita.post("/ui/jobs/job_web/review/bulk", data={"csrf": csrf, "f_status": "pending", "decision": "reject",
                                                               "expected": "2", "reason": "guns"})
        assert "now+matches+1+records%2C+not+the+2" in bulk.headers["location"]
    with log_in(server, tokens["ann"]) as ann:
        assert ann.get("/ui/jobs/job_web/review").status_code == 403  # the permission rule, as over the API
        assert ann.get("/ui/jobs/job_web").status_code == 200
        assert ann.get("/ui/jobs/job_web/bundle").status_code == 409

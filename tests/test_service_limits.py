"""Tenant limits and sessions over real HTTP: a tenant past its submissions a minute gets 429 with a
problem naming the limit and Retry-After; another tenant's job starts before the first tenant's backlog;
a negative or NaN spending cap is refused by the API and the admin form, located; a browser session
made from a token ends when the token is revoked."""

from __future__ import annotations

import re

import httpx
import pytest

from service_live import LiveServer, small_spec, tar_folder, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    (root / "data").mkdir()
    server = LiveServer(root / "data", serve_args=("--tenant-per-minute", "3", "--tenant-running", "1"))
    server.admin("tenant", "acme")
    server.admin("tenant", "beta")
    tokens = {"ann": server.admin("user", "ann", "--role", "customer", "--tenant", "acme"),
              "bea": server.admin("user", "bea", "--role", "customer", "--tenant", "beta"),
              "root": server.admin("user", "root", "--role", "admin")}
    server.start()
    yield server, tokens, small_spec(root / "spec", records=12)
    server.stop()


def _submit(client: httpx.Client, spec) -> httpx.Response:
    return client.post("/v1/jobs", files={"file": ("q.tar.gz", tar_folder(spec.parent))}, data={"spec_path": spec.name})


def _started(client: httpx.Client, job_id: str) -> int | None:
    """The id of the job's "job started" event (events are numbered in order), or None."""
    events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["events"]
    return next((e["id"] for e in events if e["message"] == "job started"), None)


def test_a_tenants_backlog_is_limited_and_does_not_hold_another_tenant_back(live) -> None:
    server, tokens, spec = live
    with server.client(tokens["ann"]) as ann, server.client(tokens["bea"]) as bea:
        backlog = []
        for _ in range(3):
            response = _submit(ann, spec)
            assert response.status_code == 201, response.text
            backlog.append(response.json()["id"])
        refused = _submit(ann, spec)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.json()["problems"][0]["key"] == "quota.per_minute" and "3 a minute" in refused.json()["detail"]
        late = _submit(bea, spec).json()["id"]
        started = wait_for(lambda: _started(bea, late), 600, "the other tenant's job to start")
        earlier = [_started(ann, job) for job in backlog[1:]]
        assert all(first is None or first > started for first in earlier), (started, earlier)


def _log_in(client: httpx.Client, token: str) -> httpx.Client:
    """A browser's login over plain HTTP: the login form's CSRF cookie, then the token."""
    client.get("/ui/login")
    response = client.post("/ui/login", data={"token": token, "csrf": client.cookies["distill_login_csrf"], "next": "/ui/"})
    assert response.status_code == 303, response.text
    return client


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_a_negative_or_nan_spending_cap_is_refused_located(live) -> None:
    server, tokens, _ = live
    with server.client(tokens["root"]) as root:
        for cap in (-1, "NaN"):
            response = root.post("/v1/tenants", content=f'{{"name": "t{cap}", "spending_cap_usd": {cap}}}',
                                 headers={"content-type": "application/json"})
            assert response.status_code == 422 and "spending_cap_usd" in response.text, response.text
    with httpx.Client(base_url=server.url, timeout=60) as browser:
        _log_in(browser, tokens["root"])
        csrf = _csrf(browser.get("/ui/admin").text)
        for cap in ("-3", "nan", "inf", "lots"):
            response = browser.post("/ui/admin/tenants", data={"csrf": csrf, "name": f"form-{cap}", "spending_cap_usd": cap})
            assert response.status_code == 422 and "spending cap" in response.text, cap
            assert "could not convert" not in response.text and "ValueError" not in response.text


def test_a_revoked_tokens_browser_session_ends_on_its_next_page(live) -> None:
    server, tokens, _ = live
    with server.client(tokens["root"]) as root:
        user = root.post("/v1/users", json={"name": "cleo", "role": "customer", "tenant": "acme"}).json()
        issued = root.post(f"/v1/users/{user['id']}/tokens").json()
        with httpx.Client(base_url=server.url, timeout=60) as browser:
            _log_in(browser, issued["token"])
            assert browser.get("/ui/").status_code == 200
            assert root.delete(f"/v1/tokens/{issued['id']}").status_code == 200
            page = browser.get("/ui/")
            assert page.status_code in (302, 303, 307) and "/ui/login" in page.headers["location"]
            assert browser.get("/v1/me", headers={"Authorization": f"Bearer {issued['token']}"}).status_code == 401

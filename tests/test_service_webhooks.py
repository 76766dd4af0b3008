"""Webhooks over real HTTP: a receiver on loopback (allowed by the admin setting) that fails a few times
first gets the delivery, retried with backoff and signed the Standard Webhooks way; URLs that resolve
inside the network are refused before any connection; secrets are encrypted at rest; a job waiting for
review tells the reviewers' endpoint. Every request in these tests goes to loopback or nowhere."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import sqlite3
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from service_live import LiveServer, small_spec, tar_folder, wait_for, wait_status

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
FAILURES = 3


class Receiver:
    """An HTTP server on 127.0.0.1 that answers 503 to its first `failures` requests, then 200."""

    def __init__(self, failures: int):
        self.failures, self.requests = failures, []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body, "at": time.monotonic()})
                self.send_response(503 if len(receiver.requests) <= receiver.failures else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("webhooks")
    (root / "data").mkdir()
    server = LiveServer(root / "data")
    server.admin("tenant", "acme", "--allow-key-env", "OPENAI_API_KEY")
    server.admin("tenant", "other")
    tokens = {"ann": server.admin("user", "ann", "--role", "customer", "--tenant", "acme"),
              "bob": server.admin("user", "bob", "--role", "customer", "--tenant", "other"),
              "root": server.admin("user", "root", "--role", "admin")}
    os.environ["DISTILL_WEBHOOK_RETRY_BASE_S"] = "0.2"  # the child server reads it: retries within a test's time
    try:
        server.start()
    finally:
        del os.environ["DISTILL_WEBHOOK_RETRY_BASE_S"]
    receiver = Receiver(FAILURES)
    yield server, tokens, receiver, root
    server.stop()
    receiver.server.shutdown()


def _allow(server, tokens, hosts: list[str]) -> None:
    with server.client(tokens["root"]) as root:
        assert root.put("/v1/webhooks/allowed-hosts", json={"hosts": hosts}).json() == {"hosts": sorted(hosts)}


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/hook",  # loopback, not allowed by an admin
    "http://10.1.2.3/hook",  # private
    "http://169.254.169.254/latest/meta-data/",  # the cloud metadata address (link-local)
    "http://localhost:{port}/hook",  # a name that resolves to loopback
    "http://[::1]:{port}/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook",
    "http://user:password@127.0.0.1:{port}/hook",
    "file:///etc/passwd",
])
def test_urls_inside_the_network_are_refused_before_connecting(live, url) -> None:
    server, tokens, receiver, _ = live
    before = len(receiver.requests)
    with server.client(tokens["ann"]) as ann:
        response = ann.post("/v1/webhooks", json={"url": url.format(port=receiver.port)})
    assert response.status_code == 422, response.text
    assert [p["key"] for p in response.json()["problems"]] == ["url"]
    assert len(receiver.requests) == before


def test_failing_receiver_gets_a_signed_delivery_after_retries_and_a_redelivery(live) -> None:
    server, tokens, receiver, _ = live
    _allow(server, tokens, ["127.0.0.1"])
    with server.client(tokens["ann"]) as ann:
        created = ann.post("/v1/webhooks", json={"url": f"http://127.0.0.1:{receiver.port}/customer"})
        assert created.status_code == 201, created.text
        webhook = created.json()
        assert webhook["secret"].startswith("whsec_") and ann.get(f"/v1/webhooks/{webhook['id']}").json()["secret"] is None
        delivery = ann.post(f"/v1/webhooks/{webhook['id']}/ping").json()

        def delivered():
            rows = ann.get(f"/v1/webhooks/{webhook['id']}/deliveries").json()["deliveries"]
            return next((d for d in rows if d["id"] == delivery["id"] and d["state"] == "delivered"), None)

        done = wait_for(delivered, 60, "the delivery to succeed")
        assert [a["status_code"] for a in done["log"]] == [503] * FAILURES + [200]
        assert done["payload"]["type"] == "webhook.ping"
        gaps = [b["at"] - a["at"] for a, b in zip(receiver.requests, receiver.requests[1:])]
        assert gaps[0] >= 0.2 and gaps[1] >= 0.4 and gaps[2] >= 0.8  # exponential backoff from 0.2 s
        for request in receiver.requests:
            _check_signature(webhook["secret"], request, delivery["id"])

        assert ann.post(f"/v1/webhooks/{webhook['id']}/deliveries/{delivery['id']}/redeliver").status_code == 202
        wait_for(lambda: len(receiver.requests) == FAILURES + 2, 30, "the redelivery")
        _check_signature(webhook["secret"], receiver.requests[-1], delivery["id"])
        with server.client(tokens["bob"]) as bob:  # another tenant's customer sees none of it
            assert bob.get(f"/v1/webhooks/{webhook['id']}/deliveries").status_code == 404
            assert bob.get("/v1/webhooks").json() == {"webhooks": [], "next_cursor": None}


def test_endpoint_list_pages_with_a_cursor(live) -> None:
    server, tokens, receiver, _ = live
    _allow(server, tokens, ["127.0.0.1"])
    with server.client(tokens["bob"]) as bob:
        made = [bob.post("/v1/webhooks", json={"url": f"http://127.0.0.1:{receiver.port}/page{n}"}).json()["id"]
                for n in range(3)]
        first = bob.get("/v1/webhooks", params={"limit": 2}).json()
        second = bob.get("/v1/webhooks", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        seen = [w["id"] for w in first["webhooks"] + second["webhooks"]]
        assert sorted(seen) == sorted(made) and len(first["webhooks"]) == 2 and second["next_cursor"] is None
        assert seen == made[::-1]  # newest first
        bad = bob.get("/v1/webhooks", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 422 and "cursor" in bad.text
        for webhook_id in made:
            assert bob.delete(f"/v1/webhooks/{webhook_id}").status_code == 200


def _check_signature(secret: str, request: dict, delivery_id: str) -> None:
    headers = request["headers"]
    assert headers["webhook-id"] == delivery_id
    Webhook(secret).verify(request["body"], headers)  # the reference implementation
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + request["body"]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == expected


def test_delivery_is_checked_again_when_the_host_is_no_longer_allowed(live) -> None:
    server, tokens, receiver, _ = live
    _allow(server, tokens, ["127.0.0.1"])
    with server.client(tokens["ann"]) as ann:
        webhook = ann.post("/v1/webhooks", json={"url": f"http://127.0.0.1:{receiver.port}/later"}).json()
        _allow(server, tokens, [])
        before = len(receiver.requests)
        delivery = ann.post(f"/v1/webhooks/{webhook['id']}/ping").json()

        def attempted():
            rows = ann.get(f"/v1/webhooks/{webhook['id']}/deliveries").json()["deliveries"]
            return next((d["log"] for d in rows if d["id"] == delivery["id"] and d["log"]), None)

        log = wait_for(attempted, 30, "the first attempt")
    assert log[0]["status_code"] is None and log[0]["error"].startswith("refused: the host 127.0.0.1 resolves to 127.0.0.1")
    assert len(receiver.requests) == before


def test_secrets_are_encrypted_at_rest_and_never_logged(live) -> None:
    server, tokens, receiver, root = live
    _allow(server, tokens, ["127.0.0.1"])
    with server.client(tokens["ann"]) as ann:
        secret = ann.post("/v1/webhooks", json={"url": f"http://127.0.0.1:{receiver.port}/rest"}).json()["secret"]
    key_file = root / "data" / "webhook.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    db = sqlite3.connect(root / "data" / "distill.db")
    stored = [row[0] for row in db.execute("SELECT secret_encrypted FROM webhook_endpoints")]
    db.close()
    assert stored and all(secret not in value and value.startswith("gAAAA") for value in stored)  # Fernet tokens
    log = (root / "data" / "serve.log").read_text()
    assert secret not in log and key_file.read_text().strip() not in log


def test_customer_cannot_make_a_reviewers_endpoint(live) -> None:
    server, tokens, receiver, _ = live
    with server.client(tokens["ann"]) as ann:
        response = ann.post("/v1/webhooks", json={"url": f"http://127.0.0.1:{receiver.port}/r", "audience": "reviewers"})
    assert response.status_code == 403


def test_job_awaiting_review_tells_the_reviewers_endpoint(live) -> None:
    server, tokens, receiver, root = live
    _allow(server, tokens, ["127.0.0.1"])
    with server.client(tokens["root"]) as admin, server.client(tokens["ann"]) as ann:
        tenant = ann.get("/v1/me").json()["tenant_id"]
        made = admin.post("/v1/webhooks", json={"url": f"http://127.0.0.1:{receiver.port}/reviewers",
                                                "audience": "reviewers", "tenant_id": tenant})
        assert made.status_code == 201, made.text
        spec = small_spec(root / "spec", records=20)
        job = ann.post("/v1/jobs", files={"file": ("q.tar.gz", tar_folder(spec.parent))}, data={"spec_path": "quick.yaml"}).json()
        wait_status(ann, job["id"], "awaiting_review", timeout=600)
        heard = wait_for(lambda: [r for r in receiver.requests if r["path"] == "/reviewers"], 60, "the reviewers' webhook")
    body = Webhook(made.json()["secret"]).verify(heard[0]["body"], heard[0]["headers"])
    assert body["type"] == "job.awaiting_review" and body["data"]["job_id"] == job["id"]
    assert not [r for r in receiver.requests if r["path"] in ("/customer", "/rest") and job["id"].encode() in r["body"]]

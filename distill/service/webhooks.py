"""Webhooks: a tenant's endpoints are told when its jobs change state, signed the Standard Webhooks way.

    awaiting_review       -> the tenant's `reviewers` endpoints   (type job.awaiting_review)
    succeeded / failed    -> the tenant's `customer` endpoints    (type job.succeeded / job.failed)

A state change writes one delivery row per endpoint, in the same transaction as the job's status (so a
worker process records it, and nothing is lost if the server stops). The `WebhookSender` thread of the
API process sends due deliveries: headers `webhook-id`, `webhook-timestamp` and `webhook-signature`
(`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under the endpoint's `whsec_` secret, made by the
`standardwebhooks` library), through `outbound.post` (no private addresses, no redirects, bounded).
A failed attempt is retried after `retry_base_s * 2**(attempt-1)`, `MAX_ATTEMPTS` times in all; each
attempt is logged; a delivery can be sent again by hand (`redeliver`).

Endpoint secrets are stored encrypted (Fernet) under a server key: `DISTILL_WEBHOOK_KEY` from the
environment, else `DATA/webhook.key`, created (mode 0600) on first use. The key is never logged.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import DateTime, ForeignKey, Integer, String, Text, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker
from standardwebhooks.webhooks import Webhook

from distill.errors import ConfigError, Problem
from distill.service import outbound
from distill.service.accounts import new_id
from distill.service.db import Base, Job, utcnow

log = logging.getLogger("distill.service")
KEY_ENV = "DISTILL_WEBHOOK_KEY"
RETRY_ENV = "DISTILL_WEBHOOK_RETRY_BASE_S"
MAX_ATTEMPTS = 8  # with the default 10 s base: retried for about 21 minutes
LEASE_S = 60.0
AUDIENCE_OF_STATUS = {"awaiting_review": "reviewers", "succeeded": "customer", "failed": "customer"}


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    audience: Mapped[str] = mapped_column(String(20))  # customer | reviewers
    url: Mapped[str] = mapped_column(Text)
    secret_encrypted: Mapped[str] = mapped_column(Text)  # Fernet token of the whsec_ secret
    created_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the webhook-id header: the same on every retry
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    type: Mapped[str] = mapped_column(String(60))
    body: Mapped[str] = mapped_column(Text)  # the exact JSON sent (and signed)
    state: Mapped[str] = mapped_column(String(20), index=True)  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    milliseconds: Mapped[int] = mapped_column(Integer)


class AllowedHost(Base):
    """A host name an admin allows webhooks to reach although it resolves inside the network."""

    __tablename__ = "webhook_allowed_hosts"
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def server_key(data_dir: Path) -> Fernet:
    """The key that encrypts endpoint secrets: from the environment, else the data folder's (made once)."""
    if os.environ.get(KEY_ENV):
        try:
            return Fernet(os.environ[KEY_ENV].encode())
        except ValueError:
            raise ConfigError(Problem(f"{KEY_ENV} is not a Fernet key", key=KEY_ENV,
                                      hint="make one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'")) from None
    path = Path(data_dir) / "webhook.key"
    if not path.is_file():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(Fernet.generate_key())
    return Fernet(path.read_bytes().strip())


def allowed_hosts(session: Session) -> set[str]:
    return set(session.scalars(select(AllowedHost.host)))


def set_allowed_hosts(session: Session, hosts: list[str], user_id: str) -> list[str]:
    wanted = {h.strip().lower() for h in hosts if h.strip()}
    for row in session.scalars(select(AllowedHost)):
        if row.host not in wanted:
            session.delete(row)
    for host in wanted - allowed_hosts(session):
        session.add(AllowedHost(host=host, created_by=user_id))
    session.commit()
    return sorted(wanted)


def create_endpoint(session: Session, key: Fernet, tenant_id: str, audience: str, url: str,
                    user_id: str) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret (returned once, stored encrypted). Refuses a URL that `outbound`
    would refuse now (ConfigError naming `url`); the check is made again before every send."""
    problem = outbound.url_problem(url)
    if problem is None:
        try:
            outbound.resolve(url, allowed_hosts(session))
        except outbound.Refused as exc:
            problem = Problem(f"refused: {exc}", key="url")
    if problem is not None:
        raise ConfigError(problem)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    endpoint = WebhookEndpoint(id=new_id("whk"), tenant_id=tenant_id, audience=audience, url=url,
                               secret_encrypted=key.encrypt(secret.encode()).decode(), created_by=user_id)
    session.add(endpoint)
    session.commit()
    return endpoint, secret


def record_state_change(session: Session, job: Job, status: str) -> None:
    """Queue a delivery to each of the tenant's endpoints that hears about `status` (no commit: the
    caller's transaction, which also writes the status, commits it)."""
    audience = AUDIENCE_OF_STATUS.get(status)
    if audience is None:
        return
    data = {"job_id": job.id, "tenant_id": job.tenant_id, "spec_name": job.spec_name, "status": status,
            "error": job.error}
    for endpoint in session.scalars(select(WebhookEndpoint).where(
            WebhookEndpoint.tenant_id == job.tenant_id, WebhookEndpoint.audience == audience,
            WebhookEndpoint.disabled_at.is_(None))):
        enqueue(session, endpoint, f"job.{status}", data, job_id=job.id)


def enqueue(session: Session, endpoint: WebhookEndpoint, type: str, data: dict[str, Any],
            job_id: str | None = None) -> WebhookDelivery:
    now = utcnow()
    body = json.dumps({"type": type, "timestamp": now.isoformat(timespec="seconds"), "data": data}, separators=(",", ":"))
    delivery = WebhookDelivery(id=new_id("msg"), endpoint_id=endpoint.id, job_id=job_id, type=type, body=body,
                               state="pending", attempts=0, next_attempt_at=now)
    session.add(delivery)
    return delivery


def redeliver(session: Session, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again (same id and body, a fresh timestamp and signature), with a full set of retries."""
    delivery.state, delivery.attempts, delivery.next_attempt_at, delivery.lease_until = "pending", 0, utcnow(), None
    session.commit()
    return delivery


def signed_headers(secret: str, delivery_id: str, body: str, when: datetime) -> dict[str, str]:
    signature = Webhook(secret).sign(delivery_id, when, body)
    return {"webhook-id": delivery_id, "webhook-timestamp": str(int(when.timestamp())), "webhook-signature": signature}


class WebhookSender:
    """A thread that sends due deliveries, one at a time; several API processes share the work through
    a lease on each delivery (a conditional UPDATE, like the executor's job lease)."""

    def __init__(self, sessions: sessionmaker, key: Fernet, *, retry_base_s: float | None = None, tick_s: float = 0.5):
        self.sessions, self.key, self.tick_s = sessions, key, tick_s
        self.retry_base_s = retry_base_s if retry_base_s is not None else float(os.environ.get(RETRY_ENV, "10"))
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="distill-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                while not self._stop.is_set() and self.send_one():
                    pass
            except Exception:  # the loop must survive a database hiccup; say what happened
                log.exception("webhook sender tick failed")
            self._wake.wait(self.tick_s)
            self._wake.clear()

    def send_one(self) -> bool:
        """Claim and send one due delivery; False when none is due."""
        with self.sessions() as session:
            delivery = self._claim(session)
            if delivery is None:
                return False
            endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
            try:
                secret = self.key.decrypt(endpoint.secret_encrypted.encode()).decode()
            except InvalidToken:
                answer = outbound.Answer(None, "the endpoint's secret cannot be decrypted (the server key changed)", 0)
            else:
                headers = signed_headers(secret, delivery.id, delivery.body, utcnow())
                answer = outbound.post(endpoint.url, delivery.body.encode(), headers, allowed_hosts(session))
            self._record(session, delivery, answer)
        return True

    def _claim(self, session: Session) -> WebhookDelivery | None:
        now = utcnow()
        due = session.scalars(select(WebhookDelivery.id).where(
            WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now))
            .order_by(WebhookDelivery.next_attempt_at).limit(5)).all()
        for delivery_id in due:
            claimed = session.execute(update(WebhookDelivery).where(
                WebhookDelivery.id == delivery_id, WebhookDelivery.state == "pending",
                or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now))
                .values(lease_until=now + timedelta(seconds=LEASE_S))).rowcount
            session.commit()
            if claimed:
                return session.get(WebhookDelivery, delivery_id)
        return None

    def _record(self, session: Session, delivery: WebhookDelivery, answer: outbound.Answer) -> None:
        session.add(WebhookAttempt(delivery_id=delivery.id, status_code=answer.status_code, error=answer.error,
                                   milliseconds=answer.milliseconds))
        delivery.attempts += 1
        delivery.lease_until = None
        if answer.error is None:
            delivery.state, delivery.delivered_at, delivery.next_attempt_at = "delivered", utcnow(), None
        elif delivery.attempts >= MAX_ATTEMPTS:
            delivery.state, delivery.next_attempt_at = "failed", None
        else:
            delivery.next_attempt_at = utcnow() + timedelta(seconds=self.retry_base_s * 2 ** (delivery.attempts - 1))
        session.commit()

"""The service's tables and engine. Tables hold only what the service knows (tenants, users, tokens,
jobs, events, reviewer assignments, browser sessions); a job points at its run directory, which holds the stage state.

SQLite (the default) runs in WAL mode so the API and the worker processes read and write at once;
`postgresql+psycopg://...` URLs work the same. The schema is created by Alembic (`migrate`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    spending_cap_usd: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: no cap
    allowed_key_envs: Mapped[list[str]] = mapped_column(JSON, default=list)
    dataset_download: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))  # admin | reviewer | customer
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), nullable=True)  # customers only
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Assignment(Base):
    """A reviewer may review the jobs of the tenants they are assigned to."""

    __tablename__ = "assignments"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)  # of the token; the token itself is never stored
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebSession(Base):
    """A browser login: the cookie's sha256 (the cookie itself is never stored) and its CSRF token."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    csrf: Mapped[str] = mapped_column(String(64))  # sent back in every form (synchronizer token)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    token_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)  # revoking it ends the session
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    created_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    spec_name: Mapped[str] = mapped_column(String(200))
    spec_file: Mapped[str] = mapped_column(Text)  # the uploaded spec, extracted under the data folder
    run_dir: Mapped[str] = mapped_column(Text)  # the run directory: the source of truth for stage state
    status: Mapped[str] = mapped_column(String(20), index=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    estimate_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)  # the tenant's cap applied to this job
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(80), nullable=True)  # the executor running it
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    worker_deaths: Mapped[int] = mapped_column(Integer, default=0)  # workers that died running it (retried, bounded)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # last launch
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    type: Mapped[str] = mapped_column(String(40))  # status | stage | review | error | info
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Deployment(Base):
    """A released job served under /v1/deployments/<id>/; `file` is its routes (distill.coldstart.promote)."""

    __tablename__ = "deployments"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)  # the job it was created from
    created_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    file: Mapped[str] = mapped_column(Text)
    capture_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    capture_rate: Mapped[float] = mapped_column(Float, default=1.0)
    retention_days: Mapped[int] = mapped_column(Integer, default=30)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / 'distill.db'}"


# The pool serves requests, not open event streams (they wait on the notifier's queues, holding no
# connection): at most 40 request threads (Starlette's thread pool) + 6 short event reads (asyncio's
# default threads on 2 cores) + the executor, the notifier and the webhook sender. 20 kept + 40 more
# covers them with room; on PostgreSQL that is up to 60 connections per `distill serve` process.
POOL_SIZE, POOL_OVERFLOW = 20, 40


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)

        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record) -> None:  # WAL: readers never wait for the writer
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)


def make_sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(url: str) -> None:
    """Bring the database to the newest schema (Alembic `upgrade head`); safe to run every start."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")

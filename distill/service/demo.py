"""`distill serve --demo`: a demo tenant with a customer, a reviewer and an admin, fresh tokens for each
(printed at start; older demo tokens are revoked), and two jobs submitted once: the offline quickstart,
which signs off automatically, and a 24-story pilot whose policy needs a person's sign-off, so the
reviewer's path can be walked before the customer downloads."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from distill.paths import data_path
from distill.service import accounts, jobs
from distill.service.db import Job, Token, User

TENANT = "demo"
USERS = (("demo-admin", "admin"), ("demo-reviewer", "reviewer"), ("demo-customer", "customer"))
# (spec file, the folders beside it that it reads), in the order they are submitted
DEMO_JOBS = (("tinystories-quickstart.yaml", ("words",)), ("tinystories-pilot.yaml", ("words", "policies")))


def spec_upload(spec: str, folders: tuple[str, ...]) -> bytes:
    """A shipped spec and the folders it reads as a tar.gz, the way a customer would upload them."""
    specs = data_path("specs")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(specs / spec, arcname=spec)
        for folder in folders:
            archive.add(specs / folder, arcname=folder)
    return buffer.getvalue()


def set_up_demo(session: Session, data_dir: Path) -> dict[str, str]:
    """Idempotent: create what is missing, submit the demo jobs once; returns user name -> new token."""
    if session.scalar(select(accounts.Tenant).where(accounts.Tenant.name == TENANT)) is None:
        accounts.create_tenant(session, TENANT, dataset_download=True)
    tokens = {}
    for name, role in USERS:
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            user = accounts.create_user(session, name, role, tenant=TENANT if role == "customer" else None,
                                        assign=[TENANT] if role == "reviewer" else [])
        for old in list(session.scalars(select(Token).where(Token.user_id == user.id, Token.revoked_at.is_(None)))):
            accounts.revoke_token(session, old.id)  # ends the browser sessions made with it too
        tokens[name] = accounts.issue_token(session, user, name="demo")[1]
    customer = session.scalar(select(User).where(User.name == "demo-customer"))
    if session.scalar(select(Job).where(Job.tenant_id == customer.tenant_id)) is None:
        for spec, folders in DEMO_JOBS:
            jobs.submit_job(session, customer, spec_upload(spec, folders), f"{Path(spec).stem}.tar.gz", spec, data_dir)
    return tokens


def demo_jobs(session: Session) -> list[Job]:
    """The demo tenant's jobs, oldest first (for the start-up banner)."""
    customer = session.scalar(select(User).where(User.name == "demo-customer"))
    return list(session.scalars(select(Job).where(Job.tenant_id == customer.tenant_id).order_by(Job.created_at)))

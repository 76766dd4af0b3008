"""`distill serve --demo`: a demo tenant with a customer, a reviewer and an admin, fresh tokens for each
(printed at start; older demo tokens are revoked), and the offline quickstart job submitted once."""

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
SPEC = "tinystories-quickstart.yaml"


def quickstart_upload() -> bytes:
    """The quickstart spec and its word lists as a tar.gz, the way a customer would upload them."""
    specs = data_path("specs")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(specs / SPEC, arcname=SPEC)
        archive.add(specs / "words", arcname="words")
    return buffer.getvalue()


def set_up_demo(session: Session, data_dir: Path) -> dict[str, str]:
    """Idempotent: create what is missing, submit the quickstart once; returns user name -> new token."""
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
        jobs.submit_job(session, customer, quickstart_upload(), "quickstart.tar.gz", SPEC, data_dir)
    return tokens

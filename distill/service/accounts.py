"""Tenants, users, roles and API tokens, used by `distill admin` and the admin routes alike.

A token is 32 random bytes shown once; the database keeps only its sha256 (a token is random, so a
plain hash is enough: there is nothing to brute-force), so a leaked database leaks no usable token.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from distill.errors import ConfigError, Problem
from distill.service.db import Assignment, Job, Tenant, Token, User, WebSession, utcnow
from distill.service.problems import Conflict, NotFound

Role = Literal["admin", "reviewer", "customer"]
ROLES = ("admin", "reviewer", "customer")
TOKEN_PREFIX = "dst_"


def new_id(kind: str) -> str:
    return f"{kind}_{secrets.token_hex(8)}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_tenant(session: Session, name: str, *, spending_cap_usd: float | None = None,
                  allowed_key_envs: list[str] = (), dataset_download: bool = False) -> Tenant:
    check_cap(spending_cap_usd)
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise Conflict(Problem(f"a tenant named {name!r} already exists", key="name"))
    tenant = Tenant(id=new_id("ten"), name=name, spending_cap_usd=spending_cap_usd,
                    allowed_key_envs=list(allowed_key_envs), dataset_download=dataset_download)
    session.add(tenant)
    session.commit()
    return tenant


def find_tenant(session: Session, name_or_id: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where((Tenant.name == name_or_id) | (Tenant.id == name_or_id)))
    if tenant is None:
        raise ConfigError(Problem(f"no tenant {name_or_id!r}", key="tenant", hint="create it with `distill admin tenant NAME`"))
    return tenant


def create_user(session: Session, name: str, role: str, *, tenant: str | None = None, assign: list[str] = ()) -> User:
    """A customer belongs to one tenant; a reviewer is assigned tenants whose jobs they review."""
    if role not in ROLES:
        raise ConfigError(Problem(f"role must be one of {', '.join(ROLES)}, not {role!r}", key="role"))
    if (role == "customer") != (tenant is not None):
        raise ConfigError(Problem("a customer needs a tenant, and only customers have one", key="tenant"))
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise Conflict(Problem(f"a user named {name!r} already exists", key="name"))
    user = User(id=new_id("usr"), name=name, role=role, tenant_id=find_tenant(session, tenant).id if tenant else None)
    session.add(user)
    session.flush()
    for name_or_id in assign:
        if role != "reviewer":
            raise ConfigError(Problem("only reviewers are assigned tenants", key="assign"))
        session.add(Assignment(user_id=user.id, tenant_id=find_tenant(session, name_or_id).id))
    session.commit()
    return user


def find_user(session: Session, name_or_id: str) -> User:
    user = session.scalar(select(User).where((User.name == name_or_id) | (User.id == name_or_id)))
    if user is None:
        raise NotFound(Problem(f"no user {name_or_id!r}", key="user"))
    return user


def issue_token(session: Session, user: User, name: str = "") -> tuple[Token, str]:
    """A new token for `user`: returns the row and the token text, which is shown this once."""
    text = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = Token(id=new_id("tok"), user_id=user.id, sha256=token_hash(text), name=name)
    session.add(token)
    session.commit()
    return token, text


def revoke_token(session: Session, token_id: str) -> Token:
    """Revoke a token and end every browser session logged in with it."""
    token = session.get(Token, token_id)
    if token is None:
        raise NotFound(Problem(f"no token {token_id!r}", key="token"))
    now = utcnow()
    token.revoked_at = token.revoked_at or now
    session.execute(update(WebSession).where(WebSession.token_id == token.id, WebSession.ended_at.is_(None))
                    .values(ended_at=now))
    session.commit()
    return token


def live_token(session: Session, text: str) -> Token | None:
    """The token row for a bearer token's text, or None for an unknown, revoked or malformed token."""
    if not text.startswith(TOKEN_PREFIX) or len(text) > 200:
        return None
    token = session.scalar(select(Token).where(Token.sha256 == token_hash(text)))
    return None if token is None or token.revoked_at is not None else token


def authenticate(session: Session, text: str) -> User | None:
    """The user a bearer token belongs to, or None for an unknown, revoked or malformed token."""
    token = live_token(session, text)
    return None if token is None else session.get(User, token.user_id)


def visible_tenants(session: Session, user: User) -> list[str] | None:
    """The tenant ids whose jobs `user` may see; None means all (admins)."""
    if user.role == "admin":
        return None
    if user.role == "customer":
        return [user.tenant_id]
    return list(session.scalars(select(Assignment.tenant_id).where(Assignment.user_id == user.id)))


def can_see(session: Session, user: User, job: Job) -> bool:
    tenants = visible_tenants(session, user)
    return tenants is None or job.tenant_id in tenants


def set_spending_cap(session: Session, tenant_id: str, cap_usd: float | None) -> Tenant:
    """Change a tenant's spending cap (None: no cap); running jobs keep the cap they started with."""
    check_cap(cap_usd)
    tenant = find_tenant(session, tenant_id)
    tenant.spending_cap_usd = cap_usd
    session.commit()
    return tenant


def check_cap(cap_usd: float | None) -> None:
    """A spending cap is a finite number of dollars, zero or more (None: no cap)."""
    if cap_usd is not None and not (math.isfinite(cap_usd) and cap_usd >= 0):
        raise ConfigError(Problem(f"a spending cap must be a finite amount of USD, zero or more, not {cap_usd}",
                                  key="spending_cap_usd", hint="leave it out for no cap"))


def list_accounts(session: Session) -> tuple[list[Tenant], list[User], list[Token], list[Assignment]]:
    """Every tenant, user, token (hashes only) and reviewer assignment, for the admin's overview."""
    return (list(session.scalars(select(Tenant).order_by(Tenant.name))),
            list(session.scalars(select(User).order_by(User.name))),
            list(session.scalars(select(Token).order_by(Token.created_at))),
            list(session.scalars(select(Assignment))))

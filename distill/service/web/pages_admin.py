"""The admin's page: tenants with their spending caps, users and roles, reviewer assignments, tokens
(a new token is shown once, in the reply to the form that made it, never in a URL or a log)."""

from __future__ import annotations

import math
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from distill.errors import ConfigError, DistillError, Problem
from distill.service import accounts
from distill.service.deps import SessionDep
from distill.service.jobs import tenant_spent
from distill.service.web.render import render
from distill.service.web.sessions import Csrf, PageAdmin

router = APIRouter(prefix="/ui/admin", include_in_schema=False)


def _page(request: Request, session, msg: str = "", new_token: dict | None = None, status_code: int = 200):
    tenants, users, tokens, assignments = accounts.list_accounts(session)
    spent = {t.id: tenant_spent(session, request.app.state.data_dir, t.id) for t in tenants}
    names = {t.id: t.name for t in tenants}
    assigned: dict[str, list[str]] = {}
    for a in assignments:
        assigned.setdefault(a.user_id, []).append(names.get(a.tenant_id, a.tenant_id))
    by_user: dict[str, list] = {}
    for t in tokens:
        by_user.setdefault(t.user_id, []).append(t)
    return render(request, "admin.html", {"tenants": tenants, "spent": spent, "users": users, "tokens": by_user,
                                          "assigned": assigned, "tenant_names": names, "msg": msg,
                                          "new_token": new_token}, status_code=status_code)


def _done(message: str) -> RedirectResponse:
    return RedirectResponse(f"/ui/admin?{urlencode({'msg': message})}", status_code=303)


def _refused(request: Request, session, exc: DistillError):
    return _page(request, session, msg=f"refused: {exc.problems[0].message}", status_code=422)


@router.get("")
def admin_page(request: Request, user: PageAdmin, session: SessionDep, msg: str = ""):
    return _page(request, session, msg)


def _cap(text: str) -> float | None:
    """The form's spending cap in USD (empty: none); anything but a finite number >= 0 is refused, by field."""
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(Problem("the spending cap must be a number of US dollars, 0 or more (empty: no cap)",
                                  key="spending_cap_usd"))
    return value


@router.post("/tenants", dependencies=[Csrf])
def create_tenant(request: Request, user: PageAdmin, session: SessionDep, name: Annotated[str, Form()],
                  spending_cap_usd: Annotated[str, Form()] = "", allowed_key_envs: Annotated[str, Form()] = "",
                  dataset_download: Annotated[bool, Form()] = False):
    try:
        tenant = accounts.create_tenant(session, name.strip(), spending_cap_usd=_cap(spending_cap_usd),
                                        allowed_key_envs=allowed_key_envs.split(), dataset_download=dataset_download)
    except DistillError as exc:
        return _refused(request, session, exc)
    return _done(f"tenant {tenant.name} created")


@router.post("/tenants/{tenant_id}/cap", dependencies=[Csrf])
def set_cap(request: Request, tenant_id: str, user: PageAdmin, session: SessionDep,
            spending_cap_usd: Annotated[str, Form()] = ""):
    try:
        tenant = accounts.set_spending_cap(session, tenant_id, _cap(spending_cap_usd))
    except DistillError as exc:
        return _refused(request, session, exc)
    return _done(f"tenant {tenant.name}: spending cap {'none' if tenant.spending_cap_usd is None else f'${tenant.spending_cap_usd:,.2f}'}")


@router.post("/users", dependencies=[Csrf])
def create_user(request: Request, user: PageAdmin, session: SessionDep, name: Annotated[str, Form()],
                role: Annotated[str, Form()], tenant: Annotated[str, Form()] = "", assign: Annotated[str, Form()] = ""):
    try:
        made = accounts.create_user(session, name.strip(), role, tenant=tenant or None, assign=assign.split())
    except DistillError as exc:
        session.rollback()
        return _refused(request, session, exc)
    return _done(f"user {made.name} ({made.role}) created; issue a token for them below")


@router.post("/users/{user_id}/tokens", dependencies=[Csrf])
def issue_token(request: Request, user_id: str, user: PageAdmin, session: SessionDep):
    """The new token is in this reply only (no redirect: it must not land in a URL or the history)."""
    try:
        owner = accounts.find_user(session, user_id)
    except DistillError as exc:
        return _refused(request, session, exc)
    token, text = accounts.issue_token(session, owner, name="web")
    response = _page(request, session, new_token={"user": owner.name, "id": token.id, "text": text})
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/tokens/{token_id}/revoke", dependencies=[Csrf])
def revoke(request: Request, token_id: str, user: PageAdmin, session: SessionDep):
    try:
        accounts.revoke_token(session, token_id)
    except DistillError as exc:
        return _refused(request, session, exc)
    return _done(f"token {token_id} revoked")

"""Tenants, users and tokens (admins), and `GET /v1/me` for anyone with a token."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from distill.service import accounts
from distill.service.db import Token, User
from distill.service.deps import Admin, SessionDep, UserDep
from distill.service.problems import problem_responses
from distill.service.schemas import TenantIn, TenantOut, TokenOut, UserIn, UserOut

router = APIRouter(prefix="/v1", tags=["accounts"])


def _tenant_out(tenant) -> TenantOut:
    return TenantOut(id=tenant.id, name=tenant.name, spending_cap_usd=tenant.spending_cap_usd,
                     allowed_key_envs=tenant.allowed_key_envs, dataset_download=tenant.dataset_download)


def _user_out(user: User) -> UserOut:
    return UserOut(id=user.id, name=user.name, role=user.role, tenant_id=user.tenant_id)


@router.get("/me", response_model=UserOut, operation_id="getMe", responses=problem_responses(401))
def me(user: UserDep) -> UserOut:
    return _user_out(user)


@router.post("/tenants", status_code=201, response_model=TenantOut, operation_id="createTenant",
             responses=problem_responses(401, 403, 409, 422))
def create_tenant(body: TenantIn, session: SessionDep, admin: User = Admin) -> TenantOut:
    return _tenant_out(accounts.create_tenant(session, body.name, spending_cap_usd=body.spending_cap_usd,
                                              allowed_key_envs=body.allowed_key_envs, dataset_download=body.dataset_download))


@router.post("/users", status_code=201, response_model=UserOut, operation_id="createUser",
             responses=problem_responses(401, 403, 409, 422))
def create_user(body: UserIn, session: SessionDep, admin: User = Admin) -> UserOut:
    return _user_out(accounts.create_user(session, body.name, body.role, tenant=body.tenant, assign=body.assign))


@router.post("/users/{user_id}/tokens", status_code=201, response_model=TokenOut, operation_id="createToken",
             responses=problem_responses(401, 403, 404))
def create_token(user_id: str, session: SessionDep, admin: User = Admin) -> TokenOut:
    token, text = accounts.issue_token(session, accounts.find_user(session, user_id))
    return TokenOut(id=token.id, user_id=token.user_id, token=text, revoked=False)


@router.delete("/tokens/{token_id}", response_model=TokenOut, operation_id="revokeToken",
               responses=problem_responses(401, 403, 404))
def revoke_token(token_id: str, session: SessionDep, admin: User = Admin) -> TokenOut:
    if session.get(Token, token_id) is None:
        raise HTTPException(404, f"no token {token_id}")
    token = accounts.revoke_token(session, token_id)
    return TokenOut(id=token.id, user_id=token.user_id, revoked=True)

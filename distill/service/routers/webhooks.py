"""Webhooks: a tenant's endpoints (customers manage their own `customer` endpoints; admins any, and the
`reviewers` ones), a test ping, the delivery log with every attempt, manual redelivery, and the hosts an
admin allows inside the network. The secret is shown once, when the endpoint is made."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from distill.errors import ConfigError, Problem
from distill.service import paging, webhooks
from distill.service.db import Tenant, User, utcnow
from distill.service.deps import Admin, SessionDep, permit
from distill.service.jobs import iso
from distill.service.problems import problem_responses
from distill.service.schemas import Cursor, DateTime
from distill.service.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
Manager = permit("webhooks")
CursorQuery = Annotated[str | None, Query(description=paging.CURSOR_DESCRIPTION)]
LimitQuery = Annotated[int, Query(ge=1, le=500, description=paging.LIMIT_DESCRIPTION)]


class WebhookIn(BaseModel):
    url: str = Field(max_length=2000, description="an http(s) URL that resolves to public addresses")
    audience: Literal["customer", "reviewers"] = Field("customer", description="customer: succeeded and failed; "
                                                       "reviewers: awaiting_review (admins only)")
    tenant_id: str | None = Field(None, description="admins: the tenant; customers: their own (leave out)")


class WebhookOut(BaseModel):
    id: str
    tenant_id: str
    audience: Literal["customer", "reviewers"]
    url: str
    created_at: DateTime | None
    disabled: bool
    secret: str | None = Field(None, description="the whsec_ signing secret, shown once at creation")


class WebhookPage(BaseModel):
    webhooks: list[WebhookOut]
    next_cursor: Cursor | None = None


class AttemptOut(BaseModel):
    time: DateTime | None
    status_code: int | None
    error: str | None
    milliseconds: int


class DeliveryOut(BaseModel):
    id: str = Field(description="the webhook-id header (the same on every retry)")
    type: str
    job_id: str | None
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: DateTime | None
    created_at: DateTime | None
    delivered_at: DateTime | None
    payload: dict[str, Any]
    log: list[AttemptOut]


class DeliveryPage(BaseModel):
    deliveries: list[DeliveryOut]
    next_cursor: Cursor | None = None


class AllowedHosts(BaseModel):
    hosts: list[str] = Field(description="host names webhooks may reach although they resolve inside the network")


@router.get("/allowed-hosts", response_model=AllowedHosts, operation_id="getWebhookAllowedHosts",
            responses=problem_responses(401, 403))
def allowed_hosts(session: SessionDep, user: User = Admin) -> AllowedHosts:
    return AllowedHosts(hosts=sorted(webhooks.allowed_hosts(session)))


@router.put("/allowed-hosts", response_model=AllowedHosts, operation_id="setWebhookAllowedHosts",
            responses=problem_responses(401, 403, 422))
def set_allowed_hosts(body: AllowedHosts, session: SessionDep, user: User = Admin) -> AllowedHosts:
    return AllowedHosts(hosts=webhooks.set_allowed_hosts(session, body.hosts, user.id))


@router.post("", status_code=201, response_model=WebhookOut, operation_id="createWebhook",
             responses=problem_responses(401, 403, 422))
def create(request: Request, body: WebhookIn, session: SessionDep, user: User = Manager) -> WebhookOut:
    """A new endpoint; refused (422 naming `url`) when the URL resolves to an address inside the network."""
    if user.role == "customer":
        if body.audience != "customer" or body.tenant_id not in (None, user.tenant_id):
            raise HTTPException(403, "customers make customer endpoints for their own tenant")
        tenant_id = user.tenant_id
    elif body.tenant_id is None or session.get(Tenant, body.tenant_id) is None:
        raise ConfigError(Problem("name an existing tenant", key="tenant_id"))
    else:
        tenant_id = body.tenant_id
    endpoint, secret = webhooks.create_endpoint(session, request.app.state.webhook_key, tenant_id, body.audience,
                                                body.url, user.id)
    return _endpoint_out(endpoint, secret)


@router.get("", response_model=WebhookPage, operation_id="listWebhooks", responses=problem_responses(401, 403))
def list_endpoints(session: SessionDep, cursor: CursorQuery = None, limit: LimitQuery = 100,
                   user: User = Manager) -> WebhookPage:
    """The endpoints the caller manages, newest first, a page at a time."""
    query = select(WebhookEndpoint)
    if user.role == "customer":
        query = query.where(WebhookEndpoint.tenant_id == user.tenant_id, WebhookEndpoint.audience == "customer")
    page, more = paging.newest_first(session, query, WebhookEndpoint, cursor, limit)
    return WebhookPage(webhooks=[_endpoint_out(e) for e in page], next_cursor=more)


def visible_endpoint(webhook_id: str, session: SessionDep, user: User = Manager) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, webhook_id)
    if endpoint is None or (user.role == "customer" and (endpoint.tenant_id != user.tenant_id or endpoint.audience != "customer")):
        raise HTTPException(404, f"no webhook {webhook_id}")
    return endpoint


EndpointDep = Annotated[WebhookEndpoint, Depends(visible_endpoint)]


@router.get("/{webhook_id}", response_model=WebhookOut, operation_id="getWebhook",
            responses=problem_responses(401, 403, 404))
def show(endpoint: EndpointDep) -> WebhookOut:
    return _endpoint_out(endpoint)


@router.delete("/{webhook_id}", response_model=WebhookOut, operation_id="disableWebhook",
               responses=problem_responses(401, 403, 404))
def disable(endpoint: EndpointDep, session: SessionDep) -> WebhookOut:
    """Stop sending to the endpoint (its delivery log is kept)."""
    endpoint.disabled_at = endpoint.disabled_at or utcnow()
    session.commit()
    return _endpoint_out(endpoint)


@router.post("/{webhook_id}/ping", status_code=202, response_model=DeliveryOut, operation_id="pingWebhook",
             responses=problem_responses(401, 403, 404))
def ping(request: Request, endpoint: EndpointDep, session: SessionDep) -> DeliveryOut:
    """Send a `webhook.ping` event now, to try the endpoint and its signature check."""
    delivery = webhooks.enqueue(session, endpoint, "webhook.ping", {"webhook_id": endpoint.id})
    session.commit()
    request.app.state.webhook_sender.wake()
    return _delivery_out(session, delivery)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryPage, operation_id="listWebhookDeliveries",
            responses=problem_responses(401, 403, 404))
def deliveries(endpoint: EndpointDep, session: SessionDep, cursor: CursorQuery = None,
               limit: LimitQuery = 100) -> DeliveryPage:
    """The endpoint's deliveries, newest first, each with every attempt (status code or error, time taken)."""
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    page, more = paging.newest_first(session, query, WebhookDelivery, cursor, limit)
    return DeliveryPage(deliveries=[_delivery_out(session, d) for d in page], next_cursor=more)


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", status_code=202, response_model=DeliveryOut,
             operation_id="redeliverWebhook", responses=problem_responses(401, 403, 404))
def redeliver(request: Request, endpoint: EndpointDep, delivery_id: str, session: SessionDep) -> DeliveryOut:
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.endpoint_id != endpoint.id:
        raise HTTPException(404, f"no delivery {delivery_id} of webhook {endpoint.id}")
    webhooks.redeliver(session, delivery)
    request.app.state.webhook_sender.wake()
    return _delivery_out(session, delivery)


def _endpoint_out(endpoint: WebhookEndpoint, secret: str | None = None) -> WebhookOut:
    return WebhookOut(id=endpoint.id, tenant_id=endpoint.tenant_id, audience=endpoint.audience, url=endpoint.url,
                      created_at=iso(endpoint.created_at), disabled=endpoint.disabled_at is not None, secret=secret)


def _delivery_out(session, delivery: WebhookDelivery) -> DeliveryOut:
    attempts = session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery.id).order_by(WebhookAttempt.id))
    return DeliveryOut(id=delivery.id, type=delivery.type, job_id=delivery.job_id, state=delivery.state,
                       attempts=delivery.attempts, next_attempt_at=iso(delivery.next_attempt_at),
                       created_at=iso(delivery.created_at), delivered_at=iso(delivery.delivered_at),
                       payload=json.loads(delivery.body),
                       log=[AttemptOut(time=iso(a.time), status_code=a.status_code, error=a.error,
                                       milliseconds=a.milliseconds) for a in attempts])

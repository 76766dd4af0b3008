"""The FastAPI application: routers, error bodies, and the lifespan that migrates the database and runs
the executor. `distill serve` runs it with uvicorn."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline

from distill import __version__
from distill.coldstart.promote import PromotionRefused
from distill.errors import DistillError
from distill.service.deployments import CaptureUploadError
from distill.service.db import make_engine, make_sessions, migrate
from distill.service.events import EventNotifier
from distill.service.metrics import MetricsMiddleware, ServiceMetrics, metrics_endpoint
from distill.service.webhooks import WebhookSender, server_key
from distill.service.jobs import NotRetryable, SpendingCapError
from distill.service.problems import Conflict, NotFound, problems_body, use_problems_in_document
from distill.service.quotas import Limits, QuotaExceeded
from distill.service.uploads import UploadError, UploadTooLarge, problem_json

log = logging.getLogger("distill.service")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    executor: str = "local"
    max_jobs: int = 1
    ray_address: str | None = None
    limits: Limits = Limits()  # per-tenant quotas and how often a dead worker is retried


def create_app(settings: Settings) -> FastAPI:
    from distill.service import web
    from distill.service.executor import make_executor
    from distill.service.gateway import DeploymentGateway
    from distill.service.routers import accounts, deployments, downloads, health, jobs, review, webhooks

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        app.state.sessions = make_sessions(engine)
        app.state.data_dir = settings.data_dir.resolve()
        app.state.limits = settings.limits
        app.state.executor = make_executor(settings.executor, app.state.sessions, settings.database_url,
                                           max_jobs=settings.max_jobs, ray_address=settings.ray_address,
                                           limits=settings.limits)
        app.state.executor.start()
        app.state.notifier = EventNotifier(app.state.sessions)
        await app.state.notifier.start()
        app.state.metrics.bind(app.state)
        app.state.webhook_key = server_key(app.state.data_dir)
        app.state.webhook_sender = WebhookSender(app.state.sessions, app.state.webhook_key)
        app.state.webhook_sender.start()
        yield
        app.state.webhook_sender.stop()
        await app.state.notifier.stop()
        app.state.gateway.close()
        app.state.executor.stop()
        engine.dispose()

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from the package, not from a CDN.
    app = FastAPIOffline(title="distill", summary="Distillation as a service: submit a spec, review its dataset, download the weights.",
                         version=__version__, lifespan=lifespan, generate_unique_id_function=operation_id)
    fastapi_document = app.openapi
    app.openapi = lambda: app.openapi_schema or use_problems_in_document(fastapi_document())
    for module in (health, accounts, jobs, review, downloads, webhooks):
        app.include_router(module.router)
    app.include_router(deployments.router)
    app.state.gateway = DeploymentGateway(app.state)
    app.mount("/v1/deployments", app.state.gateway)  # after the routers: /v1/deployments/<id>/<openai path>
    app.state.metrics = ServiceMetrics()
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_api_route("/metrics", metrics_endpoint, include_in_schema=False)  # no token, no tenant data: see metrics.py
    app.add_exception_handler(DistillError, _problems)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    web.install(app)  # the browser app under /ui/
    return app


def operation_id(route: APIRoute) -> str:
    """A route without an explicit `operation_id` is named after its function, in camelCase."""
    first, *rest = route.name.split("_")
    return first + "".join(word.capitalize() for word in rest)


# The status of each error kind; any other DistillError is 422 (a located problem in the request).
STATUS_OF_ERROR = ((SpendingCapError, 402), (UploadTooLarge, 413), (PromotionRefused, 409), (NotRetryable, 409),
                   (Conflict, 409), (NotFound, 404), (QuotaExceeded, 429))


def _problems(request: Request, exc: DistillError) -> JSONResponse:
    root = request.app.state.data_dir
    status = next((status for kind, status in STATUS_OF_ERROR if isinstance(exc, kind)), 422)
    kind = "upload refused" if isinstance(exc, UploadError | CaptureUploadError) else exc.title
    problems = [problem_json(p, root) for p in exc.problems]  # no server path, no class name
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, QuotaExceeded) else None
    return JSONResponse(problems_body(f"{kind}: {problems[0]['message']}", problems), status_code=status,
                        headers=headers)


def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [{"file": None, "line": None, "column": None, "key": ".".join(str(p) for p in e["loc"]),
                 "message": e["msg"], "hint": None} for e in exc.errors()]
    return JSONResponse(problems_body("invalid request", problems), status_code=422)

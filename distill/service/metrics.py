"""`/metrics` in Prometheus' text format (prometheus-client), for the operator's monitoring.

    distill_http_requests_total{method,route,status}         requests by route template (never a raw path)
    distill_http_request_duration_seconds{method,route}      time to the response's first byte (a stream's
                                                              whole life would say nothing about latency)
    distill_jobs{status}                                      jobs in each state (read at scrape time)
    distill_queue_depth                                       jobs queued and not yet claimed
    distill_stage_duration_seconds{stage}                     stages this process saw start and end
    distill_event_streams_open                                event streams open on this process
    distill_webhook_deliveries{state}                         webhook deliveries pending / delivered / failed

Unauthenticated, like /healthz, and it holds no tenant data: no ids, names, paths or tenants appear in
any label, only route templates, states and stage names (so the scraper needs no token). Keep it off the
public internet at the proxy if the job counts themselves are sensitive. Counters are per process.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

from distill.service.db import Job
from distill.service.jobs import STATUSES
from distill.service.schemas import EventOut
from distill.service.webhooks import WebhookDelivery

STAGE_OF_STATUS = {"generating": "generate", "reviewing": "review", "training": "train", "evaluating": "eval",
                   "releasing": "release"}
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)


class ServiceMetrics:
    """The registry of one app, its request middleware's counters, and the collectors read at scrape time."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("distill_http_requests", "HTTP requests by route template and status",
                                ("method", "route", "status"), registry=self.registry)
        self.latency = Histogram("distill_http_request_duration_seconds", "time to the response's first byte",
                                 ("method", "route"), buckets=BUCKETS, registry=self.registry)
        self.stages = Histogram("distill_stage_duration_seconds", "stage durations (status change to status change)",
                                ("stage",), buckets=STAGE_BUCKETS, registry=self.registry)
        self._stage_started: dict[str, tuple[str, datetime]] = {}  # job id -> (stage, when it started)
        self.app_state: Any = None

    def bind(self, app_state: Any) -> None:
        """Read the database and the notifier of this app at scrape time; observe its status events."""
        self.app_state = app_state
        self.registry.register(_StateCollector(app_state))
        app_state.notifier.watchers.append(self.observe_event)

    def observe_event(self, job_id: str, event: EventOut) -> None:
        if event.type != "status" or not event.data or "status" not in event.data:
            return
        when = datetime.fromisoformat(event.time) if event.time else None
        previous = self._stage_started.pop(job_id, None)
        if previous is not None and when is not None:
            self.stages.labels(previous[0]).observe((when - previous[1]).total_seconds())
        stage = STAGE_OF_STATUS.get(event.data["status"])
        if stage is not None and when is not None:
            self._stage_started[job_id] = (stage, when)

    def response(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class _StateCollector:
    """Gauges read when scraped: jobs by state, the queue, open streams, webhook deliveries by state."""

    def __init__(self, app_state: Any):
        self.app_state = app_state

    def collect(self):
        jobs = GaugeMetricFamily("distill_jobs", "jobs in each state", labels=["status"])
        queue = GaugeMetricFamily("distill_queue_depth", "jobs queued and not yet started")
        streams = GaugeMetricFamily("distill_event_streams_open", "event streams open on this process")
        deliveries = GaugeMetricFamily("distill_webhook_deliveries", "webhook deliveries by state", labels=["state"])
        with self.app_state.sessions() as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            sent = dict(session.execute(select(WebhookDelivery.state, func.count()).group_by(WebhookDelivery.state)).all())
        for status in STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        queue.add_metric([], counts.get("queued", 0))
        streams.add_metric([], self.app_state.notifier.open_streams)
        for state in ("pending", "delivered", "failed"):
            deliveries.add_metric([state], sent.get(state, 0))
        yield from (jobs, queue, streams, deliveries)


class MetricsMiddleware:
    """Counts every HTTP request by its route template and status, and times it to the first byte."""

    def __init__(self, app, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def timed_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                self.metrics.latency.labels(scope["method"], route_template(scope)).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.requests.labels(scope["method"], route_template(scope), str(status[0])).inc()


def route_template(scope) -> str:
    """The matched route's template (`/v1/jobs/{job_id}`), a mount's prefix (`/v1/deployments/*`: the
    gateway's OpenAI routes), or "unmatched" (a 404: its path is not a label, so scanners add no series)."""
    route = scope.get("route")
    if route is None:
        return "unmatched"
    return f"{route.path}/*" if isinstance(route, Mount) else route.path


def metrics_endpoint(request: Request) -> Response:
    return request.app.state.metrics.response()

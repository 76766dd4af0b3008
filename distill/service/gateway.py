"""Serving deployments: an ASGI app mounted at /v1/deployments that hands `/<id>/<rest>` to the
OpenAI-compatible app of `distill.serving.api` for that deployment (as `/v1/<rest>`), so
`OpenAI(base_url=SERVER/v1/deployments/<id>, api_key=<service token>)` works.

The caller's Bearer token is the service's: unknown or revoked tokens get a 401, a token of another tenant
gets a 404 (the deployment is not theirs to know of). Each deployment's bundles are verified and loaded
once, on first use, and reloaded after a promotion or rollback (`forget`).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fastapi.concurrency import run_in_threadpool

from distill.errors import DistillError
from distill.serving.schemas import error_body
from distill.service.accounts import authenticate
from distill.service.db import Deployment
from distill.service.deployments import can_use, capture_path


class DeploymentGateway:
    def __init__(self, app_state):
        self.state = app_state  # the service app's state: sessions, data_dir
        self.apps: dict[str, object] = {}
        self.engines: dict[str, list] = {}
        self.lock = asyncio.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        rest = scope["path"][len(scope.get("root_path", "")):] if scope["path"].startswith(scope.get("root_path", "")) else scope["path"]
        rest = rest.removeprefix("/v1/deployments")
        deployment_id, _, tail = rest.lstrip("/").partition("/")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status, row = await run_in_threadpool(self._check, deployment_id, headers.get("authorization", ""))
        if status == 401:
            return await _error(send, 401, "Incorrect or missing API key: send `Authorization: Bearer <service token>`",
                                "invalid_api_key")
        if status == 404:
            return await _error(send, 404, f"no deployment {deployment_id}", "not_found")
        try:
            app = await self._app(row)
        except DistillError as exc:
            return await _error(send, 409, f"the deployment cannot serve: {exc.problems[0].message}", "bundle_refused")
        child = dict(scope, path="/v1/" + tail, raw_path=("/v1/" + tail).encode(), root_path="")
        await app(child, receive, send)

    def _check(self, deployment_id: str, authorization: str):
        scheme, _, token = authorization.partition(" ")
        with self.state.sessions() as session:
            user = authenticate(session, token.strip()) if scheme.lower() == "bearer" else None
            if user is None:
                return 401, None
            row = session.get(Deployment, deployment_id)
            if row is None or not can_use(user, row):
                return 404, None
            session.expunge(row)
            return 200, row

    async def _app(self, row: Deployment):
        async with self.lock:
            if row.id not in self.apps:
                self.apps[row.id] = await run_in_threadpool(self._load, row)
            return self.apps[row.id]

    def _load(self, row: Deployment):
        from distill.serving.api import create_app
        from distill.serving.capture import CaptureLog
        from distill.serving.server import open_deployment

        models, choose, _name = open_deployment(Path(row.file))  # each bundle verified against its manifest
        capture = None
        if row.capture_enabled:
            capture = CaptureLog(capture_path(self.state.data_dir, row.job_id), rate=row.capture_rate,
                                 retention_days=row.retention_days)
        self.engines[row.id] = models
        return create_app(models, capture=capture, choose=choose)

    def forget(self, deployment_id: str) -> None:
        """Drop a deployment's loaded app (after a switch); the next request loads the new routes."""
        self.apps.pop(deployment_id, None)
        for model in self.engines.pop(deployment_id, []):
            model.engine.close()

    def close(self) -> None:
        for deployment_id in list(self.apps):
            self.forget(deployment_id)


async def _error(send, status: int, message: str, code: str) -> None:
    body = json.dumps(error_body(message, code=code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

"""The HTTP client behind `distill remote`: a customer needs only the server's URL and a token
(`DISTILL_SERVER`, `DISTILL_TOKEN`)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from distill.errors import ConfigError, DistillError, Problem

SKIP = {".git", "__pycache__", ".venv", "runs", "node_modules"}


class RemoteError(DistillError):
    """The server refused a request; its problems are the server's located problems."""


def client_from_env(server: str | None = None, token: str | None = None) -> httpx.Client:
    server = server or os.environ.get("DISTILL_SERVER")
    token = token or os.environ.get("DISTILL_TOKEN")
    if not server:
        raise ConfigError(Problem("which server? set DISTILL_SERVER (e.g. http://127.0.0.1:8000)", key="DISTILL_SERVER"))
    try:
        url = httpx.URL(server)
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(Problem(f"{server!r} is not a server URL", key="--server/DISTILL_SERVER",
                                  hint="e.g. http://127.0.0.1:8000"))
    if not token:
        raise ConfigError(Problem("no token: set DISTILL_TOKEN to the token your operator gave you", key="DISTILL_TOKEN"))
    return httpx.Client(base_url=server.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=120)


@contextmanager
def connect(server: str | None = None, token: str | None = None) -> Iterator[httpx.Client]:
    """A client for the server (`client_from_env`); a server that cannot be reached (refused, unknown host,
    timed out, cut off mid-answer) is a ConfigError naming its URL, not an httpx traceback."""
    client = client_from_env(server, token)
    try:
        with client:
            yield client
    except httpx.TransportError as exc:
        reason = str(exc) or type(exc).__name__
        raise ConfigError(Problem(f"cannot reach the distill server at {client.base_url}: {reason}",
                                  key="--server/DISTILL_SERVER",
                                  hint="check the URL and that `distill serve` runs there, then try again")) from None


def check(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:500]}
    problems = [Problem(p["message"], file=p.get("file"), line=p.get("line"), column=p.get("column"), key=p.get("key"),
                        hint=p.get("hint")) for p in body.get("problems", [])]
    detail = body.get("detail")
    raise RemoteError(*(problems or [Problem(f"HTTP {response.status_code}: {detail}")]))


def pack_spec(spec: Path) -> bytes:
    """The spec's folder (templates, word lists, row files beside it) as a tar.gz."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(spec.parent.rglob("*")):
            relative = path.relative_to(spec.parent)
            if path.is_file() and not path.is_symlink() and not any(part in SKIP or part.startswith(".") for part in relative.parts):
                archive.add(path, arcname=str(relative), recursive=False)
    return buffer.getvalue()


def submit(client: httpx.Client, spec: Path) -> dict[str, Any]:
    files = {"file": (f"{spec.stem}.tar.gz", pack_spec(spec), "application/gzip")}
    return check(client.post("/v1/jobs", files=files, data={"spec_path": spec.name})).json()


def status(client: httpx.Client, job_id: str | None) -> Any:
    return check(client.get(f"/v1/jobs/{job_id}" if job_id else "/v1/jobs")).json()


def retry(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return check(client.post(f"/v1/jobs/{job_id}/retry")).json()


def events(client: httpx.Client, job_id: str, follow: bool, after: int = 0) -> Iterator[dict[str, Any]]:
    """The job's events; with `follow`, the live SSE stream until the job finishes."""
    if not follow:
        while True:
            page = check(client.get(f"/v1/jobs/{job_id}/events", params={"after": after, "limit": 500})).json()
            yield from page["events"]
            if not page["events"]:
                return
            after = page["next_after"]
    from httpx_sse import connect_sse

    with connect_sse(client, "GET", f"/v1/jobs/{job_id}/events/stream", params={"after": after}, timeout=None) as source:
        check(source.response)
        for message in source.iter_sse():
            if message.data:
                yield json.loads(message.data)


def download(client: httpx.Client, job_id: str, target: Path) -> tuple[Path, str]:
    """Download the bundle, resuming a partial file with a Range request; checks the sha256 header."""
    partial = target.with_name(target.name + ".part")
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with client.stream("GET", f"/v1/jobs/{job_id}/bundle", headers=headers) as response:
        if response.status_code == 416:  # the partial file is already complete
            response.close()
        else:
            if not response.is_success:
                response.read()
                check(response)
            mode = "ab" if response.status_code == 206 else "wb"
            with open(partial, mode) as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
        expected = response.headers.get("x-content-sha256", "")
    digest = hashlib.sha256(partial.read_bytes()).hexdigest()
    if expected and digest != expected:
        partial.unlink()
        raise RemoteError(Problem(f"the download's sha256 {digest} differs from the server's {expected}; download again"))
    partial.replace(target)
    return target, digest

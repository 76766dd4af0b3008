"""Helpers for the service tests: the real `distill serve` on a loopback port, users made with the real
`distill admin`, the quickstart spec at test size (with a policy that needs a human sign-off), and a
fresh PostgreSQL database per test when DISTILL_TEST_POSTGRES_URL names a server."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path
from typing import Callable

import httpx

from conftest import REPO, run_distill

POSTGRES_ENV = "DISTILL_TEST_POSTGRES_URL"
QUICKSTART = (REPO / "specs" / "tinystories-quickstart.yaml").read_text()


def small_spec(folder: Path, *, records: int = 40, human: bool = True) -> Path:
    """The quickstart at test size beside its word lists; `human`: a policy file that needs a reviewer."""
    (folder / "words").mkdir(parents=True)
    for name in ("nouns", "verbs", "adjectives"):
        (folder / "words" / f"{name}.txt").write_bytes((REPO / "specs" / "words" / f"{name}.txt").read_bytes())
    text = (QUICKSTART.replace("records: 3000", f"records: {records}").replace("max_minutes: 4", "max_steps: 6")
            .replace("eval_every: 100", "eval_every: 3").replace("tokenizer_vocab: 2048", "tokenizer_vocab: 512")
            .replace("prompts: 12", "prompts: 2").replace("samples_per_prompt: 2", "samples_per_prompt: 1")
            .replace("max_new_tokens: 200", "max_new_tokens: 16"))
    if human:
        text = text.replace("policy: children", "policy: policy.yaml")
        policy = (REPO / "safety" / "children.yaml").read_text()
        policy = (policy.replace("name: children", "name: children-human", 1)
                  .replace("auto_signoff: true", "auto_signoff: false").replace("sample_size: 100", "sample_size: 5")
                  .replace("max_defect_rate: 0.03", "max_defect_rate: 0.6")
                  .replace("when_absent: larger_sample", "when_absent: note"))  # the offline teacher cannot judge
        (folder / "policy.yaml").write_text(policy)
    spec = folder / "quick.yaml"
    spec.write_text(text)
    return spec


def tar_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(folder.rglob("*")):
            archive.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_postgres(admin_url: str) -> str:
    """A new empty database on the test server; returns its SQLAlchemy URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"distill_{uuid.uuid4().hex[:12]}"
    url = make_url(admin_url)
    with psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def wait_for(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class LiveServer:
    """`distill serve` in a child process; `kill()` is kill -9, `start()` again restarts it."""

    def __init__(self, data_dir: Path, database_url: str | None = None, *, max_jobs: int = 1,
                 serve_args: tuple[str, ...] = ()):
        self.data_dir = data_dir
        self.database_url = database_url or f"sqlite:///{data_dir.resolve() / 'distill.db'}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.max_jobs = max_jobs
        self.serve_args = serve_args  # more `distill serve` flags (--executor ray ...)
        self.process: subprocess.Popen | None = None

    def admin(self, *args: str) -> str:
        done = run_distill("admin", "--data-dir", self.data_dir, "--database-url", self.database_url, *args, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def start(self) -> "LiveServer":
        log = open(self.data_dir / "serve.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "distill", "serve", "--port", str(self.port), "--data-dir", str(self.data_dir),
             "--database-url", self.database_url, "--max-jobs", str(self.max_jobs), *self.serve_args],
            cwd=REPO, stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(REPO)})
        wait_for(self._healthy, 180, "the server's /healthz")
        return self

    def _healthy(self) -> bool:
        assert self.process.poll() is None, (self.data_dir / "serve.log").read_text()[-3000:]
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def job_status(client: httpx.Client, job_id: str) -> dict:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_status(client: httpx.Client, job_id: str, wanted: str, timeout: float = 600) -> dict:
    def reached():
        job = job_status(client, job_id)
        assert job["status"] != "failed", job["error"]
        return job if job["status"] == wanted else None

    return wait_for(reached, timeout, f"job {job_id} to be {wanted}", every=0.5)

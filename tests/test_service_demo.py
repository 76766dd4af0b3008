"""`distill serve --demo` (the README's first command): demo users with printed tokens, the offline
quickstart already submitted; starting it again creates nothing twice and revokes the old tokens."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import REPO
from service_live import free_port, wait_for

pytestmark = pytest.mark.slow


def _start(data_dir: Path, port: int) -> tuple[subprocess.Popen, Path]:
    log = data_dir.parent / f"serve-{port}.log"
    process = subprocess.Popen([sys.executable, "-m", "distill", "serve", "--demo", "--port", str(port), "--data-dir", str(data_dir)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(log, "wb"), env={**os.environ, "PYTHONPATH": str(REPO)})
    return process, log


def _tokens(log: Path) -> dict[str, str]:
    return dict(re.findall(r"^\s+(demo-\w+)\s+(dst_\S+)$", log.read_text(), re.M))


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_demo_starts_with_users_tokens_and_the_quickstart_job(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    old_tokens = None
    for _ in range(2):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process, log = _start(data_dir, port)
        try:
            wait_for(lambda: _up(url), 120, "the demo server")
            banner = log.read_text()
            assert f"http://127.0.0.1:{port}/ui/" in banner and "tinystories-pilot" in banner
            tokens = _tokens(log)
            assert set(tokens) == {"demo-admin", "demo-reviewer", "demo-customer"}
            customer = {"Authorization": f"Bearer {tokens['demo-customer']}"}
            jobs = httpx.get(f"{url}/v1/jobs", headers=customer).json()["jobs"]
            assert sorted(j["spec_name"] for j in jobs) == ["tinystories-pilot", "tinystories-quickstart"]
            assert all(j["id"] in banner for j in jobs)
            reviewer = {"Authorization": f"Bearer {tokens['demo-reviewer']}"}
            seen = httpx.get(f"{url}/v1/jobs", headers=reviewer).json()["jobs"]
            assert sorted(j["id"] for j in seen) == sorted(j["id"] for j in jobs)
            home = httpx.get(f"{url}/", follow_redirects=False)
            assert home.status_code == 307 and home.headers["location"] == "/ui/"
            if old_tokens is not None:
                stale = {"Authorization": f"Bearer {old_tokens['demo-customer']}"}
                assert httpx.get(f"{url}/v1/me", headers=stale).status_code == 401
            old_tokens = tokens
        finally:
            process.terminate()
            process.wait(timeout=30)

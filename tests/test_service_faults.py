"""Faults a job survives with the server alive: its worker killed with kill -9 (as the OOM killer would)
resumes from the stage's files, until the bounded attempts run out; a job whose training fails after the
human sign-off is retried from the failed stage (`distill remote retry`) and succeeds without a new review."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from conftest import run_distill
from distill.review.audit import read_log
from service_live import job_status, small_spec, wait_for, wait_status
from test_service_restart import _server, _submit

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a loaded machine trains slowly




def _worker_pid(job_id: str) -> int | None:
    """The pid of the job's worker process (its command line names the job)."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"distill.service.worker" in argv and job_id.encode() in argv:
            return int(entry.name)
    return None


def _kill_worker(job_id: str) -> int:
    pid = wait_for(lambda: _worker_pid(job_id), 120, "the job's worker")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _worker_pid(job_id) != pid, 60, "the killed worker to go")
    return pid


def _messages(client, job_id: str) -> list[str]:
    return [e["message"] for e in client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["events"]]


def test_a_killed_worker_resumes_its_stage_and_the_job_finishes_until_attempts_run_out(tmp_path: Path) -> None:
    server, tokens = _server(tmp_path / "s", "--worker-attempts", "2")
    spec = small_spec(tmp_path / "spec", records=300, human=False)
    try:
        job_id = _submit(server, tokens["ann"], spec)
        folder = server.data_dir / "jobs" / job_id
        log = wait_for(lambda: next(folder.glob("runs/*/main/generate/records.jsonl"), None), 300, "generation", every=0.02)
        _kill_worker(job_id)  # mid-generation, the server alive
        with server.client(tokens["ann"]) as ann:
            job = wait_status(ann, job_id, "succeeded", timeout=1200)
            messages = _messages(ann, job_id)
        assert any("the worker stopped unexpectedly" in m and "attempt 2 of 2" in m for m in messages), messages
        assert "job resumed from its run directory" in messages
        assert job["progress"]["generate"]["counts"]["ok"] == 300
        assert len(log.read_text().splitlines()) == 300  # resumed, not generated twice
        assert run_distill("verify", next((log.parents[1] / "release").glob("*.tar.gz"))).returncode == 0
        _a_finished_job_is_the_next_ones_base_model(server, tokens["ann"], spec, job_id)

        doomed = _submit(server, tokens["ann"], spec)
        _kill_worker(doomed)
        _kill_worker(doomed)  # the second death is the last attempt
        with server.client(tokens["ann"]) as ann:
            failed = wait_for(lambda: (lambda j: j if j["status"] == "failed" else None)(job_status(ann, doomed)), 120, "failed")
        assert failed["error"]["code"] == "worker_died" and "after 2 attempts" in failed["error"]["message"]
    finally:
        server.stop()


def _a_finished_job_is_the_next_ones_base_model(server, token: str, spec: Path, job_id: str) -> None:
    """`base_model: job:<id>` on a succeeded job of the tenant: its model is linked into the new upload."""
    spec.write_text(spec.read_text().replace("student:\n", f"student:\n  base_model: 'job:{job_id}'\n"))
    try:
        again = _submit(server, token, spec)
    finally:
        spec.write_text(spec.read_text().replace(f"  base_model: 'job:{job_id}'\n", ""))
    upload = server.data_dir / "jobs" / again / "spec"
    trained = next((server.data_dir / "jobs" / job_id).glob("runs/*/main/train/model"))
    brought = upload / "base-models" / job_id
    assert (brought / "config.json").read_bytes() == (trained / "config.json").read_bytes()
    assert f"base_model: base-models/{job_id}" in (upload / spec.name).read_text()
    with server.client(token) as client:
        assert client.post(f"/v1/jobs/{again}/cancel").status_code in (200, 202)


def _log_in(client: httpx.Client, token: str) -> None:
    client.get("/ui/login")
    response = client.post("/ui/login", data={"token": token, "csrf": client.cookies["distill_login_csrf"], "next": "/ui/"})
    assert response.status_code == 303, response.text


def test_training_that_fails_after_sign_off_is_retried_without_a_new_review(tmp_path: Path) -> None:
    server, tokens = _server(tmp_path / "s")
    spec = small_spec(tmp_path / "spec", records=40)
    policy = spec.parent / "policy.yaml"  # a 5% limit: 0 defects in a sample of ~40 bounds the rate at ~7%
    policy.write_text(policy.read_text().replace("max_defect_rate: 0.6", "max_defect_rate: 0.05"))
    try:
        job_id = _submit(server, tokens["ann"], spec)
        with server.client(tokens["rita"]) as rita, server.client(tokens["ann"]) as ann, \
                httpx.Client(base_url=server.url, timeout=60) as browser:
            wait_status(rita, job_id, "awaiting_review")
            assert ann.post(f"/v1/jobs/{job_id}/retry").status_code == 409  # only a failed job is retried
            run_dir = next((server.data_dir / "jobs" / job_id).glob("runs/*/main"))
            (run_dir / "train").write_text("in the way")  # training cannot make its folder: it fails
            rita.post(f"/v1/jobs/{job_id}/review/bulk", json={"query": {"status": "pending"}, "decision": "reject", "reason": "unclear"})
            _log_in(browser, tokens["rita"])
            assert 'A sample needs at least <strong>59</strong>' in browser.get(f"/ui/jobs/{job_id}/signoff").text
            kept = rita.get(f"/v1/jobs/{job_id}/records", params={"status": "kept", "limit": 500}).json()
            drawn = rita.post(f"/v1/jobs/{job_id}/review/sample", json={"seed": 1, "size": 500}).json()
            assert 0 < len(drawn["ids"]) < 59  # every kept record: the exact rate, not a bound
            decision = rita.post(f"/v1/jobs/{job_id}/review/signoff", json={"defective": []}).json()
            assert decision["accepted"] and decision["upper_bound"] == 0.0, (decision, kept)
            failed = wait_for(lambda: (lambda j: j if j["status"] == "failed" else None)(job_status(ann, job_id)), 600,
                              "training to fail")
            assert failed["progress"]["review"]["state"] == "done"
            signoff = (run_dir / "review" / "signoff.json").read_text()
            browser.cookies.clear()
            _log_in(browser, tokens["ann"])
            assert f'action="/ui/jobs/{job_id}/retry"' in browser.get(f"/ui/jobs/{job_id}").text

            (run_dir / "train").unlink()  # the cause fixed
            env = {**os.environ, "DISTILL_SERVER": server.url, "DISTILL_TOKEN": tokens["ann"]}
            done = run_distill("remote", "retry", job_id, env=env)
            assert done.returncode == 0, done.stderr
            wait_status(ann, job_id, "succeeded", timeout=1200)
            events = ann.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["events"]
            assert f'action="/ui/jobs/{job_id}/retry"' not in browser.get(f"/ui/jobs/{job_id}").text
        statuses = [e["data"]["status"] for e in events if e["type"] == "status"]
        after_retry = statuses[statuses.index("failed") + 1:]
        assert after_retry[0] == "queued" and "awaiting_review" not in after_retry and "reviewing" not in after_retry
        assert (run_dir / "review" / "signoff.json").read_text() == signoff
        assert [e["action"] for e in read_log(run_dir / "review")].count("signoff") == 1
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["stages"]["release"]["state"] == "done"
    finally:
        server.stop()

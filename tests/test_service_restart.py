"""kill -9 of the server during generation, during a review session and during training, then restart:
the job finishes by itself, its bundle's weights equal those of an uninterrupted server's run of the
same spec with the same review, no event or review decision is lost, and the audit log verifies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_distill
from distill.review.audit import verify_log
from service_live import LiveServer, small_spec, tar_folder, wait_for, wait_status

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # a loaded machine trains slowly


def _server(root: Path, *serve_args: str) -> tuple[LiveServer, dict[str, str]]:
    (root / "data").mkdir(parents=True)
    server = LiveServer(root / "data", serve_args=serve_args)
    server.admin("tenant", "acme")
    tokens = {"ann": server.admin("user", "ann", "--role", "customer", "--tenant", "acme"),
              "rita": server.admin("user", "rita", "--role", "reviewer", "--assign", "acme")}
    return server.start(), tokens


def _submit(server: LiveServer, token: str, spec: Path) -> str:
    with server.client(token) as client:
        response = client.post("/v1/jobs", files={"file": ("q.tar.gz", tar_folder(spec.parent))}, data={"spec_path": spec.name})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _review_session(server: LiveServer, token: str, job_id: str) -> None:
    """The same decisions on both servers: reject record 3, edit record 5."""
    with server.client(token) as rita:
        wait_status(rita, job_id, "awaiting_review")
        assert rita.post(f"/v1/jobs/{job_id}/review/decisions", json={"ids": [3], "decision": "reject", "reason": "dull"}).status_code == 200
        text = rita.get(f"/v1/jobs/{job_id}/records/5").json()["text"]
        assert rita.post(f"/v1/jobs/{job_id}/records/5/edit", json={"text": text + " The end.", "reason": "ending"}).status_code == 200


def _sign_off(server: LiveServer, token: str, job_id: str) -> None:
    with server.client(token) as rita:
        rita.post(f"/v1/jobs/{job_id}/review/bulk", json={"query": {"status": "pending"}, "decision": "reject", "reason": "unclear"})
        assert rita.post(f"/v1/jobs/{job_id}/review/sample", json={"seed": 3}).status_code == 200
        assert rita.post(f"/v1/jobs/{job_id}/review/signoff", json={"defective": []}).json()["accepted"]


def _weights(run_dir: Path) -> str:
    bundle = next(p for p in (run_dir / "release").iterdir() if p.is_dir() and not p.name.startswith("."))
    return json.loads((bundle / "manifest.json").read_text())["files"]["model.safetensors"]


def test_kill_9_during_generation_review_and_training_loses_nothing(tmp_path: Path) -> None:
    spec = small_spec(tmp_path / "spec", records=300)
    reference, reference_tokens = _server(tmp_path / "reference")
    killed, tokens = _server(tmp_path / "killed")
    try:
        reference_job = _submit(reference, reference_tokens["ann"], spec)
        job_id = _submit(killed, tokens["ann"], spec)
        folder = killed.data_dir / "jobs" / job_id
        log = wait_for(lambda: next(folder.glob("runs/*/main/generate/records.jsonl"), None), 300, "generation to start", every=0.02)
        killed.kill()  # 1: during generation
        run_dir = log.parents[1]
        assert json.loads((run_dir / "manifest.json").read_text())["stages"]["generate"]["state"] == "running"

        killed.start()
        _review_session(killed, tokens["rita"], job_id)
        killed.kill()  # 2: during a review session, right after its decisions
        killed.start()
        with killed.client(tokens["rita"]) as rita:
            assert rita.get(f"/v1/jobs/{job_id}/records/3").json()["status"] == "rejected"
            assert rita.get(f"/v1/jobs/{job_id}/records/5").json()["text"].endswith("The end.")
        _sign_off(killed, tokens["rita"], job_id)

        _review_session(reference, reference_tokens["rita"], reference_job)
        _sign_off(reference, reference_tokens["rita"], reference_job)

        wait_for(lambda: (run_dir / "train" / "checkpoints").is_dir(), 1800, "training to write a checkpoint", every=0.05)
        killed.kill()  # 3: during training
        assert json.loads((run_dir / "manifest.json").read_text())["stages"].get("release", {}).get("state") != "done"
        killed.start()

        with killed.client(tokens["ann"]) as ann, reference.client(reference_tokens["ann"]) as reference_ann:
            wait_status(ann, job_id, "succeeded", timeout=900)
            wait_status(reference_ann, reference_job, "succeeded", timeout=900)
            events = ann.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["events"]
        statuses = [e["data"]["status"] for e in events if e["type"] == "status"]
        assert statuses[:3] == ["validating", "queued", "generating"] and statuses[-1] == "succeeded"
        assert {"awaiting_review", "training", "evaluating", "releasing"} <= set(statuses)
        assert sum(e["message"] == "job resumed from its run directory" for e in events) >= 2
        assert [e["id"] for e in events] == sorted(e["id"] for e in events)

        reference_dir = next((reference.data_dir / "jobs" / reference_job).glob("runs/*/main"))
        assert _weights(run_dir) == _weights(reference_dir)
        assert verify_log(run_dir / "review") == []
        bundle = next((run_dir / "release").glob("*.tar.gz"))
        assert run_distill("verify", bundle).returncode == 0
    finally:
        killed.stop()
        reference.stop()

"""Event streams under many listeners, over real HTTP: open streams hold no database connection, so the
rest of the API stays quick; every listener hears each new event; bad cursors are located 422s."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from service_live import LiveServer, small_spec, tar_folder, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
STREAMS = 50


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A server with tenant acme (customer ann) and a job of the quickstart at a size that keeps it busy."""
    root = tmp_path_factory.mktemp("streams")
    (root / "data").mkdir()
    server = LiveServer(root / "data")
    server.admin("tenant", "acme", "--allow-key-env", "OPENAI_API_KEY")
    token = server.admin("user", "ann", "--role", "customer", "--tenant", "acme")
    server.start()
    spec = small_spec(root / "spec", records=3000)
    with server.client(token) as ann:
        response = ann.post("/v1/jobs", files={"file": ("quick.tar.gz", tar_folder(spec.parent))}, data={"spec_path": "quick.yaml"})
        assert response.status_code == 201, response.text
    yield server, token, response.json()["id"]
    server.stop()


@pytest.mark.parametrize(("path", "headers", "field"), [
    ("events?after=99999999999999999999999", {}, "query.after"),
    ("events?after=-1", {}, "query.after"),
    ("events/stream?after=99999999999999999999999", {}, "query.after"),
    ("events/stream", {"Last-Event-ID": "abc"}, "header.last-event-id"),
    ("events/stream", {"Last-Event-ID": "99999999999999999999999"}, "header.last-event-id"),
])
def test_bad_event_cursor_is_a_422_naming_the_field(live, path, headers, field) -> None:
    server, token, job_id = live
    with server.client(token) as ann:
        response = ann.get(f"/v1/jobs/{job_id}/{path}", headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    assert [p["key"] for p in response.json()["problems"]] == [field]


def test_stream_resumes_after_last_event_id(live) -> None:
    server, token, job_id = live
    with server.client(token) as ann:
        first = ann.get(f"/v1/jobs/{job_id}/events", params={"limit": 2}).json()["events"]
        wait_for(lambda: ann.get(f"/v1/jobs/{job_id}").json()["status"] not in ("validating", "queued"), 120, "the job to start")
        with ann.stream("GET", f"/v1/jobs/{job_id}/events/stream", headers={"Last-Event-ID": str(first[0]["id"])}) as stream:
            ids = [int(line[4:]) for line in _lines(stream, 3) if line.startswith("id: ")]
        # the client went away: its listener is gone (the server notices the disconnect)
        wait_for(lambda: "distill_event_streams_open 0.0" in ann.get("/metrics").text, 30, "the stream to close")
    assert ids[0] == first[1]["id"] and ids == sorted(ids)


def test_generation_progress_in_status_and_as_progress_events(live) -> None:
    server, token, job_id = live
    with server.client(token) as ann:
        def progress_event():
            events = ann.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["events"]
            return next((e for e in events if e["type"] == "progress" and e["data"].get("records_written")), None)

        event = wait_for(progress_event, 120, "a progress event of generation")
        generate = ann.get(f"/v1/jobs/{job_id}").json()["progress"]["generate"]
    assert event["data"]["stage"] == "generate" and event["message"].startswith("generate, ")
    assert generate["state"] == "running" and generate["records"] == 3000 and generate["elapsed_seconds"] > 0
    assert generate["records_written"] >= event["data"]["records_written"] and generate["eta_seconds"] is not None


def _lines(stream, events: int) -> list[str]:
    out = []
    for line in stream.iter_lines():
        out.append(line)
        if sum(1 for x in out if x.startswith("id: ")) == events:
            return out
    return out


async def _listen(url: str, token: str, job_id: str, heard: dict[int, list[dict]], index: int, opened: asyncio.Event,
                  counter: list[int]) -> None:
    """One listener: reads the stream until the server ends it (the job's terminal status event)."""
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
        async with client.stream("GET", f"/v1/jobs/{job_id}/events/stream") as response:
            assert response.status_code == 200
            counter[0] += 1
            if counter[0] == STREAMS:
                opened.set()
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    heard[index].append({**json.loads(line[6:]), "heard_at": time.monotonic()})


async def _fifty_streams(server: LiveServer, token: str, job_id: str) -> tuple[list[float], dict[int, list[dict]], float]:
    heard: dict[int, list[dict]] = {i: [] for i in range(STREAMS)}
    opened, counter = asyncio.Event(), [0]
    listeners = [asyncio.create_task(_listen(server.url, token, job_id, heard, i, opened, counter)) for i in range(STREAMS)]
    await asyncio.wait_for(opened.wait(), 120)
    await asyncio.sleep(1)  # every stream has read its backlog and waits
    latencies = []
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        assert f"distill_event_streams_open {STREAMS:.1f}" in (await client.get("/metrics")).text
        for _ in range(10):
            started = time.monotonic()
            assert (await client.get("/v1/me")).status_code == 200
            latencies.append(time.monotonic() - started)
        cancelled_at = time.monotonic()
        assert (await client.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200  # writes new events
    await asyncio.wait_for(asyncio.gather(*listeners), 120)
    return latencies, heard, cancelled_at


def test_fifty_streams_leave_the_api_quick_and_every_listener_hears_new_events(live) -> None:
    server, token, job_id = live
    with server.client(token) as ann:
        wait_for(lambda: ann.get(f"/v1/jobs/{job_id}").json()["status"] not in ("validating", "queued"), 120, "the job to start")
    latencies, heard, cancelled_at = asyncio.run(_fifty_streams(server, token, job_id))
    assert max(latencies) < 2.0, latencies  # 16 streams used to freeze /v1/me for 27 s
    for events in heard.values():
        messages = [e["message"] for e in events]
        assert "cancel requested" in messages and messages[-1] == "job cancelled"
        requested = next(e for e in events if e["message"] == "cancel requested")
        assert requested["heard_at"] - cancelled_at < 5.0


def test_metrics_count_routes_jobs_stages_and_streams_without_tenant_data(live) -> None:
    server, token, job_id = live
    with server.client(token) as ann:
        cancelled = wait_for(lambda: ann.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled", 120, "cancelled")
        tenant = ann.get("/v1/me").json()["tenant_id"]
    with server.client(None) as anonymous:  # no token needed: nothing in it names a tenant or a job
        response = anonymous.get("/metrics")
    text = response.text
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert 'distill_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="200"}' in text
    assert 'distill_http_requests_total{method="GET",route="/v1/jobs/{job_id}/events",status="422"}' in text
    assert 'distill_http_request_duration_seconds_bucket{le="0.1",method="GET",route="/v1/me"}' in text
    assert 'distill_jobs{status="cancelled"} 1.0' in text and "distill_queue_depth 0.0" in text
    assert 'distill_stage_duration_seconds_count{stage="generate"} 1.0' in text
    assert "distill_event_streams_open 0.0" in text
    assert cancelled and job_id not in text and tenant not in text and "acme" not in text

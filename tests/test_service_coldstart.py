"""Hosted cold start over real HTTP: a tenant deploys its released job, the real `openai` SDK calls the
deployment with a service token, capture keeps (redacted) real inputs but not opted-out ones, another
tenant gets 404s, a capture log with a bad line is refused by line number, the next job is built from the
captures and the deployment is promoted to it and rolled back, every switch an event."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import openai
import pytest

from service_live import LiveServer, small_spec, tar_folder, wait_status

pytestmark = pytest.mark.slow

STORIES = [
    "Once upon a time a small fox found a red ball in the tall grass near the river",
    "Tim and his sister built a big sand castle, then the waves came and took it away",
    "The sleepy owl could not find her nest, so the moon helped her look for it all night",
    "A little robot wanted to dance but his legs were too stiff, so he asked the cat",
    "The old tree told the birds a story about the winter when all the snow was blue",
    "Mia lost her shoe at the park and a friendly dog brought it back wet and happy",
]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """Tenants acme (customer ann) and other (customer bob); ann's job is released."""
    root = tmp_path_factory.mktemp("hosted")
    (root / "data").mkdir()
    server = LiveServer(root / "data")
    server.admin("tenant", "acme", "--allow-key-env", "OPENAI_API_KEY")
    server.admin("tenant", "other", "--allow-key-env", "OPENAI_API_KEY")
    tokens = {"ann": server.admin("user", "ann", "--role", "customer", "--tenant", "acme"),
              "bob": server.admin("user", "bob", "--role", "customer", "--tenant", "other")}
    server.start()
    spec = small_spec(root / "spec", human=False)
    text = spec.read_text().replace("steps:\n", "steps:\n  - name: idea\n    user: \"One line: a story idea about a "
                                    "{{ adjective }} {{ noun }}.\"\n", 1)
    spec.write_text(text + "\ncoldstart:\n  input_step: idea\n  held_out: 0.34\n")
    with server.client(tokens["ann"]) as ann:
        response = ann.post("/v1/jobs", files={"file": ("quick.tar.gz", tar_folder(spec.parent))},
                            data={"spec_path": "quick.yaml"})
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        wait_status(ann, job_id, "succeeded", timeout=900)
        deployed = ann.post(f"/v1/jobs/{job_id}/deployment",
                            json={"capture": {"enabled": True, "rate": 1.0, "retention_days": 7}})
        assert deployed.status_code == 201, deployed.text
    yield server, tokens, job_id, deployed.json()
    server.stop()


def sdk(server: LiveServer, deployment: dict, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + deployment["path"], api_key=token, max_retries=0, timeout=120)


def test_the_openai_sdk_calls_the_deployment_and_capture_honours_opt_out(live) -> None:
    server, tokens, job_id, deployment = live
    client = sdk(server, deployment, tokens["ann"])
    model = deployment["name"]
    assert [m.id for m in client.models.list().data] == [r["model"] for r in deployment["routes"]]
    plain = client.completions.create(model=model, prompt=STORIES[0], max_tokens=8, seed=1)
    assert plain.object == "text_completion" and plain.usage.completion_tokens > 0
    chunks = list(client.completions.create(model=model, prompt=STORIES[1], max_tokens=8, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens > 0
    for story in STORIES[2:]:
        client.completions.create(model=model, prompt=story, max_tokens=4)
    client.completions.create(model=model, prompt="call me on +44 7700 900123 about the dragon story", max_tokens=4)
    client.completions.create(model=model, prompt="SECRET-OPT-OUT story one", max_tokens=4,
                              extra_headers={"X-Distill-Capture": "off"})
    client.completions.create(model=model, prompt="SECRET-OPT-OUT story two", max_tokens=4,
                              extra_body={"metadata": {"capture": "off"}})

    with server.client(tokens["ann"]) as ann:
        captures = ann.get(f"/v1/jobs/{job_id}/captures").json()["captures"]
    text = json.dumps(captures)
    assert len(captures) == len(STORIES) + 1
    assert "SECRET-OPT-OUT" not in text and "7700" not in text and "[PHONE]" in text
    assert plain.id in {c["request_id"] for c in captures}


def test_another_tenant_gets_404_for_the_deployment_and_the_captures(live) -> None:
    server, tokens, job_id, deployment = live
    with pytest.raises(openai.NotFoundError):
        sdk(server, deployment, tokens["bob"]).completions.create(model=deployment["name"], prompt="hi", max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        sdk(server, deployment, "dst_not-a-token").models.list()
    with server.client(tokens["bob"]) as bob:
        assert bob.get(f"/v1/deployments/{deployment['id']}").status_code == 404
        assert bob.get(f"/v1/jobs/{job_id}/captures").status_code == 404
        assert bob.post(f"/v1/jobs/{job_id}/captures", files={"file": ("c.jsonl", b"{}\n")}).status_code == 404
        assert bob.post(f"/v1/jobs/{job_id}/coldstart").status_code == 404
        assert bob.get("/v1/deployments").json()["deployments"] == []


def capture_line(request_id: str, prompt: str, created: datetime) -> str:
    return json.dumps({"format": "distill-capture/1", "request_id": request_id, "created": created.isoformat(),
                       "expires": (created + timedelta(days=30)).date().isoformat(), "endpoint": "completions",
                       "model": "tinystories-quickstart-0.1.0", "inputs": {"prompt": [prompt]},
                       "outputs": ["The end."], "redacted": []})


def test_capture_upload_reports_bad_lines_and_redacts_again_and_deletes(live) -> None:
    server, tokens, job_id, _ = live
    now = datetime.now(timezone.utc)
    good = capture_line("up-1", "The brave snail wrote to kim.porter@gmail.com about a cake", now)
    old = capture_line("up-old", "A story from last year about a green frog", now - timedelta(days=400))
    with server.client(tokens["ann"]) as ann:
        before = ann.get(f"/v1/jobs/{job_id}/captures").json()["count"]
        bad = ann.post(f"/v1/jobs/{job_id}/captures",
                       files={"file": ("beta.jsonl", f"{good}\nnot json at all\n{{\"format\": \"x\"}}\n".encode())})
        assert bad.status_code == 422, bad.text
        assert [(p["line"], p["file"]) for p in bad.json()["problems"]] == [(2, "beta.jsonl"), (3, "beta.jsonl")]
        assert ann.get(f"/v1/jobs/{job_id}/captures").json()["count"] == before  # nothing of it was kept

        kept = ann.post(f"/v1/jobs/{job_id}/captures", files={"file": ("beta.jsonl", f"{good}\n{old}\n".encode())})
        assert kept.status_code == 201 and kept.json()["kept"] == 2
        line = ann.get(f"/v1/jobs/{job_id}/captures", params={"request_id": "up-1"}).json()["captures"][0]
        assert "kim.porter@gmail.com" not in json.dumps(line) and "[EMAIL]" in line["inputs"]["prompt"][0]

        assert ann.delete(f"/v1/jobs/{job_id}/captures/up-1").json()["deleted"] == 1
        assert ann.delete(f"/v1/jobs/{job_id}/captures/up-1").status_code == 404
        until = (now - timedelta(days=300)).isoformat()
        assert ann.post(f"/v1/jobs/{job_id}/captures/delete", json={"until": until}).json()["deleted"] == 1
        assert ann.get(f"/v1/jobs/{job_id}/captures").json()["count"] == before


def test_a_job_is_deployed_once_and_lists_page_with_a_cursor(live) -> None:
    server, tokens, job_id, deployment = live
    with server.client(tokens["ann"]) as ann:
        again = ann.post(f"/v1/jobs/{job_id}/deployment", json={})
        first = ann.get("/v1/deployments", params={"limit": 1}).json()
        total = ann.get(f"/v1/jobs/{job_id}/captures").json()["count"]
        pages, cursor = [], None
        while True:
            page = ann.get(f"/v1/jobs/{job_id}/captures", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            pages.append(page["captures"])
            if (cursor := page["next_cursor"]) is None:
                break
        lineage = ann.get(f"/v1/jobs/{job_id}/lineage")
    assert again.status_code == 409 and deployment["id"] in again.json()["detail"]
    assert [d["id"] for d in first["deployments"]] == [deployment["id"]] and first["next_cursor"] is None
    ids = [c["request_id"] for page in reversed(pages) for c in page]  # pages go back in time
    assert total > 2 and len(ids) == len(set(ids)) == total
    assert lineage.status_code == 404 and lineage.json()["problems"] == []  # v1 is not a cold-start job

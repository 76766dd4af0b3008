"""The service over real HTTP (uvicorn on a loopback port): a customer submits the quickstart at test
size, follows its events, a reviewer reviews and signs off (the policy needs a human), the customer
downloads, verifies and loads the weights; plus auth, roles, tenant isolation and upload safety."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import run_distill
from service_live import LiveServer, small_spec, tar_folder, wait_for, wait_status

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a loaded machine trains slowly


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A server with tenants acme (customer ann, reviewer rita) and other (customer bob), and acme's job
    submitted from the quickstart at test size."""
    root = tmp_path_factory.mktemp("service")
    server = LiveServer(root / "data")
    (root / "data").mkdir()
    server.admin("tenant", "acme", "--allow-key-env", "OPENAI_API_KEY", "--dataset-download")
    server.admin("tenant", "other", "--spending-cap", "0.01", "--allow-key-env", "OPENAI_API_KEY")
    tokens = {
        "ann": server.admin("user", "ann", "--role", "customer", "--tenant", "acme"),
        "bob": server.admin("user", "bob", "--role", "customer", "--tenant", "other"),
        "rita": server.admin("user", "rita", "--role", "reviewer", "--assign", "acme"),
        "otto": server.admin("user", "otto", "--role", "reviewer", "--assign", "other"),
        "root": server.admin("user", "root", "--role", "admin"),
    }
    server.start()
    spec = small_spec(root / "spec")
    with server.client(tokens["ann"]) as ann:
        response = ann.post("/v1/jobs", files={"file": ("quick.tar.gz", tar_folder(spec.parent))}, data={"spec_path": "quick.yaml"})
        assert response.status_code == 201, response.text
    yield server, tokens, response.json()["id"], spec
    server.stop()


def test_health_and_openapi_need_no_token(live) -> None:
    server, *_ = live
    with server.client(None) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        paths = anonymous.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}/events/stream", "/v1/jobs/{job_id}/bundle", "/v1/jobs/{job_id}/review/signoff"} <= set(paths)


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer dst_" + "x" * 43])
def test_missing_or_malformed_token_is_401(live, header) -> None:
    server, *_ = live
    with server.client(None) as client:
        response = client.get("/v1/jobs", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_revoked_token_is_401(live) -> None:
    server, tokens, *_ = live
    with server.client(tokens["root"]) as admin:
        user = admin.post("/v1/users", json={"name": "carl", "role": "customer", "tenant": "acme"}).json()
        issued = admin.post(f"/v1/users/{user['id']}/tokens").json()
        with server.client(issued["token"]) as carl:
            assert carl.get("/v1/me").json()["name"] == "carl"
            assert admin.delete(f"/v1/tokens/{issued['id']}").json()["revoked"] is True
            assert carl.get("/v1/me").status_code == 401


def test_only_admins_manage_accounts(live) -> None:
    server, tokens, *_ = live
    for who in ("ann", "rita"):
        with server.client(tokens[who]) as client:
            assert client.post("/v1/tenants", json={"name": f"by-{who}"}).status_code == 403


def _upload(server: LiveServer, token: str, name: str, data: bytes, spec_path: str | None = None):
    with server.client(token) as client:
        return client.post("/v1/jobs", files={"file": (name, data)}, data={"spec_path": spec_path} if spec_path else {})


def _tar(members: list[tarfile.TarInfo], payloads: dict[str, bytes] = {}) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info in members:
            data = payloads.get(info.name)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


@pytest.mark.parametrize("member, message", [
    (_member("../escape.yaml", size=3), "'..'"),
    (_member("/etc/evil.yaml", size=3), "absolute"),
    (_member("words/link.txt", tarfile.SYMTYPE, link="/etc/passwd"), "links"),
    (_member("words/hard.txt", tarfile.LNKTYPE, link="quick.yaml"), "links"),
    (_member("dev/null", tarfile.CHRTYPE), "devices"),
])
def test_unsafe_tar_members_are_refused_by_name(live, member, message) -> None:
    server, tokens, *_ = live
    response = _upload(server, tokens["ann"], "spec.tar.gz", _tar([member], {member.name: b"abc"}))
    assert response.status_code == 422, response.text
    problem = response.json()["problems"][0]
    assert problem["file"] == member.name and message in problem["message"]


def test_oversized_member_is_refused_by_name(live) -> None:
    server, tokens, *_ = live
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("quick.yaml", "name: x\n")
        archive.writestr("words/huge.txt", b"a" * (11 << 20))  # compresses to a few KB
    response = _upload(server, tokens["ann"], "spec.zip", buffer.getvalue())
    assert response.status_code == 413, response.text
    assert response.json()["problems"][0]["file"] == "words/huge.txt"


def test_zip_traversal_is_refused_by_name(live) -> None:
    server, tokens, *_ = live
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a/../../outside.txt", "x")
    response = _upload(server, tokens["ann"], "spec.zip", buffer.getvalue())
    assert response.status_code == 422 and response.json()["problems"][0]["file"] == "a/../../outside.txt"


def test_invalid_spec_comes_back_as_located_problems(live) -> None:
    server, tokens, _, spec = live
    broken = spec.read_text().replace("records: 40", "records: -3").replace("batch_size: 16", "batch_size: 0")
    response = _upload(server, tokens["ann"], "quick.yaml", broken.encode())
    assert response.status_code == 422, response.text
    problems = {p["key"]: p for p in response.json()["problems"]}
    assert problems["records"]["file"] == "spec.yaml" and problems["records"]["line"] == broken.splitlines().index("records: -3") + 1
    assert "training.batch_size" in problems
    assert set(problems["records"]) == {"file", "line", "column", "key", "message", "hint"}


def test_spec_naming_a_forbidden_key_variable_is_refused(live) -> None:
    server, tokens, _, spec = live
    text = spec.read_text().replace("provider: offline", "provider: openai\n  api_key_env: SERVER_SECRET_KEY")
    text = text.replace("model: offline-stand-in", "model: gpt-4o-mini")
    (spec.parent / "forbidden.yaml").write_text(text)
    response = _upload(server, tokens["ann"], "spec.tar.gz", tar_folder(spec.parent), "forbidden.yaml")
    (spec.parent / "forbidden.yaml").unlink()
    assert response.status_code == 422, response.text
    problem = response.json()["problems"][0]
    assert problem["key"] == "teacher.api_key_env" and "SERVER_SECRET_KEY" in problem["message"]


@pytest.mark.parametrize("teacher, key", [
    ("provider: openai\n  base_url: http://attacker.example/v1", "teacher.base_url"),
    ("provider: hf", "teacher.provider"),
])
def test_spec_cannot_send_the_servers_key_elsewhere_or_read_its_files(live, teacher, key) -> None:
    server, tokens, _, spec = live
    text = spec.read_text().replace("provider: offline", teacher).replace("model: offline-stand-in", "model: gpt-4o-mini")
    (spec.parent / "hostile.yaml").write_text(text)
    response = _upload(server, tokens["ann"], "spec.tar.gz", tar_folder(spec.parent), "hostile.yaml")
    (spec.parent / "hostile.yaml").unlink()
    assert response.status_code == 422, response.text
    assert key in [p["key"] for p in response.json()["problems"]]


def test_plan_over_the_tenant_spending_cap_is_refused(live) -> None:
    server, tokens, _, spec = live
    text = spec.read_text().replace("provider: offline", "provider: openai").replace("model: offline-stand-in", "model: gpt-4o")
    (spec.parent / "costly.yaml").write_text(text.replace("records: 40", "records: 2000"))
    response = _upload(server, tokens["bob"], "spec.tar.gz", tar_folder(spec.parent), "costly.yaml")
    (spec.parent / "costly.yaml").unlink()
    assert response.status_code == 402, response.text
    assert "spending cap" in response.json()["problems"][0]["message"]


def test_job_reaches_awaiting_review_with_events_and_progress(live) -> None:
    server, tokens, job_id, _ = live
    with server.client(tokens["ann"]) as ann:
        job = wait_status(ann, job_id, "awaiting_review")
        events = ann.get(f"/v1/jobs/{job_id}/events", params={"limit": 3}).json()
        rest = ann.get(f"/v1/jobs/{job_id}/events", params={"after": events["next_after"]}).json()
    assert job["progress"]["generate"]["state"] == "done" and job["progress"]["generate"]["counts"]["ok"] == 40
    assert job["cost_usd"] == 0.0 and job["estimate_usd"] == 0.0
    statuses = [e["data"]["status"] for e in events["events"] + rest["events"] if e["type"] == "status"]
    assert statuses == ["validating", "queued", "generating", "reviewing", "awaiting_review"]


def test_other_tenant_gets_404_for_every_object(live) -> None:
    server, tokens, job_id, _ = live
    wait_status(server.client(tokens["ann"]), job_id, "awaiting_review")
    paths = [f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events", f"/v1/jobs/{job_id}/events/stream",
             f"/v1/jobs/{job_id}/records", f"/v1/jobs/{job_id}/records/0", f"/v1/jobs/{job_id}/bundle",
             f"/v1/jobs/{job_id}/report", f"/v1/jobs/{job_id}/cards/model", f"/v1/jobs/{job_id}/dataset"]
    for who in ("bob", "otto"):  # a customer of another tenant, a reviewer assigned another tenant
        with server.client(tokens[who]) as client:
            for path in paths:
                assert client.get(path).status_code == 404, (who, path)
            assert client.post(f"/v1/jobs/{job_id}/cancel").status_code in (403, 404)
            assert job_id not in [j["id"] for j in client.get("/v1/jobs").json()["jobs"]]
    with server.client(tokens["otto"]) as otto:
        response = otto.post(f"/v1/jobs/{job_id}/review/decisions", json={"ids": [0], "decision": "reject", "reason": "x"})
        assert response.status_code == 404


def test_customer_is_403_for_review_actions(live) -> None:
    server, tokens, job_id, _ = live
    with server.client(tokens["ann"]) as ann:
        assert ann.get(f"/v1/jobs/{job_id}/records").status_code == 200  # reading their own records is fine
        for path, body in [("review/decisions", {"ids": [0], "decision": "reject", "reason": "x"}),
                           ("review/bulk", {"query": {}, "decision": "reject", "reason": "x"}),
                           ("records/0/edit", {"text": "A story.", "reason": "x"}), ("review/undo", {"reason": "x"}),
                           ("review/sample", {}), ("review/signoff", {"defective": []})]:
            assert ann.post(f"/v1/jobs/{job_id}/{path}", json=body).status_code == 403, path
        assert ann.get(f"/v1/jobs/{job_id}/review/audit").status_code == 403


def test_downloads_are_409_before_the_release(live) -> None:
    server, tokens, job_id, _ = live
    with server.client(tokens["ann"]) as ann:
        for path in ("bundle", "report", "cards/model", "dataset"):
            response = ann.get(f"/v1/jobs/{job_id}/{path}")
            assert response.status_code == 409 and "released" in response.json()["detail"], path


def test_review_sign_off_download_verify_and_load(live, tmp_path: Path) -> None:
    server, tokens, job_id, _ = live
    with server.client(tokens["rita"]) as rita, server.client(tokens["ann"]) as ann:
        wait_status(ann, job_id, "awaiting_review")
        page = rita.get(f"/v1/jobs/{job_id}/records", params={"limit": 5}).json()
        assert page["total"] >= 30 and len(page["records"]) == 5
        word = page["records"][0]["text"].split()[3].strip(".,!?\"'")
        found = rita.get(f"/v1/jobs/{job_id}/records", params={"q": word.upper(), "limit": 500}).json()
        assert page["records"][0]["id"] in [r["id"] for r in found["records"]]
        shown = rita.get(f"/v1/jobs/{job_id}/records/{page['records'][0]['id']}").json()
        assert "findings" in shown
        first, second = page["records"][0]["id"], page["records"][1]["id"]
        assert rita.post(f"/v1/jobs/{job_id}/review/decisions", json={"ids": [first], "decision": "reject", "reason": "too dull"}).status_code == 200
        assert rita.get(f"/v1/jobs/{job_id}/records/{first}").json()["status"] == "rejected"
        undone = rita.post(f"/v1/jobs/{job_id}/review/undo", json={"reason": "changed my mind"}).json()
        assert undone["entry"]["action"] == "undo" and undone["affected"] == 1
        assert rita.get(f"/v1/jobs/{job_id}/records/{first}").json()["status"] == page["records"][0]["status"]
        edited = rita.post(f"/v1/jobs/{job_id}/records/{second}/edit",
                           json={"text": page["records"][1]["text"] + " The end.", "reason": "ending"})
        assert edited.status_code == 200 and edited.json()["entry"]["reviewer"].startswith("rita <")
        bulk = rita.post(f"/v1/jobs/{job_id}/review/bulk", json={"query": {"status": "pending"}, "decision": "reject",
                                                                 "reason": "unclear, out"}).json()
        assert rita.get(f"/v1/jobs/{job_id}/records", params={"status": "pending"}).json()["total"] == 0
        sample = rita.post(f"/v1/jobs/{job_id}/review/sample", json={"seed": 7}).json()
        assert len(sample["ids"]) == 5
        signed = rita.post(f"/v1/jobs/{job_id}/review/signoff", json={"defective": []}).json()
        assert signed["accepted"] and signed["job_status"] == "queued"
        audit = rita.get(f"/v1/jobs/{job_id}/review/audit").json()
        assert audit["intact"] and audit["entries"] >= 5 + (1 if bulk["entry"] else 0)

        follow = run_distill("remote", "events", job_id, "--follow", timeout=900,
                             env={"DISTILL_SERVER": server.url, "DISTILL_TOKEN": tokens["ann"]})
        assert follow.returncode == 0, follow.stderr
        assert "released" in follow.stdout.splitlines()[-1]
        assert ann.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
        events = ann.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["events"]
        assert [e["data"]["status"] for e in events if e["type"] == "status"].count("queued") == 2  # submitted, signed off

        head = ann.get(f"/v1/jobs/{job_id}/bundle", headers={"Range": "bytes=0-9"})
        assert head.status_code == 206 and len(head.content) == 10
        fetched = run_distill("remote", "download", job_id, "-o", tmp_path / "bundle.tar.gz",
                              env={"DISTILL_SERVER": server.url, "DISTILL_TOKEN": tokens["ann"]})
        assert fetched.returncode == 0, fetched.stderr
        assert ann.get(f"/v1/jobs/{job_id}/bundle").headers["x-content-sha256"] in fetched.stderr
        assert ann.get(f"/v1/jobs/{job_id}/cards/model").text.startswith("---")
        assert "bits" in ann.get(f"/v1/jobs/{job_id}/report", params={"format": "md"}).text.lower()
        rows = [json.loads(line) for line in ann.get(f"/v1/jobs/{job_id}/dataset").text.splitlines()]
        assert second in [r["id"] for r in rows] and next(r for r in rows if r["id"] == second)["text"].endswith("The end.")

    verified = run_distill("verify", tmp_path / "bundle.tar.gz")
    assert verified.returncode == 0, verified.stderr
    with tarfile.open(tmp_path / "bundle.tar.gz") as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    bundle = next((tmp_path / "unpacked").iterdir())
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(bundle)
    tokenizer = AutoTokenizer.from_pretrained(bundle)
    out = model.generate(**tokenizer("Once upon a time", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert out.shape[1] > 4


def test_cancel_stops_a_running_job(live) -> None:
    server, tokens, _, spec = live
    with server.client(tokens["ann"]) as ann:
        response = ann.post("/v1/jobs", files={"file": ("q.tar.gz", tar_folder(spec.parent))}, data={"spec_path": "quick.yaml"})
        job_id = response.json()["id"]
        wait_for(lambda: ann.get(f"/v1/jobs/{job_id}").json()["status"] != "queued", 300, "the job to start", every=0.05)
        assert ann.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        job = wait_status(ann, job_id, "cancelled", timeout=120)
        assert job["finished_at"] is not None
        messages = [e["message"] for e in ann.get(f"/v1/jobs/{job_id}/events").json()["events"]]
    assert messages[-1] == "job cancelled"

"""The OpenAPI document is the contract, checked against the real `distill serve` over HTTP.

- schemathesis sends every operation of `/openapi.json` (bounded, derandomized examples) as each role of
  two tenants, with the path's job and record pinned to the caller's own tenant, and again pinned to the
  other tenant's: no server errors, no response outside the document, and no response that shows the
  other tenant's objects.
- A client generated from the document by `openapi-python-client` submits a job with a spec archive,
  follows it, and reads a 422's problems.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance, not_a_server_error, response_schema_conformance, status_code_conformance,
)

from service_live import LiveServer, small_spec, tar_folder, wait_for, wait_status

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TENANTS = ("north", "south")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Examples per operation and run: 35 operations x 9 runs; enough to reach the statuses an operation has
# with these objects, and a minute or two on a loaded machine.
EXAMPLES = 4
# The live stream stays open until its job ends (its own tests read it); the rest is every operation.
SKIPPED = {"streamJobEvents"}
CODEGEN = Path(sys.prefix) / "codegen"  # openapi-python-client, installed apart by scripts/setup.sh


def _strict_spec(folder: Path) -> Path:
    """The quickstart at test size whose sign-off can never pass (0 defects of 5 is above a 1% bound),
    so random sign-offs leave the job awaiting review instead of training it."""
    spec = small_spec(folder, records=12)
    policy = folder / "policy.yaml"
    policy.write_text(policy.read_text().replace("max_defect_rate: 0.6", "max_defect_rate: 0.01"))
    return spec


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """Tenants north and south, each with a customer, a reviewer and a job awaiting review; one admin."""
    root = tmp_path_factory.mktemp("contract")
    (root / "data").mkdir()
    server = LiveServer(root / "data", max_jobs=2)  # both tenants' jobs at once
    tokens = {"admin": server.admin("user", "root", "--role", "admin")}
    server.start()
    with server.client(tokens["admin"]) as admin:  # the rest through the API (quicker than the CLI)
        for tenant in TENANTS:
            assert admin.post("/v1/tenants", json={"name": tenant}).status_code == 201
            for role, name, where in (("customer", "ann", {"tenant": tenant}), ("reviewer", "rita", {"assign": [tenant]})):
                user = admin.post("/v1/users", json={"name": f"{tenant}-{name}", "role": role, **where}).json()
                tokens[f"{tenant}-{role}"] = admin.post(f"/v1/users/{user['id']}/tokens").json()["token"]
    spec = _strict_spec(root / "spec")
    objects = {}
    for tenant in TENANTS:
        with server.client(tokens[f"{tenant}-customer"]) as customer:
            response = customer.post("/v1/jobs", files={"file": ("quick.tar.gz", tar_folder(spec.parent))},
                                     data={"spec_path": "quick.yaml"})
            assert response.status_code == 201, response.text
            objects[tenant] = {"job_id": response.json()["id"], "tenant_id": response.json()["tenant_id"]}
    for tenant in TENANTS:
        with server.client(tokens[f"{tenant}-customer"]) as customer:
            wait_status(customer, objects[tenant]["job_id"], "awaiting_review", timeout=600)
            records = customer.get(f"/v1/jobs/{objects[tenant]['job_id']}/records", params={"limit": 1}).json()
            objects[tenant]["record_id"] = records["records"][0]["id"]
    yield server, tokens, objects, spec
    server.stop()


@pytest.fixture(scope="module")
def schema(service):
    server, *_ = service
    return schemathesis.openapi.from_dict(httpx.get(f"{server.url}/openapi.json").json())


def _exercise(server: LiveServer, schema, token: str, pins: dict, foreign: list[str], *, denied: bool,
              operations: set[str] | None = None) -> list[str]:
    """Every operation (or those named) with its path parameters pinned where `pins` names them; the
    failures, one line each. `foreign`: text no response may contain (the other tenant's ids); `denied`:
    every operation on a pinned object must refuse (they are the other tenant's)."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        name = operation.definition.raw["operationId"]
        if name in SKIPPED or (operations is not None and name not in operations):
            continue
        params = {key: pins[key] for key in re.findall(r"{(\w+)}", operation.path) if key in pins}

        @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(path_parameters=params or None))
        def exercise(case) -> None:
            response = case.call(base_url=server.url, session=session, timeout=60)
            case.validate_response(response, checks=CHECKS)
            leaked = [marker for marker in foreign if marker in response.text]
            assert not leaked, f"{response.status_code} shows the other tenant's {leaked}: {response.text[:300]}"
            assert not (denied and params) or response.status_code in (401, 403, 404, 422), \
                f"another tenant's object answered {response.status_code}: {response.text[:300]}"

        try:
            exercise()
        except Exception as exc:  # one line per failing operation; the test lists them all
            failures.append(f"{name}: {str(exc)[:600]}")
    return failures


def _others(objects: dict, tenant: str) -> dict:
    return objects[next(t for t in TENANTS if t != tenant)]


@pytest.mark.parametrize("role", ["admin", "north-customer", "north-reviewer", "south-customer", "south-reviewer"])
def test_every_operation_keeps_to_the_document_for_every_role(service, schema, role) -> None:
    server, tokens, objects, _ = service
    tenant = "north" if role == "admin" else role.split("-")[0]
    others = _others(objects, tenant)
    # cancelling runs last (test_cancel_keeps_to_the_document): a cancelled job answers 409 to review actions
    everything_but_cancel = {op.ok().definition.raw["operationId"] for op in schema.get_all_operations()} - {"cancelJob"}
    foreign = [] if role == "admin" else [others["job_id"], others["tenant_id"]]
    failures = _exercise(server, schema, tokens[role], objects[tenant], foreign, denied=False,
                         operations=everything_but_cancel)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("role", ["north-customer", "north-reviewer", "south-customer", "south-reviewer"])
def test_no_operation_shows_another_tenants_objects(service, schema, role) -> None:
    server, tokens, objects, _ = service
    tenant = role.split("-")[0]
    others = _others(objects, tenant)
    failures = _exercise(server, schema, tokens[role], others, [others["tenant_id"]], denied=True)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("role", ["north-customer", "south-reviewer"])
def test_sequences_of_calls_keep_to_the_document(service, tmp_path, role) -> None:
    """The schemathesis CLI's stateful phase: chains of calls that feed one answer's ids into the next
    request (links it infers from the document), as a customer and as a reviewer. Cancelling and retrying
    stay out (the later tests need the jobs as they are)."""
    server, tokens, *_ = service
    done = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{server.url}/openapi.json", "--phases", "stateful",
         "-H", f"Authorization: Bearer {tokens[role]}", "--checks", ",".join(check.__name__ for check in CHECKS),
         "--max-examples", "30", "--seed", "7", "--workers", "1", "--no-color",
         *[arg for name in (*SKIPPED, "cancelJob", "retryJob") for arg in ("--exclude-operation-id", name)]],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    covered = re.search(r"API Links:\s+(\d+) covered", done.stdout)
    assert covered and int(covered.group(1)) > 0, done.stdout[-3000:]  # the chains really followed links


def test_a_body_that_is_not_json_is_a_located_422(service) -> None:
    server, tokens, *_ = service
    with server.client(tokens["admin"]) as admin:
        answer = admin.post("/v1/tenants", content=b"\xff{", headers={"content-type": "application/json"})
    assert answer.status_code == 422 and answer.json()["problems"][0]["key"] == "body", answer.text


def test_the_document_declares_bearer_auth_problems_enums_and_readable_ids(service) -> None:
    server, *_ = service
    document = httpx.get(f"{server.url}/openapi.json").json()
    operations = [op for item in document["paths"].values() for op in item.values()]
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "an API token: `Authorization: Bearer dst_...`"}
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids)) and {"signOffReview", "listJobs", "submitJob", "getJob"} <= set(ids)
    assert all(re.fullmatch(r"[a-z][A-Za-z]+", i) for i in ids), ids
    problems = {"$ref": "#/components/schemas/ProblemsOut"}
    for op in operations:
        for status, answer in op["responses"].items():
            if status in ("401", "403", "404", "409", "422"):
                assert answer["content"]["application/json"]["schema"] == problems, (op["operationId"], status)
        assert "401" in op["responses"] or not op.get("security"), op["operationId"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
    schemas = document["components"]["schemas"]
    def ref(name: str) -> dict:
        return {"$ref": f"#/components/schemas/{name}"}

    assert schemas["JobOut"]["properties"]["status"] == schemas["SignoffOut"]["properties"]["job_status"] == ref("JobStatus")
    assert "awaiting_review" in schemas["JobStatus"]["enum"]
    assert schemas["UserOut"]["properties"]["role"] == ref("Role") and schemas["Role"]["enum"] == ["admin", "reviewer", "customer"]
    assert schemas["StageProgress"]["properties"]["state"] == ref("StageState")
    assert schemas["RecordOut"]["properties"]["decision"]["$ref"] == ref("Decision")["$ref"] and "flag" in schemas["Decision"]["enum"]
    assert {"type": "string", "format": "date-time"} in schemas["JobOut"]["properties"]["created_at"]["anyOf"]
    bundle = document["paths"]["/v1/jobs/{job_id}/bundle"]["get"]["responses"]
    assert bundle["200"]["content"]["application/gzip"]["schema"] == {"type": "string", "format": "binary"}
    assert "X-Content-SHA256" in bundle["200"]["headers"]
    assert schemas["Body_submitJob"]["properties"]["file"]["format"] == "binary"


def test_docs_load_their_scripts_from_the_service(service) -> None:
    server, *_ = service
    page = httpx.get(f"{server.url}/docs").text
    scripts = re.findall(r'<script src="([^"]+)"', page) + re.findall(r'<link type="text/css" rel="stylesheet" href="([^"]+)"', page)
    assert scripts and all(src.startswith("/") for src in scripts), scripts
    for src in scripts:
        assert httpx.get(server.url + src).status_code == 200, src


def test_job_list_pages_with_a_cursor_beyond_any_page_size(service) -> None:
    server, tokens, objects, _ = service
    with server.client(tokens["admin"]) as admin:
        first = admin.get("/v1/jobs", params={"limit": 1}).json()
        second = admin.get("/v1/jobs", params={"limit": 1, "cursor": first["next_cursor"]}).json()
        bad = admin.get("/v1/jobs", params={"cursor": "not-a-cursor"})
    assert [job["id"] for job in first["jobs"] + second["jobs"]] == [objects["south"]["job_id"], objects["north"]["job_id"]]
    assert second["next_cursor"] is None  # the oldest job ends the list
    assert bad.status_code == 422 and bad.json()["problems"][0]["key"] == "query.cursor"


def test_conflicts_are_409_and_missing_objects_404(service) -> None:
    server, tokens, objects, _ = service
    with server.client(tokens["admin"]) as admin:
        again = admin.post("/v1/tenants", json={"name": "north"})
        no_user = admin.post("/v1/users/usr_0000000000000000/tokens")
        not_released = admin.post(f"/v1/jobs/{objects['north']['job_id']}/deployment", json={})
    assert again.status_code == 409 and "already exists" in again.json()["detail"]
    assert no_user.status_code == 404 and no_user.json()["problems"][0]["key"] == "user"
    assert not_released.status_code == 409, not_released.text


def _generate_client(server: LiveServer, folder: Path):
    """The client `openapi-python-client` generates from the live document, imported from `folder`."""
    assert (CODEGEN / "openapi_python_client").is_dir(), f"no openapi-python-client in {CODEGEN}; run scripts/setup.sh"
    document = folder / "openapi.json"
    document.write_text(httpx.get(f"{server.url}/openapi.json").text)
    config = folder / "codegen.json"
    binary = "application/octet-stream"  # how the generator reads the downloads' media types
    config.write_text(json.dumps({"post_hooks": [], "project_name_override": "distill_client",
                                  "package_name_override": "distill_client", "content_type_overrides": {
                                      "application/gzip": binary, "application/jsonl": binary, "multipart/byteranges": binary}}))
    done = subprocess.run([sys.executable, "-m", "openapi_python_client", "generate", "--path", str(document),
                           "--config", str(config), "--meta", "none", "--output-path", str(folder / "distill_client")],
                          env={"PYTHONPATH": str(CODEGEN), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(folder))
    import distill_client

    return distill_client


def test_a_generated_client_submits_follows_and_reads_problems(service, tmp_path) -> None:
    server, tokens, _, spec = service
    distill_client = _generate_client(server, tmp_path)
    from distill_client.api.jobs import cancel_job, get_job, list_job_events, submit_job
    from distill_client.models import BodySubmitJob, JobOut, JobStatus, ProblemsOut
    from distill_client.types import File

    client = distill_client.AuthenticatedClient(base_url=server.url, token=tokens["south-customer"])
    archive = File(payload=io.BytesIO(tar_folder(spec.parent)), file_name="quick.tar.gz")
    created = submit_job.sync_detailed(client=client, body=BodySubmitJob(file=archive, spec_path="quick.yaml"))
    assert created.status_code == 201 and isinstance(created.parsed, JobOut), created.content
    job_id = created.parsed.id
    wait_for(lambda: any(e.message == "job started" for e in list_job_events.sync(job_id=job_id, client=client).events),
             120, "the job to start")
    job = get_job.sync(job_id=job_id, client=client)
    assert job.id == job_id and job.status in (JobStatus.QUEUED, JobStatus.GENERATING, JobStatus.REVIEWING)
    assert job.progress.generate.state.value in ("pending", "running", "done")
    assert cancel_job.sync(job_id=job_id, client=client).cancel_requested  # a running job stops

    broken = spec.read_text().replace("records: 12", "records: -3").encode()
    refused = submit_job.sync_detailed(client=client, body=BodySubmitJob(file=File(payload=io.BytesIO(broken), file_name="quick.yaml")))
    assert refused.status_code == 422 and isinstance(refused.parsed, ProblemsOut), refused.content
    problem = next(p for p in refused.parsed.problems if p.key == "records")
    assert problem.line == broken.decode().splitlines().index("records: -3") + 1


def test_cancel_keeps_to_the_document(service, schema) -> None:
    """Last: cancelling the tenants' jobs (as every role) ends what the other tests review."""
    server, tokens, objects, _ = service
    for role in ("north-reviewer", "south-customer", "admin"):
        tenant = "north" if role == "admin" else role.split("-")[0]
        failures = _exercise(server, schema, tokens[role], objects[tenant], [], denied=False, operations={"cancelJob"})
        assert not failures, "\n".join(failures)

"""A second tenant over real HTTP: naming tenant A's job folder, the data folder, /etc or the code's own
folders in every path-taking spec field gets a 422 at submit naming each field and no server path; the
customer's errors name the spec's files relative to the upload; a key pasted into a spec is refused."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import REPO
from service_live import LiveServer, small_spec, tar_folder, wait_for
from test_spec_paths import PATH_FIELDS, hostile_spec, normalised

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def two_tenants(tmp_path_factory):
    """Tenants a (customer ann, with a submitted job, cancelled) and b (customer bob)."""
    root = tmp_path_factory.mktemp("tenants")
    (root / "data").mkdir()
    server = LiveServer(root / "data")
    for tenant in ("a", "b"):
        server.admin("tenant", tenant, "--allow-key-env", "OPENAI_API_KEY")
    tokens = {name: server.admin("user", name, "--role", "customer", "--tenant", tenant)
              for name, tenant in (("ann", "a"), ("bob", "b"))}
    server.start()
    spec = small_spec(root / "spec")
    with server.client(tokens["ann"]) as ann:
        response = ann.post("/v1/jobs", files={"file": ("quick.tar.gz", tar_folder(spec.parent))}, data={"spec_path": "quick.yaml"})
        assert response.status_code == 201, response.text
        job = response.json()["id"]
        ann.post(f"/v1/jobs/{job}/cancel")
        wait_for(lambda: ann.get(f"/v1/jobs/{job}").json()["status"] in ("cancelled", "failed"), 120, "A's job to stop")
    yield server, tokens, job, spec
    server.stop()


def upload(server, token: str, folder, spec_name: str = "spec.yaml"):
    with server.client(token) as client:
        return client.post("/v1/jobs", files={"file": ("spec.tar.gz", tar_folder(folder))}, data={"spec_path": spec_name})


def server_paths(server) -> list[str]:
    data = server.data_dir.resolve()
    return [str(data), str(REPO), "/etc/"]


@pytest.mark.parametrize("target", ["job", "job-relative", "data", "etc", "code", "safety"])
def test_tenant_b_names_a_server_path_in_every_field_and_gets_a_422_per_field(two_tenants, tmp_path, target) -> None:
    server, tokens, job, spec = two_tenants
    a_job = server.data_dir.resolve() / "jobs" / job
    path = {"job": str(a_job / "spec" / "words" / "nouns.txt"), "job-relative": f"../../{job}/spec/words/nouns.txt",
            "data": str(server.data_dir.resolve()), "etc": "/etc/passwd", "code": str(REPO / "distill"),
            "safety": str(REPO / "safety" / "children.yaml")}[target]
    folder = tmp_path / "upload"
    hostile_spec(folder, path, spec.read_text())
    response = upload(server, tokens["bob"], folder)
    assert response.status_code == 422, response.text
    problems = response.json()["problems"]
    outside = {normalised(p["key"]) for p in problems if p["key"] and "outside the spec's folder" in p["message"]}
    assert outside == PATH_FIELDS
    assert all(p["file"] in (None, "spec.yaml") for p in problems), problems
    assert not [where for where in server_paths(server) if where in response.text], response.text
    assert job not in response.text


def test_a_policy_of_etc_passwd_is_refused_at_submit_without_saying_whether_it_exists(two_tenants, tmp_path) -> None:
    server, tokens, _, spec = two_tenants
    bodies = []
    for policy in ("/etc/passwd", "/etc/no-such-file", "../../../../etc/passwd"):
        folder = tmp_path / policy.replace("/", "_")
        folder.mkdir()
        (folder / "spec.yaml").write_text(spec.read_text().replace("policy: policy.yaml", f"policy: {policy}"))
        response = upload(server, tokens["bob"], folder)
        assert response.status_code == 422
        problems = response.json()["problems"]
        assert "safety.policy" in [p["key"] for p in problems]
        bodies.append(sorted((p["key"] or "", p["message"]) for p in problems))
    assert bodies[0] == bodies[1] == bodies[2]  # the same answer whether or not the file exists


def test_problems_name_upload_files_relative_and_come_in_one_pass(two_tenants, tmp_path) -> None:
    server, tokens, _, spec = two_tenants
    folder = tmp_path / "upload"
    (folder / "words").mkdir(parents=True)
    (folder / "words" / "nouns.txt").write_text("")  # empty word list: a problem located in the upload
    text = spec.read_text().replace("records: 40", "records: -1").replace("policy: policy.yaml", "policy: nosuch")
    data = yaml.safe_load(text)
    data["variables"] = {"noun": {"type": "choice", "file": "words/nouns.txt"}}
    data["steps"][0]["user"] = "Write about a {{ noun }}."
    (folder / "spec.yaml").write_text(yaml.safe_dump(data).replace("records: 40", "records: -1"))
    response = upload(server, tokens["bob"], folder)
    assert response.status_code == 422, response.text
    body = response.json()
    assert not body["detail"].startswith(("SpecError", "UploadError")) and "Error:" not in response.text
    keys = {p["key"] for p in body["problems"]}
    assert {"records", "safety.policy"} <= keys, body
    assert not [where for where in server_paths(server) if where in response.text], response.text


def test_a_key_pasted_in_the_description_is_refused_at_submit(two_tenants, tmp_path) -> None:
    server, tokens, _, spec = two_tenants
    folder = tmp_path / "upload"
    folder.mkdir()
    pair = "AKIAJ4K7QX2ZLM3NPR5T aws_secret_access_key: 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"
    text = re.sub(r"(?m)^description:.*$", f"description: '{pair}'", spec.read_text())
    (folder / "spec.yaml").write_text(text.replace("policy: policy.yaml", "policy: children"))
    response = upload(server, tokens["bob"], folder)
    assert response.status_code == 422, response.text
    line = text.splitlines().index(f"description: '{pair}'") + 1
    assert [p["message"] for p in response.json()["problems"] if p["line"] == line][0].startswith("contains what looks like a credential")
    assert "tR8vQ2" not in response.text


def test_a_base_model_naming_another_tenants_or_an_unfinished_job_gets_one_answer(two_tenants, tmp_path) -> None:
    server, tokens, job, spec = two_tenants
    answers = []
    for who, named in (("bob", job), ("ann", job), ("ann", "job_0000000000000000")):  # A's; A's own but cancelled; none
        folder = tmp_path / f"upload-{who}-{named}"
        folder.mkdir()
        (folder / "spec.yaml").write_text(spec.read_text().replace("policy: policy.yaml", "policy: children")
                                          .replace("student:\n", f"student:\n  base_model: 'job:{named}'\n"))
        response = upload(server, tokens[who], folder)
        assert response.status_code == 422, response.text
        problem = next(p for p in response.json()["problems"] if p["key"] == "student.base_model")
        answers.append(problem["message"].replace(named, "<id>"))
    assert answers == ["job:<id> names no succeeded job of this tenant"] * 3
    assert not [where for where in server_paths(server) if where in str(answers)]


@pytest.mark.parametrize("typed", ["ten", "nan", "-1", "inf"])
def test_admin_form_refuses_a_cap_that_is_not_a_number_in_words(typed: str) -> None:
    from distill.errors import ConfigError
    from distill.service.web.pages_admin import _cap

    with pytest.raises(ConfigError) as refused:
        _cap(typed)
    [problem] = refused.value.problems
    assert problem.key == "spending_cap_usd" and problem.message.startswith("the spending cap must be a number")
    assert _cap(" ") is None and _cap("2.5") == 2.5


def test_a_failed_jobs_error_names_no_server_path_and_no_class(tmp_path) -> None:
    from distill.service.db import Job
    from distill.service.jobs import public_error

    spec_folder = tmp_path / "jobs" / "job_x" / "spec"
    job = Job(id="job_x", run_dir=str(tmp_path / "jobs" / "job_x" / "runs" / "quick" / "main"), error={
        "code": "SpecError", "message": f"{spec_folder}/quick.yaml:3 records: bad (see {REPO}/safety/children.yaml)",
        "problems": [{"message": f"KeyError: {spec_folder}/words/a.txt is empty", "key": "variables.a.file", "hint": None}]})
    error = public_error(job)
    assert error["code"] == "spec_error"
    assert error["message"] == "quick.yaml:3 records: bad (see [server path])"
    assert error["problems"][0]["message"] == "words/a.txt is empty"
    job.error = {"code": "internal_error", "message": "KeyError (see the server's worker log for job_x)"}
    assert "KeyError" not in public_error(job)["message"]

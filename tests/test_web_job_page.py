"""The web app's job page over real HTTP against the real `distill serve`: the model and dataset cards as
sanitised HTML (a spec's <script> and javascript: link shown inert), the full eval report's charts
inlined so they load inside its sandbox, the spending cap that applies (the spec's and the tenant's),
a job whose worker has started shown as starting rather than queued, and a failed job's stage marked."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from distill.service.web.documents import card_html, report_with_charts
from service_live import LiveServer, job_status, small_spec, tar_folder, wait_for, wait_status

SCRIPT = "<script>alert(1)</script>"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def test_a_card_renders_as_html_that_runs_and_loads_nothing() -> None:
    shown = card_html(f"---\nlicense: mit\n---\n# Model {SCRIPT}\n\n[home](https://example.org) [run](javascript:alert(1)) [top](#model)\n\n"
                     "<img src=x onerror=alert(1)>\n\n![chart](figures/eval-scores.png) ![tracker](https://evil.test/p.png)"
                     " ![inline](data:image/png;base64,AAAA)\n\n| metric | value |\n|---|---|\n| bpb | 1.2 |\n",
                     "/ui/jobs/job_1/figures/")
    assert shown.startswith('<pre><code class="language-yaml">license: mit\n</code></pre>\n')
    assert "<h1>Model &lt;script&gt;alert(1)&lt;/script&gt;</h1>" in shown
    assert "<script" not in shown and "<img src=x" not in shown and "&lt;img src=x onerror=alert(1)&gt;" in shown
    assert '<a href="https://example.org" rel="nofollow noopener noreferrer">home</a>' in shown
    assert 'href="javascript' not in shown and '<a href="#model">top</a>' in shown
    assert re.findall(r'<img src="([^"]+)"', shown) == ["/ui/jobs/job_1/figures/eval-scores.png"]  # no outside image
    assert "tracker" in shown and "<td>bpb</td>" in shown


def test_the_eval_reports_charts_are_inlined(tmp_path: Path) -> None:
    (tmp_path / "scores.png").write_bytes(PNG)
    report = tmp_path / "report.html"
    report.write_text("<h2>Scores</h2><p><img src='scores.png'></p><p><img src='probes.png'></p>")
    inlined = report_with_charts(report)
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in inlined
    assert "src='probes.png'" in inlined  # named but never drawn: left alone


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobpage")
    (root / "data").mkdir()
    server = LiveServer(root / "data")
    server.admin("tenant", "acme", "--spending-cap", "5")
    tokens = {"ann": server.admin("user", "ann", "--role", "customer", "--tenant", "acme"),
              "rita": server.admin("user", "rita", "--role", "reviewer", "--assign", "acme")}
    server.start()
    yield server, tokens, root
    server.stop()


def _submit(server: LiveServer, token: str, spec: Path) -> str:
    with server.client(token) as client:
        response = client.post("/v1/jobs", files={"file": ("q.tar.gz", tar_folder(spec.parent))}, data={"spec_path": spec.name})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@contextmanager
def _browser(server: LiveServer, token: str) -> Iterator[httpx.Client]:
    """A client holding a web session, as a browser would after logging in with `token`."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        client.get("/ui/login")
        response = client.post("/ui/login", data={"token": token, "csrf": client.cookies["distill_login_csrf"], "next": "/ui/"})
        assert response.status_code == 303, response.text
        yield client


def _shown_status(browser: httpx.Client, job_id: str) -> str:
    return re.search(r'id="job-status">([a-z_]+)<', browser.get(f"/ui/jobs/{job_id}/status").text).group(1)


def _events(client: httpx.Client, job_id: str) -> list[str]:
    return [e["message"] for e in client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["events"]]


@pytest.mark.slow
def test_a_released_jobs_page_shows_its_cap_cards_and_charts(live, tmp_path: Path) -> None:
    server, tokens, _ = live
    spec = small_spec(tmp_path / "spec", human=False)
    spec.write_text(spec.read_text().replace("teacher:\n", "teacher:\n  max_cost_usd: 1\n", 1)
                    .replace("\ndescription: ", f"\ndescription: {SCRIPT} [run](javascript:alert(1)) ", 1))
    job_id = _submit(server, tokens["ann"], spec)
    shown = set()
    with server.client(tokens["ann"]) as ann, _browser(server, tokens["ann"]) as browser:
        def finished() -> bool:  # each look: the events first, then the page, so the page is never older
            messages = _events(ann, job_id)
            status = _shown_status(browser, job_id)
            if "job started" in messages and not any(m.endswith(" started") and m != "job started" for m in messages):
                assert status != "queued", messages  # the worker has started: never "queued"
            shown.add(status)
            return status == "succeeded"

        wait_for(finished, 900, f"job {job_id} to succeed", every=0.1)
        assert "starting" in shown, shown
        page = browser.get(f"/ui/jobs/{job_id}").text
        report = browser.get(f"/ui/jobs/{job_id}/eval/report.html")

    cap = html.unescape(re.search(r'<dd id="spending-cap">(.*?)</dd>', page, re.S).group(1))
    assert "$1.00, the spec's teacher.max_cost_usd" in cap and "tenant's $5.00" in cap
    model_card = re.search(r'<details id="model-card">(.*?)</details>', page, re.S).group(1)
    assert '<div class="card"><pre><code class="language-yaml">license: ' in model_card  # Hugging Face's metadata
    assert "<h1>" in model_card and "<h2>" in model_card and "<table>" in model_card and "## " not in model_card
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in model_card and "<script>alert" not in page
    assert 'href="javascript' not in page
    figures = re.findall(r'<img src="(/ui/jobs/[^"]+/figures/[^"]+)"', model_card)
    assert figures
    with _browser(server, tokens["ann"]) as browser:
        for url in figures:
            image = browser.get(url)
            assert image.status_code == 200 and image.content.startswith(b"\x89PNG"), url
        assert browser.get(f"/ui/jobs/{job_id}/figures/..%2Fmanifest.json").status_code == 404
    assert '<details id="dataset-card">' in page and "<h1>" in page.split('id="dataset-card"')[1]

    assert report.status_code == 200
    policy = report.headers["content-security-policy"]
    assert "sandbox" in policy and "img-src data:" in policy and "'self'" not in policy
    images = re.findall(r"<img src=['\"]([^'\"]+)['\"]", report.text)
    assert images and all(src.startswith("data:image/png;base64,") for src in images), images


@pytest.mark.slow
def test_a_failed_job_names_the_stage_it_failed_in(live, tmp_path: Path) -> None:
    server, tokens, _ = live
    spec = small_spec(tmp_path / "spec", records=24)
    job_id = _submit(server, tokens["ann"], spec)
    with server.client(tokens["rita"]) as rita, _browser(server, tokens["ann"]) as browser:
        wait_status(rita, job_id, "awaiting_review", timeout=600)
        run_dir = next((server.data_dir / "jobs" / job_id).glob("runs/*/main"))
        (run_dir / "train").write_text("in the way")  # training cannot make its folder: it fails
        rita.post(f"/v1/jobs/{job_id}/review/bulk", json={"query": {"status": "pending"}, "decision": "reject",
                                                         "reason": "unclear"})
        assert rita.post(f"/v1/jobs/{job_id}/review/sample", json={"seed": 1}).status_code == 200
        signed = rita.post(f"/v1/jobs/{job_id}/review/signoff", json={"defective": []}).json()
        assert signed["accepted"], signed
        wait_for(lambda: job_status(rita, job_id)["status"] == "failed", 600, "training to fail")
        page = browser.get(f"/ui/jobs/{job_id}").text
    assert re.search(r'id="failed-stage">Failed in the train stage</strong>', page), page
    steps = dict(re.findall(r'<li class="(\w+)"[^>]*>(\w+)', page.split('aria-label="stages"')[1].split("</ol>")[0]))
    assert steps["failed"] == "training" and steps["done"] in ("awaiting_review", "reviewing", "queued")
    assert 'class="failed" aria-current="step">training <span class="why">(failed here)</span>' in page
    assert "$5.00, what was left of the tenant's cap at submission" in html.unescape(page)

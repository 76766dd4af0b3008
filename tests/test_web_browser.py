"""The web app in a real Chromium (Debian's, driven by Playwright) against the real `distill serve` on a
loopback port: a customer submits a spec with an error, sees it at its line, fixes it and watches the
job reach awaiting_review; a reviewer filters by a reason code, decides with the keyboard, undoes,
bulk-accepts by filter after seeing the count, and signs off; the customer watches the job finish and
downloads the bundle whose sha256 matches the page. Record text with <script> renders as text, and a
customer of another tenant sees none of it. Screenshots of each page land in the test's tmp folder."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import httpx
import pytest

from conftest import REPO
from service_live import LiveServer, tar_folder

pytestmark = [pytest.mark.browser, pytest.mark.slow]
playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SPEC = (Path(__file__).parent / "data" / "web" / "web.yaml").read_text()
PAGE_BUDGET = 200_000  # bytes of HTML + stylesheet + script, before reports and charts


def review_policy() -> str:
    """The general policy, made to need a person: emails flagged, a 3-record sample, no judge."""
    policy = (REPO / "safety" / "general.yaml").read_text()
    for old, new in [("name: general", "name: web-review"), ("auto_signoff: true", "auto_signoff: false"),
                     ("  enabled: true", "  enabled: false"), ("max_defect_rate: 0.05", "max_defect_rate: 0.9"),
                     ("sample_size: 60", "sample_size: 3"), ("  PII: redact", "  PII: flag")]:
        assert old in policy, old
        policy = policy.replace(old, new, 1)
    return policy


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    (root / "data").mkdir()
    server = LiveServer(root / "data")
    server.admin("tenant", "acme", "--dataset-download")
    server.admin("tenant", "other")
    tokens = {name: server.admin("user", name, *args) for name, args in {
        "ann": ("--role", "customer", "--tenant", "acme"), "bob": ("--role", "customer", "--tenant", "other"),
        "rita": ("--role", "reviewer", "--assign", "acme"), "root": ("--role", "admin")}.items()}
    spec_folder = root / "spec"
    spec_folder.mkdir()
    (spec_folder / "web.yaml").write_text(SPEC.replace("records: 24", "records: -24"))  # the customer's mistake
    (spec_folder / "policy.yaml").write_text(review_policy())
    (root / "spec.tar.gz").write_bytes(tar_folder(spec_folder))
    server.start()
    yield server, tokens, root
    server.stop()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Screens:
    """Screenshots of each page at 1280 px and at phone width, under the test's tmp folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, page, name: str, phone: bool = False) -> None:
        page.screenshot(path=str(self.folder / f"{name}.png"), full_page=True)
        if phone:
            size = page.viewport_size
            page.set_viewport_size({"width": 390, "height": 844})
            page.screenshot(path=str(self.folder / f"{name}-phone.png"), full_page=True)
            page.set_viewport_size(size)


def log_in(browser, server: LiveServer, token: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{server.url}/ui/")
    assert "/ui/login" in page.url  # no session: the login page
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/ui/")
    return page


def page_weight(page, server: LiveServer) -> int:
    """Bytes of the page's HTML, stylesheet and script (what every page loads)."""
    total = len(page.content().encode())
    for asset in ("/ui/static/app.css", "/ui/static/app.js"):
        total += len(page.request.get(server.url + asset).body())
    return total


def test_customer_submits_reviewer_signs_off_customer_downloads(live, browser, tmp_path) -> None:
    server, tokens, root = live
    screens = Screens(tmp_path / "screens")
    expect = playwright_api.expect

    # --- the customer: a spec with an error, shown at its line; fixed in the editor; submitted ---
    ann = log_in(browser, server, tokens["ann"])
    screens.take(ann, "jobs-empty")
    ann.get_by_role("link", name="Submit a spec").first.click()
    ann.get_by_label("Spec file or folder archive").set_input_files(str(root / "spec.tar.gz"))
    ann.get_by_label("Spec path inside the archive").fill("web.yaml")  # the folder also holds policy.yaml
    ann.get_by_role("button", name="Check").click()
    bad_line = SPEC.splitlines().index("records: 24") + 1
    marked = ann.locator("ol.listing li.bad")
    expect(marked).to_have_count(1)
    assert marked.get_attribute("id") == f"line-{bad_line}"
    expect(marked).to_contain_text("records: -24")
    expect(marked).to_contain_text(f"line {bad_line}")
    expect(marked).to_contain_text("must be > 0")
    screens.take(ann, "submit-problem", phone=True)
    editor = ann.get_by_label("Spec YAML")
    assert "records: -24" in editor.input_value()  # the archive's spec, ready to fix in place
    editor.fill(editor.input_value().replace("records: -24", "records: 24"))
    ann.get_by_role("button", name="Check").click()
    expect(ann.locator("#check-ok")).to_contain_text("plan estimate")
    expect(ann.locator("#estimate")).to_have_text("$0.00")
    ann.get_by_role("button", name="Submit").click()
    ann.wait_for_url(re.compile(r".*/ui/jobs/job_[0-9a-f]+$"))
    job_id = ann.url.rsplit("/", 1)[1]
    expect(ann.locator("#download")).to_be_disabled()
    expect(ann.locator("#job-status")).to_have_text("awaiting_review", timeout=240_000)  # live, over SSE
    expect(ann.locator("#events")).to_contain_text("waits for a reviewer's sign-off")
    assert ann.locator("#download").is_disabled()
    screens.take(ann, "job-awaiting-review", phone=True)

    # --- the reviewer: filter by reason code, decide with the keyboard, undo, bulk-accept, sign off ---
    rita = log_in(browser, server, tokens["rita"])
    expect(rita.locator("table.jobs")).to_contain_text(job_id)
    screens.take(rita, "review-queue")
    rita.goto(f"{server.url}/ui/jobs/{job_id}/review")
    rita.get_by_label("Reason code").select_option("pii.email")
    rita.get_by_role("button", name="Filter").click()
    flagged = int(rita.locator("#match-count").inner_text())
    assert flagged >= 3
    mark = rita.locator("#record-text mark")
    expect(mark).to_have_count(1)
    assert "@" in mark.inner_text() and "pii.email" in mark.get_attribute("title")
    screens.take(rita, "review-record", phone=True)
    first = rita.locator("#record-status")
    first_id = _record_id(rita)
    rita.keyboard.press("r")
    expect(rita.get_by_label("Reason to reject (Enter)")).to_be_focused()
    rita.keyboard.type("a real person's address")
    rita.keyboard.press("Enter")
    expect(rita.locator("#flash")).to_contain_text(f"record {first_id}: rejected")
    expect(first).to_have_text("rejected")
    screens.take(rita, "review-after-reject")
    rita.keyboard.press("j")  # the next flagged record
    rita.wait_for_url(re.compile(rf".*record=(?!{first_id}\b)\d+$"))
    second_id = _record_id(rita)
    assert second_id != first_id
    rita.keyboard.press("a")
    rita.keyboard.type("fine to keep")
    rita.keyboard.press("Enter")
    expect(rita.locator("#flash")).to_contain_text(f"record {second_id}: accepted")
    expect(rita.locator("#record-status")).to_have_text("kept")
    rita.keyboard.press("u")
    rita.keyboard.type("decide it with the others")
    rita.keyboard.press("Enter")
    expect(rita.locator("#flash")).to_contain_text(f"undone: your last action on record {second_id}")
    expect(rita.locator("#record-status")).to_have_text("pending")

    rita.get_by_label("Decision").select_option("flag")
    rita.get_by_role("button", name="Filter").click()
    rest = flagged - 1
    expect(rita.locator("#match-count")).to_have_text(str(rest))
    rita.get_by_role("link", name=f"Accept all {rest}…").click()
    expect(rita.locator("#bulk-form")).to_contain_text(f"Accept all {rest} records")
    screens.take(rita, "review-bulk-confirm")
    rita.get_by_label("Reason (for the audit log)").fill("addresses in wishes are fine here")
    rita.get_by_role("button", name=f"Confirm: accept {rest} records").click()
    expect(rita.locator("#flash")).to_contain_text(f"{rest} records: accepted")
    expect(rita.locator("#match-count")).to_have_text("0")

    # record text is teacher output: a <script> in it is shown, never run
    rita.goto(f"{server.url}/ui/jobs/{job_id}/review?q=script")
    text = rita.locator("#record-text")
    expect(text).to_contain_text("<script>document.title='pwned'</script>")
    assert text.locator("script").count() == 0 and rita.title() != "pwned"
    screens.take(rita, "review-script-as-text")

    rita.goto(f"{server.url}/ui/jobs/{job_id}/signoff")
    rita.get_by_role("button", name="Draw the sample").click()
    expect(rita.locator("#flash")).to_contain_text("drew 3 records")
    boxes = rita.get_by_role("checkbox")
    expect(boxes).to_have_count(3)
    boxes.first.check()
    rita.get_by_role("button", name="Show the bound").click()
    expect(rita.locator("#bound")).to_contain_text("1 defective of 3")
    expect(rita.locator("#bound")).to_contain_text("would be accepted")
    screens.take(rita, "signoff", phone=True)
    rita.get_by_role("button", name="Sign off with 1 defective").click()
    expect(rita.locator("#flash")).to_contain_text("sign-off accepted")
    rita.goto(f"{server.url}/ui/jobs/{job_id}/audit")
    expect(rita.locator("#chain")).to_contain_text("Hash chain verified")
    expect(rita.locator("table")).to_contain_text("a real person's address")
    screens.take(rita, "audit")

    # --- the customer watches the job finish and downloads the bundle ---
    expect(ann.locator("#job-status")).to_have_text("succeeded", timeout=300_000)
    expect(ann.locator("a#download")).to_be_visible()
    ann.reload()
    sha256 = ann.locator("#sha256").inner_text()
    with ann.expect_download() as download_info:
        ann.locator("a#download").click()
    saved = tmp_path / "bundle.tar.gz"
    download_info.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == sha256
    expect(ann.locator(".charts img").first).to_be_visible()
    screens.take(ann, "job-succeeded", phone=True)
    ann.goto(f"{server.url}/ui/")
    expect(ann.locator("table.jobs")).to_contain_text("succeeded")
    screens.take(ann, "jobs", phone=True)
    for page, path in ((ann, "/ui/"), (ann, f"/ui/jobs/{job_id}"), (rita, f"/ui/jobs/{job_id}/review"),
                       (rita, f"/ui/jobs/{job_id}/signoff"), (rita, f"/ui/jobs/{job_id}/audit")):
        page.goto(server.url + path)
        assert page_weight(page, server) < PAGE_BUDGET, path

    # --- a customer of another tenant sees none of it, page or download ---
    bob = log_in(browser, server, tokens["bob"])
    expect(bob.locator("main")).not_to_contain_text(job_id)
    for path in ("", "/review", "/signoff", "/audit", "/bundle", "/status", "/events/stream", "/eval/report.html",
                 "/cards/model"):
        response = bob.request.get(f"{server.url}/ui/jobs/{job_id}{path}")
        assert response.status == 404, path
        assert "web-stories" not in response.text() and "Hello." not in response.text(), path
    screens.take(bob, "other-tenant")

    admin = log_in(browser, server, tokens["root"])
    admin.get_by_role("link", name="Admin").click()
    admin.get_by_label("Cap for other ($)").fill("12.5")
    admin.get_by_label("Cap for other ($)").press("Enter")
    expect(admin.locator("#flash")).to_contain_text("spending cap $12.50")
    admin.get_by_role("button", name="New token for bob").click()
    new_token = admin.get_by_label("Token", exact=True).input_value()
    assert new_token.startswith("dst_")
    screens.take(admin, "admin", phone=True)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {new_token}"}) as client:
        assert client.get("/v1/me").json()["name"] == "bob"


def _record_id(page) -> int:
    return int(re.search(r"Record #(\d+)", page.locator("#record-h").inner_text()).group(1))


def test_sessions_cookies_and_csrf(live, browser) -> None:
    server, tokens, _ = live
    ann = log_in(browser, server, tokens["ann"])
    cookie = next(c for c in ann.context.cookies() if c["name"] == "distill_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]  # plain http on loopback
    assert cookie["value"] not in tokens.values()
    # a form post without the page's CSRF token is refused, even with the session cookie
    refused = ann.request.post(f"{server.url}/ui/submit", multipart={"spec_text": SPEC})
    assert refused.status == 403
    assert "CSRF" in refused.text()
    ann.get_by_role("button", name="Log out").click()
    ann.wait_for_url(re.compile(".*/ui/login"))
    assert ann.request.get(f"{server.url}/ui/", max_redirects=0).status == 303  # the session ended
    other = browser.new_context().new_page()
    other.goto(f"{server.url}/ui/login")
    other.get_by_label("API token").fill("dst_not-a-token")
    other.get_by_role("button", name="Log in").click()
    playwright_api.expect(other.locator(".error")).to_contain_text("unknown, revoked or malformed token")

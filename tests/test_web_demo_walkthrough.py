"""The demo's human-review job walked in a real Chromium (Debian's, driven by Playwright) against
`distill serve --demo`, as a new user would: the reviewer logs in with the printed token, opens the
pilot's review, filters, decides a record by keyboard, draws the sample (every kept record of the pilot)
and signs off with 0 defects under the policy's 5% limit; the customer logs in, watches the job finish
and downloads the bundle, which `distill verify` accepts.

Every page is photographed at 1280 px and at 390 px (a phone) into $DISTILL_SCREENSHOTS, or the test's
tmp folder, for a person to look at."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import REPO, run_distill
from service_live import free_port, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WIDTHS = {"desktop": 1280, "phone": 390}


class Demo:
    """`distill serve --demo` in a child process, with the tokens and job ids its banner prints."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "serve.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "distill", "serve", "--demo", "--port", str(self.port), "--data-dir", str(folder / "data")],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"), env={**os.environ, "PYTHONPATH": str(REPO)})
        wait_for(self._up, 120, "the demo server")
        banner = self.log.read_text()
        self.tokens = dict(re.findall(r"^\s+(demo-\w+)\s+(dst_\S+)$", banner, re.M))
        self.jobs = {name: job_id for name, job_id in re.findall(r"(tinystories-\w+) \((job_[0-9a-f]+)\)", banner)}

    def _up(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[who]}"}, timeout=60)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


class Screens:
    """Each page at desktop and phone width, the whole page, named in the order they were taken."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.count = 0
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, page, name: str) -> None:
        self.count += 1
        size = page.viewport_size
        for label, width in WIDTHS.items():
            page.set_viewport_size({"width": width, "height": 900 if width > 500 else 844})
            page.screenshot(path=str(self.folder / f"{self.count:02d}-{name}-{label}.png"), full_page=True)
        page.set_viewport_size(size)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def log_in(browser, demo: Demo, who: str, screens: Screens | None = None):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{demo.url}/")  # the server's root leads to the app, which asks for a token
    page.wait_for_url(re.compile(r".*/ui/login.*"))
    if screens:
        screens.take(page, "login")
    page.get_by_label("API token").fill(demo.tokens[who])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{demo.url}/ui/")
    return page


def test_the_demo_pilot_from_review_to_a_verified_download(tmp_path: Path, browser) -> None:
    screens = Screens(Path(os.environ.get("DISTILL_SCREENSHOTS") or tmp_path / "screens"))
    demo = Demo(tmp_path)
    try:
        _walk(demo, browser, screens, tmp_path)
    finally:
        demo.stop()


def _walk(demo: Demo, browser, screens: Screens, tmp_path: Path) -> None:
    pilot, quickstart = demo.jobs["tinystories-pilot"], demo.jobs["tinystories-quickstart"]
    with demo.api("demo-customer") as customer:
        # the quickstart trains for minutes on one job slot; this walk is about the pilot
        assert customer.post(f"/v1/jobs/{quickstart}/cancel").status_code == 200
        wait_for(lambda: customer.get(f"/v1/jobs/{pilot}").json()["status"] == "awaiting_review", 600,
                 "the pilot to wait for its review", every=0.5)
    with demo.api("demo-reviewer") as api:
        kept = api.get(f"/v1/jobs/{pilot}/records", params={"status": "kept", "limit": 500}).json()["total"]
    assert 18 <= kept <= 24, kept

    # --- the reviewer: the queue, the pilot's records, a filter, a decision by keyboard ---
    rita = log_in(browser, demo, "demo-reviewer", screens)
    expect(rita.locator("table.jobs")).to_contain_text(pilot)
    screens.take(rita, "review-queue")
    rita.goto(f"{demo.url}/ui/jobs/{pilot}")
    expect(rita.locator("#job-status")).to_have_text("awaiting_review")
    screens.take(rita, "job-awaiting-review")
    rita.get_by_role("link", name="Review records").click()
    rita.get_by_label("Status").select_option("kept")
    rita.get_by_role("button", name="Filter").click()
    expect(rita.locator("#match-count")).to_have_text(str(kept))
    rita.locator("ul.records li a").first.click()
    record = int(re.search(r"Record #(\d+)", rita.locator("#record-h").inner_text()).group(1))
    expect(rita.locator("#record-status")).to_have_text("kept")
    screens.take(rita, "review-record")
    rita.keyboard.press("r")
    expect(rita.get_by_label("Reason to reject (Enter)")).to_be_focused()
    rita.keyboard.type("the ending is too sad for ages 3-5")
    rita.keyboard.press("Enter")
    expect(rita.locator("#flash")).to_contain_text(f"record {record}: rejected")
    kept -= 1
    expect(rita.locator("#match-count")).to_have_text(str(kept))  # the filter still applies
    screens.take(rita, "review-after-decision")

    # --- the sample is every kept record: 0 defects is an exact 0%, within the 5% limit ---
    rita.goto(f"{demo.url}/ui/jobs/{pilot}/signoff")
    expect(rita.locator("main")).to_contain_text("Sample size: 300 (the policy's larger sample: no judge read")  # the policy's larger one
    rita.get_by_role("button", name="Draw the sample").click()
    expect(rita.locator("#flash")).to_contain_text(f"drew {kept} records")
    expect(rita.get_by_role("checkbox")).to_have_count(kept)
    rita.get_by_role("button", name="Show the bound").click()
    expect(rita.locator("#bound")).to_contain_text(f"0 defective of {kept}")
    expect(rita.locator("#bound")).to_contain_text("would be accepted")
    screens.take(rita, "signoff")
    rita.get_by_role("button", name="Sign off with 0 defective").click()
    expect(rita.locator("#flash")).to_contain_text("sign-off accepted")
    rita.goto(f"{demo.url}/ui/jobs/{pilot}/audit")
    expect(rita.locator("#chain")).to_contain_text("Hash chain verified")
    expect(rita.locator("table")).to_contain_text("the ending is too sad")
    screens.take(rita, "audit")

    # --- the customer: the job finishes live; the bundle downloads and verifies ---
    ann = log_in(browser, demo, "demo-customer")
    screens.take(ann, "jobs")
    ann.goto(f"{demo.url}/ui/jobs/{pilot}")
    expect(ann.locator("#job-status")).to_have_text("succeeded", timeout=900_000)
    ann.reload()
    sha256 = ann.locator("#sha256").inner_text()
    with ann.expect_download() as download_info:
        ann.locator("a#download").click()
    saved = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == sha256
    verified = run_distill("verify", saved, timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    _released_page_shows_its_documents(ann, demo, pilot, screens)
    _remaining_pages(browser, demo, ann, quickstart, screens)


def _released_page_shows_its_documents(ann, demo: Demo, job_id: str, screens: Screens) -> None:
    """Cards as HTML, the charts drawn (on the page and in the sandboxed full report)."""
    ann.locator("#model-card summary").click()
    ann.locator("#dataset-card summary").click()
    expect(ann.locator("#model-card .card h1").first).to_be_visible()
    expect(ann.locator("#model-card .card table").first).to_be_visible()
    for image in ann.locator(".charts img, #model-card .card img").all():
        image.scroll_into_view_if_needed()
        expect(image).to_be_visible()
        assert image.evaluate("img => img.complete && img.naturalWidth > 0"), image.get_attribute("src")
    screens.take(ann, "job-succeeded")
    ann.get_by_role("link", name="The full eval report").click()
    ann.wait_for_url(re.compile(r".*/eval/report\.html$"))
    images = ann.locator("img")
    assert images.count() >= 1
    for image in images.all():
        assert image.evaluate("img => img.complete && img.naturalWidth > 0"), "a chart of the report did not load"
    screens.take(ann, "eval-report")


def _remaining_pages(browser, demo: Demo, ann, cancelled: str, screens: Screens) -> None:
    """The pages the walk did not need, photographed too: submit, a cancelled job, a missing page, admin."""
    ann.goto(f"{demo.url}/ui/submit")
    screens.take(ann, "submit")
    ann.goto(f"{demo.url}/ui/jobs/{cancelled}")
    expect(ann.locator("#job-status")).to_have_text("cancelled")
    screens.take(ann, "job-cancelled")
    ann.goto(f"{demo.url}/ui/jobs/job_0000000000000000")
    screens.take(ann, "not-found")
    admin = log_in(browser, demo, "demo-admin")
    screens.take(admin, "admin-jobs")
    admin.get_by_role("link", name="Admin").click()
    screens.take(admin, "admin")

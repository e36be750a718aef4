"""The dashboard in a real browser: `email-automation dashboard` on 127.0.0.1, headless Chromium.

Leaves a screenshot in test-artifacts/dashboard.png for a person to look at.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from email_automation.database import utc_now
from email_automation.dashboard_data import Reports
from email_automation.reports import LOG_COLUMNS
from tests.conftest import _isolate, make_settings
from tests.test_reports import fill_database

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "test-artifacts" / "dashboard.png"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium")
if not CHROMIUM:
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
expect = sync_api.expect
# Every wait is on a condition (an element, a download), so a generous limit costs nothing when all
# is well and keeps a machine busy with other tests (xdist, CI neighbours) from failing the test.
WAIT_MS = 60_000
expect.set_options(timeout=WAIT_MS)


DONE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def open_tab(page, name: str, drawn_last: str) -> None:
    """Click a tab and wait until the run it starts (only the open tab runs) has finished: the
    text the tab draws last is shown, so the run got there, and the script is not running. (A
    quick run can end without the page ever marking it running, so that alone is no sign.)"""
    page.get_by_role("tab", name=name).click()
    expect(page.get_by_role("tabpanel").get_by_text(drawn_last).first).to_be_visible()
    expect(page.locator(DONE)).to_have_count(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the dashboard exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"the dashboard did not answer within {timeout}s:\n{log.read_text()}")


def stop(server: subprocess.Popen) -> None:
    """The CLI and its streamlit child share a new session: stop both, whatever state they are in."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """`email-automation dashboard --port N` with DASHBOARD_PASSWORD set, over a database filled by
    real runs up to now; started once for the module (both tests read it, only the second writes,
    to a campaign of its own). Yields (url, settings)."""
    folder = tmp_path_factory.mktemp("dashboard")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate(monkeypatch, folder)
        settings = make_settings(folder)
        fill_database(settings, utc_now())
        # The source tree first: the dashboard runs this checkout, whatever the venv's install says.
        env = dict(os.environ, TIMEZONE="Europe/Berlin", PYTHONPATH=str(REPO), DASHBOARD_PASSWORD="correct horse",
                   SENDER_EMAIL="jane@example.com")
    port = free_port()
    command = [str(Path(sys.executable).with_name("email-automation")), "dashboard",
               "--db", str(settings.db_path), "--port", str(port)]
    log = folder / "dashboard.log"
    with log.open("w") as out:
        server = subprocess.Popen(command, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, server, log)
        yield url, settings
    finally:
        stop(server)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module; each test opens its own page (its own Streamlit session)."""
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_page(browser):
    """Makes a page of the module's browser whose actions wait up to WAIT_MS, like its expectations."""
    pages = []

    def make(**options):
        page = browser.new_page(**options)
        page.set_default_timeout(WAIT_MS)
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.close()


def test_the_dashboard_shows_the_days_figures_in_chromium(dashboard, new_page):
    url, settings = dashboard
    reports = Reports(settings.db_path, settings)
    summary = reports.summary(reports.default_filter())
    assert summary.sent > 0 and summary.failed > 0

    page = new_page(viewport={"width": 1400, "height": 1100})
    page.goto(url)
    metrics = page.get_by_test_id("stMetric")
    expect(metrics.first).to_contain_text("Sent")
    expect(metrics.nth(0)).to_contain_text(str(summary.sent))
    expect(metrics.nth(1)).to_contain_text("Failed")
    expect(metrics.nth(1)).to_contain_text(str(summary.failed))
    chart = page.get_by_test_id("stVegaLiteChart").first
    expect(chart).to_be_visible()
    expect(chart.locator("canvas, svg").first).to_be_visible()  # drawn, before the picture
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    exported = Path(download.value.path()).read_text(encoding="utf-8-sig")
    assert SCREENSHOT.stat().st_size > 10_000
    header, *rows = list(csv.reader(io.StringIO(exported)))
    assert header == list(LOG_COLUMNS) and len(rows) == summary.total
    assert "Throttling: throttled" in [row[-1] for row in rows]
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)


def test_upload_a_csv_edit_a_template_and_see_the_preview_in_chromium(dashboard, new_page, tmp_path):
    url, settings = dashboard
    csv_file = tmp_path / "autumn.csv"
    csv_file.write_text("email,first_name,company\nzoe@example.org,Zoë,Zeta Labs\nbroken,Bob,Bank\n", encoding="utf-8")
    page = new_page(viewport={"width": 1400, "height": 1600})
    page.goto(url)
    page.get_by_role("tab", name="Admin").click()
    page.get_by_label("Dashboard password").fill("correct horse")
    page.get_by_role("button", name="Unlock").click()
    expect(page.get_by_text("Admin actions enabled")).to_be_visible()
    page.get_by_role("tab", name="Campaigns").click()
    page.get_by_label("Name").fill("autumn")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_text("Campaign 'autumn' created.")).to_be_visible()
    # The label, exactly: has_text would also match the Template box's "(the campaign's own)".
    page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Campaign", exact=True)).last.click()
    page.get_by_role("option", name="autumn").click()
    page.wait_for_selector(DONE)  # the choice reruns the page
    page.get_by_test_id("stFileUploader").first.locator("input[type=file]").set_input_files(str(csv_file))
    # The upload finishes in the background: Import before it lands would import nothing.
    expect(page.get_by_text("autumn.csv", exact=True)).to_be_visible()
    # A look at another tab (which runs only that tab) keeps the file chosen.
    open_tab(page, "Activity", "Send log")
    open_tab(page, "Campaigns", "for this campaign")
    # .first: until the tab's run ends, the picker drawn hidden in the last run may still show too.
    expect(page.get_by_text("autumn.csv", exact=True).first).to_be_visible()
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_text("autumn.csv: 1 added to campaign 'autumn'")).to_be_visible()
    expect(page.get_by_text("autumn.csv:3: 'email'")).to_be_visible()
    brochure = tmp_path / "brochure.txt"
    brochure.write_text("What we do.\n", encoding="utf-8")
    page.get_by_test_id("stFileUploader").last.locator("input[type=file]").set_input_files(str(brochure))
    expect(page.get_by_text("brochure.txt", exact=True)).to_be_visible()
    open_tab(page, "Replies", "Update an application")
    open_tab(page, "Campaigns", "for this campaign")
    page.get_by_role("button", name="Attach").click()
    expect(page.get_by_text("brochure.txt attached to every message of 'autumn'.")).to_be_visible()

    subject = page.get_by_label("Subject")
    subject.fill("Joining {{ company }}, {{ first_name }}?")
    subject.press("Control+Enter")  # submits the editor's form: Preview
    # Each preview reruns the page: the next edit waits until this one is shown.
    expect(page.get_by_text("Subject: Joining Zeta Labs, Zoë?")).to_be_visible()
    page.get_by_label("HTML body").fill("<p>Hello {{ first_name }} at {{ company }}</p>")
    # Typed and not yet previewed (it lives only in the browser): a look at another tab keeps it.
    open_tab(page, "Deliverability", "Suppression list")
    open_tab(page, "Campaigns", "for this campaign")
    expect(page.get_by_label("HTML body")).to_have_value("<p>Hello {{ first_name }} at {{ company }}</p>")
    page.get_by_label("HTML body").press("Control+Enter")
    expect(page.frame_locator("iframe").last.locator("body")).to_contain_text("Hello Zoë at Zeta Labs")
    page.get_by_role("button", name="Save template").click()
    expect(page.get_by_text("Template of 'autumn' saved.")).to_be_visible()
    # A follow-up step is added here too, without a terminal: the Step box then shows it.
    page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Step", exact=True)).click()
    page.get_by_role("option", name="+ new follow-up step").click()
    # The rerun's new form (its wait field), and that run over: text typed into the form drawn
    # before would be lost when the new one replaces it.
    expect(page.get_by_label("Wait: business days after step 1 was sent")).to_be_visible()
    expect(page.locator(DONE)).to_have_count(1)
    expect(page.get_by_label("HTML body")).to_have_value("")
    page.get_by_label("HTML body").fill("<p>Any news, {{ first_name }}?</p>")
    page.get_by_role("button", name="Add step").click()
    expect(page.get_by_text("Step 2 added to campaign 'autumn': 3 business day(s) after step 1.")).to_be_visible()
    expect(page.get_by_label("HTML body")).to_have_value("<p>Any news, {{ first_name }}?</p>")  # step 2's editor
    with closing_db(settings) as conn:
        assert conn.execute("SELECT subject_template FROM campaigns WHERE name = 'autumn'").fetchone()[0] == (
            "Joining {{ company }}, {{ first_name }}?")


def closing_db(settings):
    import contextlib
    import sqlite3

    return contextlib.closing(sqlite3.connect(settings.db_path))

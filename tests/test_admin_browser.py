"""The admin in a real browser: Debian's headless Chromium driven by Selenium, against a live
server, with the backfill walked by a real ``backfill worker`` process.

Log in, preview and start a run from the start page, watch the progress bar advance without
reloading, pause it and see it paused (and the worker stop writing), resume it and see it
complete with every row processed once; a failed run shows its traceback, and cancelling it
asks first. Screenshots of the overview, a running run and a failed run go to
``test-artifacts/``.

Chromium and ChromeDriver come from Debian (``apt-get install chromium chromium-driver``, as
``.ci/run`` does); nothing is downloaded. Without them the module is skipped, except in CI.
``BACKFILLS_TEST_BROWSER=0`` skips it (CI runs it once, in ``make test``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from backfills.models import BackfillPartition, BackfillRun
from blog.backfills import describe
from blog.models import Post
from tests.conftest import ROOT, child_env, manage, wait_for
from tests.testapp.models import Item

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "test-artifacts"
SEO = "blog.refresh_seo_descriptions"
POSTS = 4000
LATENCY_MS = 5  # per post: about 20 s for one worker, time to pause it midway under load

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.selenium_manager import SeleniumManager
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the test extra installs selenium
    webdriver = None

_missing = [
    what
    for what, ok in [
        ("selenium", webdriver is not None),
        (CHROMIUM, Path(CHROMIUM).exists()),
        (CHROMEDRIVER, Path(CHROMEDRIVER).exists()),
    ]
    if not ok
]
if os.environ.get("BACKFILLS_TEST_BROWSER") == "0":
    # .ci/run drives the browser once, in `make test`, not again on every database.
    pytest.skip("BACKFILLS_TEST_BROWSER=0", allow_module_level=True)
if _missing:
    reason = f"needs {', '.join(_missing)} (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        raise RuntimeError(f"The browser tests cannot run in CI: {reason}.")
    pytest.skip(reason, allow_module_level=True)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    """Headless Chromium, as root, with no network of its own (no background services)."""
    # Debian's chromium and chromedriver, given by path: Selenium Manager (which would
    # download a browser and a driver) must not run at all; offline if it ever did.
    monkeypatch.setenv("SE_OFFLINE", "true")

    def no_download(self: object, args: list[str]) -> dict[str, str]:
        raise AssertionError(f"Selenium Manager was asked for a driver: {args}")

    monkeypatch.setattr(SeleniumManager, "binary_paths", no_download)
    profile = tempfile.mkdtemp(prefix="bf-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A real ``backfill worker`` process: it drains the partitions of running runs. Its
    output goes to a file (a pipe nobody reads could fill and block it) and is printed at
    teardown, where pytest shows it if the test failed."""
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "django", "backfill", "worker", "--idle-poll", "0.2"],
            cwd=ROOT,
            env=child_env(DJANGO_SETTINGS_MODULE="tests.settings"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        yield process
    finally:
        process.terminate()  # hands its partition back after the current chunk
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(f"backfill worker (exit {process.returncode}):\n{log.read_text()}")


def wait(driver: WebDriver, seconds: float) -> WebDriverWait[WebDriver]:
    """A wait that looks again when the page reloaded under it (a run's page reloads when
    its run changes state) or an element is not there yet."""
    return WebDriverWait(
        driver,
        seconds,
        ignored_exceptions=[StaleElementReferenceException, NoSuchElementException],
    )


def shot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))


def log_in(driver: WebDriver, base: str) -> None:
    User.objects.create_superuser("ada", "ada@example.com", "lovelace")
    driver.get(f"{base}/admin/login/?next=/admin/backfills/")
    driver.find_element(By.ID, "id_username").send_keys("ada")
    driver.find_element(By.ID, "id_password").send_keys("lovelace")
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait(driver, 15).until(ec.presence_of_element_located((By.ID, "bf-overview")))


def text(driver: WebDriver, selector: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, selector).text)


def progress(driver: WebDriver) -> float:
    value = driver.find_element(By.ID, "bf-progress").get_attribute("value")
    return float(value or 0)


def settled(state: str) -> Any:
    """The run's page as served in *state*: the script writes a new state into #bf-state
    first and reloads the page after, so the text alone may still be the old page's."""

    def check(driver: WebDriver) -> bool:
        served = driver.find_element(By.ID, "bf-run").get_attribute("data-bf-state")
        return served == state and text(driver, "#bf-state") == state

    return check


def described(expected: dict[int, str]) -> int:
    """How many posts hold the description the backfill computes for them."""
    rows = Post.objects.values_list("id", "seo_description")
    return sum(description == expected[pk] for pk, description in rows)


def fill(driver: WebDriver, **values: str) -> None:
    form = driver.find_element(By.ID, "bf-start-form")
    for name, value in values.items():
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)


def actions(driver: WebDriver) -> list[tuple[str, str]]:
    """(action, by) of each row of the run page's actions log."""
    rows = driver.find_elements(By.CSS_SELECTOR, "#bf-actions tbody tr")
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    return [(c[1], c[2]) for c in cells if len(c) >= 3]


def test_start_watch_pause_resume_and_complete_a_run(
    live_server: Any, browser: WebDriver, worker: subprocess.Popen[str]
) -> None:
    call_command("seed_posts", count=POSTS, verbosity=0)
    # What the backfill writes into each post; the seeded descriptions differ from it.
    expected = {
        pk: describe(title, body, 0)
        for pk, title, body in Post.objects.values_list("id", "title", "body")
    }
    assert described(expected) == 0
    base = live_server.url
    log_in(browser, base)
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-backfill="{SEO}"]')
    assert row.find_element(By.CSS_SELECTOR, ".bf-state").text == "never run"

    # Start: a form from the backfill's typed parameters. A preview first (a dry run of 3
    # chunks of 100 rows, rolled back, about 1 s at this latency), then the run itself, which
    # goes to the worker.
    row.find_element(By.CSS_SELECTOR, "a.bf-start-link").click()
    assert browser.find_element(By.NAME, "latency_ms").get_attribute("id") == "id_latency_ms"
    fill(browser, latency_ms=str(LATENCY_MS), workers="1")
    browser.find_element(By.CSS_SELECTOR, "#bf-start-form button[name=preview]").click()
    preview = wait(browser, 30).until(ec.presence_of_element_located((By.ID, "bf-preview")))
    assert "Dry run" in preview.text and "seo_description" in preview.text
    assert not BackfillRun.objects.exists()
    assert described(expected) == 0  # rolled back
    fill(browser, latency_ms=str(LATENCY_MS), workers="1")
    browser.find_element(By.CSS_SELECTOR, "#bf-start-form button[name=start]").click()
    page = wait(browser, 15).until(ec.presence_of_element_located((By.ID, "bf-run")))
    run = BackfillRun.objects.get(name=SEO)
    assert page.get_attribute("data-run-id") == str(run.pk)
    assert run.parallel and run.workers == 1 and run.started_by == "ada"
    assert run.parameters == {"latency_ms": float(LATENCY_MS)}

    # The bar advances with no reload: the page's script refreshes its figures.
    wait(browser, 30).until(lambda d: progress(d) > 0)
    first = progress(browser)
    browser.execute_script("window.bfMarker = 1")  # gone if the page reloads
    wait(browser, 30).until(lambda d: progress(d) > first)
    assert browser.execute_script("return window.bfMarker") == 1
    assert progress(browser) < 100
    # Wait for a second sample so the charts have a line to draw.
    wait(browser, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#bf-chart-throughput polyline")
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#bf-chart-chunks svg")
    assert browser.find_elements(By.CSS_SELECTOR, "#bf-cancel button")
    shot(browser, "admin-run-running.png")

    # The overview shows it running, and refreshes its bar in place too.
    browser.get(f"{base}/admin/backfills/")
    row_bar = f'tr[data-backfill="{SEO}"] progress.bf-progress'
    shown = float(browser.find_element(By.CSS_SELECTOR, row_bar).get_attribute("value") or 0)
    wait(browser, 30).until(
        lambda d: (
            float(d.find_element(By.CSS_SELECTOR, row_bar).get_attribute("value") or 0) > shown
        )
    )
    assert text(browser, f'tr[data-backfill="{SEO}"] .bf-state') == "running"
    shot(browser, "admin-index.png")
    browser.find_element(By.CSS_SELECTOR, f'tr[data-backfill="{SEO}"] a.bf-run-link').click()
    wait(browser, 15).until(ec.presence_of_element_located((By.ID, "bf-pause")))

    # Pause: the page shows it, and the worker stops writing.
    browser.find_element(By.CSS_SELECTOR, "#bf-pause button").click()
    wait(browser, 20).until(settled("paused"))
    assert browser.find_element(By.ID, "bf-resume")
    assert not browser.find_elements(By.ID, "bf-pause")
    wait_for(
        lambda: not BackfillPartition.objects.filter(run=run, state="running").exists(),
        timeout=20,
    )
    paused = BackfillRun.objects.get(pk=run.pk)
    assert paused.state == "paused" and 0 < paused.rows_scanned < POSTS
    # Nothing to wait for proves a negative: give the worker, still alive and polling every
    # 0.2 s, a second to (not) go on.
    time.sleep(1)
    assert worker.poll() is None
    assert BackfillRun.objects.get(pk=run.pk).rows_scanned == paused.rows_scanned
    scanned = sum(p.rows_scanned for p in BackfillPartition.objects.filter(run=run))
    assert scanned == paused.rows_scanned

    # Resume: the worker claims the partitions again and the run completes.
    browser.find_element(By.CSS_SELECTOR, "#bf-resume button").click()
    wait(browser, 90).until(settled("completed"))
    assert progress(browser) == 100
    done = BackfillRun.objects.get(pk=run.pk)
    assert done.state == "completed"
    # Every post walked and written once, and each holds what the backfill computes for it.
    assert (done.rows_scanned, done.rows_processed, done.rows_failed) == (POSTS, POSTS, 0)
    parts = BackfillPartition.objects.filter(run=run)
    assert sum(p.rows_scanned for p in parts) == sum(p.rows_processed for p in parts) == POSTS
    assert described(expected) == POSTS
    logged = actions(browser)
    for verb in ("start", "pause", "resume"):
        assert (verb, "ada") in logged, logged


def test_a_failed_run_shows_its_traceback(live_server: Any, browser: WebDriver) -> None:
    Item.objects.bulk_create([Item(note="boom" if i == 25 else "") for i in range(60)])
    code, _, err = manage(["backfill", "run", "testapp.count_items", "--no-input"], "tests")
    assert code != 0, err
    run = BackfillRun.objects.get(name="testapp.count_items")
    assert run.state == "failed"
    log_in(browser, live_server.url)
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-backfill="testapp.count_items"]')
    assert row.find_element(By.CSS_SELECTOR, ".bf-state").text == "failed"
    row.find_element(By.CSS_SELECTOR, "a.bf-run-link").click()
    traceback = wait(browser, 15).until(ec.presence_of_element_located((By.ID, "bf-traceback")))
    assert "Traceback (most recent call last)" in traceback.text
    assert "note is 'boom'" in traceback.text
    assert text(browser, "#bf-state") == "failed"
    assert browser.find_element(By.ID, "bf-run").get_attribute("data-run-id") == str(run.pk)
    # A failed serial run is resumed by a process, not from here; it may be cancelled.
    assert not browser.find_elements(By.CSS_SELECTOR, "#bf-pause, #bf-resume")
    shot(browser, "admin-run-failed.png")

    # Cancel asks first; going back leaves the run as it was.
    browser.find_element(By.CSS_SELECTOR, "#bf-cancel button").click()
    confirm = wait(browser, 15).until(ec.presence_of_element_located((By.ID, "bf-cancel-confirm")))
    assert f"run #{run.pk}" in browser.find_element(By.ID, "content").text
    confirm.find_element(By.CSS_SELECTOR, "a.cancel-link").click()
    wait(browser, 15).until(settled("failed"))
    assert BackfillRun.objects.get(pk=run.pk).state == "failed"

"""The admin in a real browser: Debian's headless Chromium driven by Selenium, against a live
server, with the backfill walked by a real ``backfill worker`` process.

Log in, start a run from the start page, watch the progress bar advance without reloading,
pause it and see it paused (and the worker stop writing), resume it and see it complete with
every row processed once; a failed run shows its traceback. Screenshots of the overview, a
running run and a failed run go to ``test-artifacts/``.

Chromium and ChromeDriver come from Debian (``apt-get install chromium chromium-driver``, as
``.ci/run`` does); nothing is downloaded. Without them the module is skipped, except in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from backfills.models import BackfillPartition, BackfillRun
from blog.models import Post
from tests.conftest import ROOT, manage, start_manage, wait_for
from tests.testapp.models import Item

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "test-artifacts"
SEO = "blog.refresh_seo_descriptions"
POSTS = 3000

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
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
if _missing:
    reason = f"needs {', '.join(_missing)} (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        raise RuntimeError(f"The browser tests cannot run in CI: {reason}.")
    pytest.skip(reason, allow_module_level=True)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless Chromium, as root, with no network of its own (no background services)."""
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download
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
        "--window-size=1400,1100",
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
def worker() -> Iterator[subprocess.Popen[str]]:
    """A real ``backfill worker`` process: it drains the partitions of running runs."""
    process = start_manage(["backfill", "worker", "--idle-poll", "0.2"], "tests")
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


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


def state_is(state: str) -> Any:
    return lambda driver: text(driver, "#bf-state") == state


def test_start_watch_pause_resume_and_complete_a_run(
    live_server: Any, browser: WebDriver, worker: subprocess.Popen[str]
) -> None:
    call_command("seed_posts", count=POSTS, verbosity=0)
    base = live_server.url
    log_in(browser, base)
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-backfill="{SEO}"]')
    assert row.find_element(By.CSS_SELECTOR, ".bf-state").text == "never run"

    # Start: a form from the backfill's typed parameters; the run goes to the worker.
    row.find_element(By.CSS_SELECTOR, "a.bf-start-link").click()
    latency = browser.find_element(By.ID, "id_latency_ms")
    latency.clear()
    latency.send_keys("3")
    browser.find_element(By.CSS_SELECTOR, "button[name=start]").click()
    wait(browser, 15).until(ec.presence_of_element_located((By.ID, "bf-run")))
    run = BackfillRun.objects.get(name=SEO)
    assert run.parallel and run.parameters == {"latency_ms": 3.0} and run.started_by == "ada"

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
    shot(browser, "admin-run-running.png")

    # The overview shows it running, and refreshes its bar in place too.
    browser.get(f"{base}/admin/backfills/")
    row_bar = f'tr[data-backfill="{SEO}"] progress'
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
    wait(browser, 20).until(state_is("paused"))
    wait_for(
        lambda: not BackfillPartition.objects.filter(run=run, state="running").exists(),
        timeout=20,
    )
    paused = BackfillRun.objects.get(pk=run.pk)
    assert paused.state == "paused" and 0 < paused.rows_scanned < POSTS
    still = browser.find_element(By.ID, "bf-rows").text
    wait(browser, 10).until(lambda d: d.find_element(By.ID, "bf-resume"))
    assert BackfillRun.objects.get(pk=run.pk).rows_scanned == paused.rows_scanned
    assert browser.find_element(By.ID, "bf-rows").text == still

    # Resume: the worker claims the partitions again and the run completes.
    browser.find_element(By.CSS_SELECTOR, "#bf-resume button").click()
    wait(browser, 90).until(state_is("completed"))
    assert progress(browser) == 100
    done = BackfillRun.objects.get(pk=run.pk)
    assert done.state == "completed"
    assert (done.rows_scanned, done.rows_processed) == (POSTS, POSTS)
    assert not Post.objects.filter(seo_description="").exists()
    actions = text(browser, "#bf-actions")
    for verb in ("start", "pause", "resume"):
        assert any(line.split()[2:4] == [verb, "ada"] for line in actions.splitlines()), (
            verb,
            actions,
        )


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
    shot(browser, "admin-run-failed.png")

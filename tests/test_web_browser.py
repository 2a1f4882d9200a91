"""A rating link opened in a real headless Chromium: the page records itself, Undo undoes it.

Uses Debian's chromium and chromium-driver; skipped when they are not installed. Set
PAPER_DIGEST_SCREENSHOTS=DIR to also save each page at 800 and 400 px wide, light and dark.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_web import NOW, PAPER, WATCHLIST, altered, link, make_settings, ratings

from digest.sources.base import SourceState
from digest.store import Store
from digest.web.server import BackgroundServer, start_in_background

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_SECONDS = 15

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
                       reason="needs Debian's chromium and chromium-driver "
                              "(apt-get install chromium chromium-driver)"),
]

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extras")
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Any, BackgroundServer]]:
    settings = make_settings(tmp_path)
    with Store.open(settings.store.path) as store:
        store.record_batch("arxiv-cs", [PAPER], SourceState(), NOW)
    server = start_in_background(settings, now=lambda: NOW)
    try:
        yield settings, server
    finally:
        server.stop()


@pytest.fixture
def open_browser(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    drivers: list[Any] = []

    def start(*, javascript: bool = True, width: int = 800) -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--window-size={width},900",
                     f"--user-data-dir={tmp_path / f'profile-{len(drivers)}'}"):
            options.add_argument(flag)
        if not javascript:
            options.add_experimental_option(
                "prefs", {"profile.managed_default_content_settings.javascript": 2})
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # An explicit driver path: selenium never looks for, or downloads, a driver itself.
        service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
        driver = webdriver.Chrome(options=options, service=service)
        driver.set_page_load_timeout(WAIT_SECONDS)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


def heading(driver: Any, starts: str) -> str:
    """The page's outcome heading, once a page whose heading starts with ``starts`` is up."""
    def found(d: Any) -> str | bool:
        elements = d.find_elements(By.ID, "outcome")
        try:
            text = elements[0].text if elements else ""
        except WebDriverException as exc:  # Chrome's own words for a node gone stale
            if "does not belong to the document" not in str(exc):
                raise
            return False
        return text if text.startswith(starts) else False

    # The page before may still be there, and go stale while it is read: look again.
    waiting = WebDriverWait(driver, WAIT_SECONDS,
                            ignored_exceptions=(StaleElementReferenceException,))
    return str(waiting.until(found))


def csp_complaints(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"]]


def screenshot(driver: Any, name: str, width: int) -> None:
    """Save the page as a phone or a desktop shows it, light and dark, when asked to."""
    folder = os.environ.get("PAPER_DIGEST_SCREENSHOTS")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    # Headless windows have a minimum width; the emulated viewport does not.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": 720, "deviceScaleFactor": 1, "mobile": width < 600})
    for scheme in ("light", "dark"):
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": scheme}]})
        driver.save_screenshot(str(Path(folder) / f"{name}-{width}-{scheme}.png"))
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


@pytest.mark.parametrize("width", [800, 400])
def test_a_rating_link_records_by_itself_and_undo_undoes_it(site, open_browser, width):
    settings, server = site
    driver = open_browser(width=width)
    driver.get(server.url + link("like"))
    recorded = heading(driver, "Recorded")
    assert recorded == f"Recorded: more like this for watchlist {WATCHLIST}"
    assert ratings(settings) == [(WATCHLIST, PAPER.key, "reader@example.org", "like", "web")]
    assert driver.find_element(By.CSS_SELECTOR, ".paper a").get_attribute("href") == (
        "https://arxiv.org/abs/2611.04001")
    screenshot(driver, "recorded", width)

    driver.find_element(By.ID, "undo").click()
    assert heading(driver, "Undone") == "Undone"
    assert f"In force now for watchlist {WATCHLIST}: no rating." in driver.page_source.replace(
        "<strong>", "").replace("</strong>", "")
    assert ratings(settings) == []
    screenshot(driver, "undone", width)
    assert csp_complaints(driver) == []


def test_coming_back_to_the_link_in_the_same_tab_does_not_record_again(site, open_browser):
    settings, server = site
    driver = open_browser()
    driver.get(server.url + link("dislike"))
    heading(driver, "Recorded")
    driver.find_element(By.ID, "undo").click()
    heading(driver, "Undone")
    driver.get(server.url + link("dislike"))  # e.g. the back button, or the link again
    button = WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#record button"))
    with pytest.raises(TimeoutException):  # the page stays put: it does not post again
        WebDriverWait(driver, 1.5).until(lambda d: d.find_elements(By.ID, "outcome"))
    assert ratings(settings) == []
    button[0].click()  # a deliberate click still records
    assert heading(driver, "Recorded").startswith("Recorded: not for me")
    assert len(ratings(settings)) == 1


def test_without_javascript_the_button_records(site, open_browser):
    settings, server = site
    driver = open_browser(javascript=False, width=400)
    driver.get(server.url + link("save"))
    button = driver.find_element(By.CSS_SELECTOR, "#record button")
    assert ratings(settings) == []  # the page alone records nothing without scripts
    screenshot(driver, "confirm", 400)
    screenshot(driver, "confirm", 800)
    button.click()
    assert heading(driver, "Recorded").startswith("Recorded: saved")
    assert ratings(settings)[0][3] == "save"


def test_an_altered_link_shows_why_and_records_nothing(site, open_browser):
    settings, server = site
    driver = open_browser(width=400)
    driver.get(server.url + altered(link("like")))
    assert heading(driver, "This link is not valid")
    assert ratings(settings) == []
    screenshot(driver, "invalid", 400)

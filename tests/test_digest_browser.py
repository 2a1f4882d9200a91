"""A digest email opened in a real headless Chromium: it lays out at 800 and 400 px, its
contents list reaches every entry, and its text meets WCAG AA contrast, light and dark.

Uses Debian's chromium and chromium-driver; skipped when they are not installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_render import full_digest

from digest.render import Renderer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
AA_NORMAL_TEXT = 4.5

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
                       reason="needs Debian's chromium and chromium-driver "
                              "(apt-get install chromium chromium-driver)"),
]

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extras")

# Every element with text of its own: its text, its colour, and the colour it sits on (the
# nearest ancestor that paints a background), as the browser computed them.
TEXT_COLOURS = """
const out = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const node = walker.currentNode;
  if (!node.textContent.trim()) continue;
  const element = node.parentElement;
  let back = element;
  while (back && ['rgba(0, 0, 0, 0)', 'transparent'].includes(
      getComputedStyle(back).backgroundColor)) back = back.parentElement;
  out.push([node.textContent.trim().slice(0, 40), getComputedStyle(element).color,
            back ? getComputedStyle(back).backgroundColor : 'rgb(255, 255, 255)']);
}
return out;
"""


def _channel(value: float) -> float:
    value /= 255
    return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4


def luminance(rgb: str) -> float:
    parts = [float(x) for x in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3]]
    red, green, blue = (_channel(x) for x in parts)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast(foreground: str, background: str) -> float:
    light, dark = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


@pytest.fixture
def page(tmp_path: Path) -> Path:
    _, html = Renderer().email(full_digest(), subject="efficient-llms: 2 new papers")
    path = tmp_path / "digest.html"
    path.write_text(html, encoding="utf-8")
    return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Callable[[Path, int, str], Any]]:
    drivers: list[Any] = []

    def open_page(path: Path, width: int, scheme: str) -> Any:
        if not drivers:
            options = webdriver.ChromeOptions()
            options.binary_location = str(CHROMIUM)
            for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--disable-dev-shm-usage", "--window-size=800,900",
                         f"--user-data-dir={tmp_path / 'profile'}"):
                options.add_argument(flag)
            # An explicit driver path: selenium never looks for, or downloads, a driver.
            service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
            drivers.append(webdriver.Chrome(options=options, service=service))
        driver = drivers[0]
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600})
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": scheme}]})
        driver.get(path.as_uri())
        return driver

    yield open_page
    for driver in drivers:
        driver.quit()


@pytest.mark.parametrize("width", [800, 400])
def test_the_digest_lays_out_in_the_browser(page, browser, width):
    driver = browser(page, width, "light")
    # nothing wider than the screen: no sideways scrolling on a phone
    assert driver.execute_script("return document.documentElement.scrollWidth") <= width
    card = driver.execute_script(
        "return document.querySelector('.card').getBoundingClientRect().width")
    assert card <= 682  # 680 px and its border at most, however wide the window
    papers = driver.execute_script("return document.querySelectorAll('td.paper').length")
    assert papers == 2
    # each contents entry reaches the paper it names
    targets = driver.execute_script("""
        return [...document.querySelectorAll('a[href^="#"]')].map(a => {
          const target = document.getElementById(a.getAttribute('href').slice(1));
          return [a.textContent, target ? target.querySelector('.t').textContent : null];
        });""")
    assert [(name, found.split(". ", 1)[1]) for name, found in targets] == [
        (name, name) for name, _ in targets]
    rows = driver.execute_script(
        "return [...document.querySelectorAll('.l')].map(row => row.innerText)")
    assert rows[0].startswith("Abstract · PDF · HTML · Hugging Face · Code (★ 1,284) · "
                              "Project page")
    assert "More like this · Not for me · Save" in rows[0]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_meets_wcag_aa_contrast(page, browser, scheme):
    driver = browser(page, 800, scheme)
    found = driver.execute_script(TEXT_COLOURS)
    assert len(found) > 30
    poor = [(text, fg, bg, round(contrast(fg, bg), 2)) for text, fg, bg in found
            if contrast(fg, bg) < AA_NORMAL_TEXT]
    assert poor == []
    card = driver.execute_script(
        "return getComputedStyle(document.querySelector('.card')).backgroundColor")
    assert (luminance(card) < 0.05) is (scheme == "dark")

"""Render the demo's email digests and save each as headless Chromium shows it, 800 and
400 px wide, light and dark, for a person to look at. `make screenshots` runs it.

Uses Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) and
selenium from the test extras. The demo runs in a scratch copy of config/, with rating
links on and a short max_papers for one watchlist, so that every part of a digest shows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDTHS = (800, 400)
SCHEMES = ("light", "dark")
SECRET_ENV = "PAPER_DIGEST_SCREENSHOT_KEY"
# What the scratch config adds to the demo: rating links, and a cut digest ("2 more").
WEB = f"""
[web]
base_url = "https://papers.example.org/digest"
secret_env = "{SECRET_ENV}"
"""


def demo_digests(workdir: Path) -> list[Path]:
    """Run the demo in ``workdir`` and return the HTML previews the outbox holds."""
    from digest.cli import main  # the checkout's package, as `make` installs it

    shutil.copytree(ROOT / "config", workdir / "config")
    config = workdir / "config" / "demo.toml"
    text = config.read_text(encoding="utf-8")
    text = text.replace('name = "efficient-llms"\n', 'name = "efficient-llms"\nmax_papers = 6\n',
                        1)
    config.write_text(text + WEB, encoding="utf-8")
    os.environ.setdefault(SECRET_ENV, "screenshots-only-" + "k" * 32)
    here = Path.cwd()
    os.chdir(workdir)
    try:
        status = main(["run", "--once", "--config", "config/demo.toml", "--outbox", "outbox"])
    finally:
        os.chdir(here)
    if status != 0:
        raise SystemExit(f"the demo run failed (exit {status})")
    return sorted((workdir / "outbox").glob("*.html"))


def start_chromium(profile: Path) -> Any:
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
                 "--window-size=800,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver path: selenium never looks for, or downloads, a driver itself.
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    return webdriver.Chrome(options=options, service=service)


def capture(driver: Any, page: Path, folder: Path) -> list[Path]:
    """The whole page at each width and colour scheme, as PNG files in ``folder``."""
    driver.get(page.as_uri())
    saved = []
    for width in WIDTHS:
        for scheme in SCHEMES:
            driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
                "features": [{"name": "prefers-color-scheme", "value": scheme}]})
            # Headless windows have a minimum width; an emulated viewport does not.
            metrics = {"width": width, "height": 800, "deviceScaleFactor": 1,
                       "mobile": width < 600}
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {**metrics, "height": int(height)})
            path = folder / f"{page.stem}-{width}-{scheme}.png"
            driver.save_screenshot(str(path))
            saved.append(path)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots",
                        help="folder for the PNG files (default: screenshots/)")
    args = parser.parse_args(argv)
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        print("needs Debian's chromium and chromium-driver: "
              "apt-get install chromium chromium-driver", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="paper-digest-shots-") as scratch:
        pages = demo_digests(Path(scratch))
        driver = start_chromium(Path(scratch) / "profile")
        try:
            for page in pages:
                for path in capture(driver, page, args.out):
                    print(path)
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())

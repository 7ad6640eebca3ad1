"""Headless Chromium for the playground tests: Debian's chromium + chromium-driver, driven by
selenium. `make install` apt-installs them; a run without them tries that once (``make browser``)
and otherwise skips, saying why. Then small helpers to drive a page."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, DRIVER = "chromium", "chromedriver"

# What a test browser needs: no sandbox (root in CI containers), no GPU, and nothing that phones
# home (the machine is offline; a stalled update check would only slow the tests down).
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900"]


def _missing() -> list[str]:
    return [name for name in (CHROMIUM, DRIVER) if shutil.which(name) is None]


def require_chromium() -> tuple[str, str]:
    """Paths of chromium and chromedriver, installing them if this machine can."""
    if _missing() and shutil.which("make"):
        subprocess.run(["make", "-s", "browser"], cwd=ROOT, check=False, timeout=900)
    missing = _missing()
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed and apt-get could not install them "
                    "(needs root or passwordless sudo): apt-get install chromium chromium-driver")
    return shutil.which(CHROMIUM), shutil.which(DRIVER)


def start_browser(download_dir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='slmkit-chromium-')}")
    options.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(driver))
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return browser


# -- driving a page ---------------------------------------------------------------------------
def by_id(d, element_id):
    from selenium.webdriver.common.by import By

    return d.find_element(By.ID, element_id)


def css(d, selector):
    from selenium.webdriver.common.by import By

    return d.find_elements(By.CSS_SELECTOR, selector)


def wait_for(condition, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def set_field(d, element_id, value):
    field = by_id(d, element_id)
    field.clear()
    if value != "":
        field.send_keys(str(value))


def pick(d, select_id, value):
    from selenium.webdriver.support.ui import Select

    Select(by_id(d, select_id)).select_by_value(value)

"""A headless Chromium driven by Selenium, for scripted views of the dashboard (the page tests and
bench_dashboard use it; e.g. to time or screenshot a view in CI).

Needs the ``chromium`` (or ``chromium-browser``) and ``chromedriver`` executables on the PATH
(Debian: ``apt-get install chromium chromium-driver``) and the ``selenium`` package; without them
:func:`headless_chromium` returns None. Selenium Manager is kept offline: the installed driver is used.
"""
from __future__ import annotations

import os
import shutil

__all__ = ["headless_chromium"]


def headless_chromium(console_log: bool = False):
    """A ``selenium.webdriver.Chrome`` running headless at 1280 x 1000, or None where Chromium, its
    driver or Selenium is not installed. ``console_log``: keep the page's console messages
    (``driver.get_log("browser")``). The caller quits it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        return None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager never goes to the network
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
              "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(a)
    if console_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)

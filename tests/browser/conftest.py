"""A real browser on a live server: Debian's Chromium driven by Selenium, the app under uvicorn.

The browser and its driver are Debian's (`.ci/install-system`); Selenium is given both paths,
so Selenium Manager never looks for, let alone downloads, a browser. A missing browser fails the
tests: it never skips them. The server runs on a PostgreSQL database of its own, seeded through
the real services with two settled days, once per module (settling takes seconds); each test
signs in fresh users in a fresh browser (a TOTP code is good once).

The session cookie is Secure: Chromium keeps it over http://localhost, which it treats as a
secure context, so the server speaks plain HTTP on the loopback (tested by every sign-in).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy.engine import make_url

from clearing.app.factory import create_app
from tests.conftest import _Databases
from tests.reports.console_support import ConsoleLogin
from tests.reports.finance_support import settle_two_days
from tests.settlement.settlement_world import Days, settlement_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).parents[2] / "test-artifacts" / "screenshots"
"""Where the tests leave a PNG of each main page (a CI artefact; not committed)."""
WAIT = 15.0
"""Seconds a page may take to come (a chart is drawn on first request)."""


@dataclass
class Live:
    """The app served over HTTP, and what was settled on its database."""

    app: FastAPI
    base_url: str
    days: Days


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def browser_db_url(pg_admin_url: str, _pg_databases: _Databases) -> Iterator[str]:
    """A fresh PostgreSQL database for a module's server (browser tests run on PostgreSQL)."""
    name = _pg_databases.take()
    try:
        yield make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _pg_databases.drop(name)


@pytest.fixture(scope="module")
def live(browser_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """uvicorn serving the real app (API and console) on 127.0.0.1, in a thread of this process."""
    app = create_app(settlement_settings(browser_db_url, tmp_path_factory.mktemp("live")))
    days = settle_two_days(app)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    try:
        yield Live(app, f"http://localhost:{port}", days)
    finally:
        server.should_exit = True
        thread.join(timeout=WAIT)
        app.state.engine.dispose()


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    """Where the browser saves what it downloads."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


Browser = Callable[[], WebDriver]


@pytest.fixture
def new_chrome(downloads: Path) -> Iterator[Browser]:
    """Opens headless Chromiums, each with a fresh profile (its own cookies); quits them after."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        assert binary.is_file(), f"{binary} is missing: run `bash .ci/install-system`"
    # Belt and braces: even if a path were missing, Selenium Manager must not go online.
    os.environ["SE_OFFLINE"] = "true"
    opened: list[WebDriver] = []

    def start() -> WebDriver:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            "--lang=en-GB",
        ):
            options.add_argument(argument)
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": str(downloads),
                "download.prompt_for_download": False,
                "safebrowsing.enabled": False,
            },
        )
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        opened.append(driver)
        driver.set_page_load_timeout(WAIT)
        return driver

    try:
        yield start
    finally:
        for driver in opened:
            driver.quit()


@pytest.fixture
def chrome(new_chrome: Browser) -> WebDriver:
    """One headless Chromium for the test."""
    return new_chrome()


def wait_for(driver: WebDriver, css: str) -> None:
    """Until an element matching `css` is on the page."""
    WebDriverWait(driver, WAIT).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def sign_in_with_browser(driver: WebDriver, live: Live, login: ConsoleLogin) -> None:
    """Type the username, password and the authenticator's current code into the login form."""
    driver.get(f"{live.base_url}/console/login")
    wait_for(driver, "#login")
    driver.find_element(By.ID, "username").send_keys(login.username)
    driver.find_element(By.ID, "password").send_keys(login.password)
    driver.find_element(By.ID, "code").send_keys(login.code())
    driver.find_element(By.ID, "sign-in").click()
    wait_for(driver, "#sign-out")


def screenshot(driver: WebDriver, name: str) -> Path:
    """Save the page as test-artifacts/screenshots/NAME.png (the whole page's height)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(900, min(int(height) + 40, 4000)))
    path = SCREENSHOTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot of {name}"
    driver.set_window_size(1280, 900)
    return path

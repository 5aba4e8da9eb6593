"""The console in a real browser: sign in with a password and a TOTP code, the dashboard's charts,
a settlement file downloaded and checked against its manifest, a page the role does not open, a
form without its CSRF token, and the console in Chinese. Each leaves a screenshot."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import func, select

from clearing.core.db import transaction
from reports.console.models import ConsoleAction
from reports.console.roles import Role
from reports.console.web import SESSION_COOKIE
from risk.models import SettlementPayment
from settlement.models import SettlementFile
from tests.browser.conftest import WAIT, Live, screenshot, sign_in_with_browser, wait_for
from tests.reports.console_support import console_user
from tests.reports.finance_support import batch_id
from tests.settlement.settlement_world import DAY1, DAY2

DAY1_BATCH = batch_id(DAY1)


def _loaded_width(driver: WebDriver, element_id: str) -> int:
    """The image's natural width once the browser has it (0: it did not load or decode)."""
    deadline = time.monotonic() + WAIT
    while True:
        done, width = driver.execute_script(
            "const i = document.getElementById(arguments[0]); return [i.complete, i.naturalWidth];",
            element_id,
        )
        if done or time.monotonic() > deadline:
            return int(width)
        time.sleep(0.1)


def _downloaded(folder: Path, name: str) -> bytes:
    """The file once the browser has finished saving it."""
    deadline = time.monotonic() + WAIT
    target = folder / name
    while not target.is_file() or any(folder.glob("*.crdownload")):
        assert time.monotonic() < deadline, f"{name} was not downloaded"
        time.sleep(0.1)
    return target.read_bytes()


def test_sign_in_with_password_and_code_then_see_the_charts(chrome: WebDriver, live: Live) -> None:
    login = console_user(live.app, live.days.world.bank_a.org_id, Role.FINANCE, username="li.wei")
    chrome.get(f"{live.base_url}/console/")
    wait_for(chrome, "#login")  # not signed in: sent to the login form
    screenshot(chrome, "login")
    sign_in_with_browser(chrome, live, login)
    assert chrome.current_url == f"{live.base_url}/console/"
    cookie = chrome.get_cookie(SESSION_COOKIE)
    assert cookie is not None
    assert cookie["secure"]
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert chrome.find_element(By.ID, "liability-BANKA").is_displayed()
    charts = chrome.find_elements(By.CSS_SELECTOR, "img.chart")
    assert [c.get_attribute("id") for c in charts] == ["chart-liability", "chart-activity"]
    for chart in charts:
        assert _loaded_width(chrome, str(chart.get_attribute("id"))) > 0
    screenshot(chrome, "dashboard")


def test_download_a_settlement_file_and_compare_its_sha256_with_the_manifest(
    chrome: WebDriver, live: Live, downloads: Path
) -> None:
    shop = live.days.world.shop.org_id
    login = console_user(live.app, shop, Role.FINANCE)
    sign_in_with_browser(chrome, live, login)
    chrome.find_element(By.CSS_SELECTOR, 'nav a[href$="/console/batches"]').click()
    wait_for(chrome, "#batches")
    assert chrome.find_element(By.ID, f"batch-{batch_id(DAY2)}").is_displayed()
    screenshot(chrome, "batches")
    chrome.find_element(By.ID, f"open-{DAY1_BATCH}").click()
    wait_for(chrome, f"#folder-{shop}")
    row = chrome.find_element(By.ID, f"file-{shop}-statement.csv")
    shown = row.find_element(By.CSS_SELECTOR, "code.sha256").text
    assert row.find_element(By.CSS_SELECTOR, ".state").text == "verified"
    assert chrome.find_element(By.ID, f"signature-{shop}").text == "valid"
    assert "openssl pkeyutl -verify" in chrome.find_element(By.ID, "openssl-signature").text
    screenshot(chrome, "batch-files")
    row.find_element(By.CSS_SELECTOR, "a.download").click()
    content = _downloaded(downloads, "statement.csv")
    with transaction(live.app.state.engine) as session:
        manifest = session.get(SettlementFile, (DAY1_BATCH, shop, "manifest.json"))
        assert manifest is not None
        folder = live.app.state.settings.settlement_dir / manifest.path
        downloads_recorded = session.scalar(
            select(func.count())
            .select_from(ConsoleAction)
            .where(
                ConsoleAction.action == "file_downloaded", ConsoleAction.user_id == login.user_id
            )
        )
    listed = {f["name"]: f["sha256"] for f in json.loads(folder.read_bytes())["files"]}
    assert hashlib.sha256(content).hexdigest() == listed["statement.csv"] == shown
    assert downloads_recorded == 1


def test_a_viewer_is_refused_the_settlement_page(chrome: WebDriver, live: Live) -> None:
    login = console_user(live.app, live.days.world.shop.org_id, Role.VIEWER)
    sign_in_with_browser(chrome, live, login)
    assert not chrome.find_elements(By.CSS_SELECTOR, 'nav a[href$="/console/batches"]')
    chrome.get(f"{live.base_url}/console/batches")
    wait_for(chrome, "#error-code")
    assert chrome.find_element(By.ID, "error-code").text == "page_forbidden"
    assert chrome.find_elements(By.ID, "batches") == []
    screenshot(chrome, "refused")


def test_a_form_sent_without_its_csrf_token_is_refused_and_changes_nothing(
    chrome: WebDriver, live: Live
) -> None:
    world = live.days.world
    login = console_user(live.app, world.platform.org_id, Role.FINANCE)
    sign_in_with_browser(chrome, live, login)
    chrome.get(f"{live.base_url}/console/positions")
    button_id = f"confirm-payment-{batch_id(DAY2)}-{world.shop.org_id}"
    wait_for(chrome, f"#{button_id}")
    screenshot(chrome, "positions")
    removed = chrome.execute_script(
        "const form = document.getElementById(arguments[0]).form;"
        "const token = form.querySelector('input[name=csrf_token]');"
        "token.remove(); return form.querySelector('input[name=csrf_token]') === null;",
        button_id,
    )
    assert removed
    chrome.find_element(By.ID, button_id).click()
    wait_for(chrome, "#error-code")
    assert chrome.find_element(By.ID, "error-code").text == "csrf_refused"
    with transaction(live.app.state.engine) as session:
        assert session.scalars(select(SettlementPayment)).all() == []
        recorded = session.scalars(
            select(ConsoleAction.action).where(ConsoleAction.user_id == login.user_id)
        ).all()
    assert "payment_recorded" not in recorded


def test_the_console_in_chinese(chrome: WebDriver, live: Live) -> None:
    login = console_user(live.app, live.days.world.bank_b.org_id, Role.FINANCE, locale="zh_CN")
    sign_in_with_browser(chrome, live, login)
    assert chrome.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN"
    assert chrome.find_element(By.CSS_SELECTOR, "#liability h2").text == "积分负债"
    assert _loaded_width(chrome, "chart-activity") > 0
    screenshot(chrome, "dashboard-zh-CN")
    chrome.get(f"{live.base_url}/console/batches/{DAY1_BATCH}")
    wait_for(chrome, "#offline")
    assert chrome.find_element(By.CSS_SELECTOR, "#offline h2").text == "离线自行校验文件"
    screenshot(chrome, "batch-files-zh-CN")

"""The console's doors: password and TOTP, lockout, sessions, CSRF, headers, language, audit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from starlette.testclient import TestClient

from clearing.core.db import transaction
from clearing.core.timeutil import utcnow
from reports.console.accounts import IDLE_TIMEOUT, MAX_FAILURES, resolve_session, token_hash
from reports.console.models import ConsoleAction, ConsoleSession, ConsoleUser
from reports.console.roles import Role
from reports.console.web import SESSION_COOKIE
from tests.reports.console_support import (
    ConsoleLogin,
    console_user,
    csrf_of,
    organisation,
    sign_in,
)


def _attempt(
    browser: TestClient,
    login: ConsoleLogin,
    *,
    password: str | None = None,
    code: str | None = None,
) -> int:
    form = browser.get("/console/login")
    answer = browser.post(
        "/console/login",
        data={
            "csrf_token": csrf_of(form.text),
            "username": login.username,
            "password": login.password if password is None else password,
            "code": login.code() if code is None else code,
        },
        follow_redirects=False,
    )
    return int(answer.status_code)


def _actions(app: FastAPI, action: str) -> list[ConsoleAction]:
    with transaction(app.state.engine) as session:
        return list(session.scalars(select(ConsoleAction).where(ConsoleAction.action == action)))


def test_signing_in_takes_the_password_and_a_current_code(
    console_app: FastAPI, browser: TestClient
) -> None:
    bank = organisation(console_app, "issuer", "Bank")
    login = console_user(console_app, bank, Role.FINANCE)
    assert browser.get("/console/", follow_redirects=False).status_code == 303
    sign_in(browser, login)
    page = browser.get("/console/")
    assert page.status_code == 200
    assert login.username.title() in page.text
    assert "Bank" in page.text
    cookie = next(c for c in browser.cookies.jar if c.name == SESSION_COOKIE)
    assert cookie.secure
    assert cookie.path == "/console"
    assert cookie.has_nonstandard_attr("HttpOnly")
    with transaction(console_app.state.engine) as session:
        stored = session.scalars(select(ConsoleSession.token_hash)).all()
    assert stored == [token_hash(str(cookie.value))]  # only the hash is kept
    assert [a.target for a in _actions(console_app, "signed_in")] == [login.username]


def test_every_console_answer_carries_the_security_headers(
    console_app: FastAPI, browser: TestClient
) -> None:
    answer = browser.get("/console/login")
    csp = answer.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "form-action 'self'" in csp
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == "no-store"
    set_cookie = answer.headers["set-cookie"].lower()
    assert "secure" in set_cookie
    assert "httponly" in set_cookie
    assert "samesite=strict" in set_cookie
    # The partner API's signature is not put on the console's pages (they are not for machines).
    assert "signature" not in answer.headers
    assert browser.get("/console/static/console.css").status_code == 200


def test_a_wrong_password_or_code_is_refused_alike_and_locks_after_five(
    console_app: FastAPI, browser: TestClient
) -> None:
    bank = organisation(console_app, "issuer", "Bank")
    login = console_user(console_app, bank, Role.VIEWER)
    assert _attempt(browser, login, password="not-the-password") == 401
    assert _attempt(browser, login, code="000000" if login.code() != "000000" else "111111") == 401
    unknown = ConsoleLogin(
        login.user_id, bank, "nobody-here", "whatever-password", login.totp_secret
    )
    assert _attempt(browser, unknown) == 401
    reasons = sorted(a.detail["why"] for a in _actions(console_app, "sign_in_refused"))
    assert reasons == ["code", "password", "unknown_user"]
    for _ in range(MAX_FAILURES - 2):
        assert _attempt(browser, login, password="still-wrong") == 401
    with transaction(console_app.state.engine) as session:
        user = session.get(ConsoleUser, login.user_id)
        assert user is not None
        assert user.locked_until is not None
    assert _attempt(browser, login) == 401  # the right password and code, but locked
    assert browser.get("/console/", follow_redirects=False).status_code == 303


def test_a_code_is_good_once(console_app: FastAPI, browser: TestClient) -> None:
    bank = organisation(console_app, "issuer", "Bank")
    login = console_user(console_app, bank, Role.VIEWER)
    code = login.code()
    assert _attempt(browser, login, code=code) == 303
    browser.cookies.clear()
    assert _attempt(browser, login, code=code) == 401


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    console_app: FastAPI, browser: TestClient
) -> None:
    bank = organisation(console_app, "issuer", "Bank")
    login = console_user(console_app, bank, Role.FINANCE)
    csrf = sign_in(browser, login)
    refused = browser.post("/console/logout", data={})
    assert refused.status_code == 403
    assert "csrf_refused" in refused.text
    forged = browser.post("/console/locale", data={"locale": "zh_CN", "csrf_token": "x" * 43})
    assert forged.status_code == 403
    assert browser.get("/console/").status_code == 200  # still signed in, still English
    assert "Dashboard" in browser.get("/console/").text
    # The sign-in form itself: without the browser's login cookie the token proves nothing.
    other = TestClient(console_app, base_url="https://testserver")
    answer = other.post(
        "/console/login",
        data={
            "csrf_token": csrf,
            "username": login.username,
            "password": login.password,
            "code": login.code(1),
        },
    )
    assert answer.status_code == 403


def test_signing_out_ends_the_session_on_the_server(
    console_app: FastAPI, browser: TestClient
) -> None:
    bank = organisation(console_app, "issuer", "Bank")
    login = console_user(console_app, bank, Role.FINANCE)
    csrf = sign_in(browser, login)
    token = str(next(c for c in browser.cookies.jar if c.name == SESSION_COOKIE).value)
    assert (
        browser.post(
            "/console/logout", data={"csrf_token": csrf}, follow_redirects=False
        ).status_code
        == 303
    )
    browser.cookies.set(SESSION_COOKIE, token, domain="testserver.local", path="/console")
    assert browser.get("/console/", follow_redirects=False).status_code == 303
    with transaction(console_app.state.engine) as session:
        assert resolve_session(session, token, utcnow()) is None


def test_an_idle_session_expires(console_app: FastAPI, browser: TestClient) -> None:
    bank = organisation(console_app, "issuer", "Bank")
    sign_in(browser, console_user(console_app, bank, Role.FINANCE))
    token = str(next(c for c in browser.cookies.jar if c.name == SESSION_COOKIE).value)
    with transaction(console_app.state.engine) as session:
        assert resolve_session(session, token, utcnow()) is not None
        assert (
            resolve_session(session, token, utcnow() + IDLE_TIMEOUT + timedelta(seconds=1)) is None
        )


def test_the_user_reads_the_console_in_chinese_by_choice(
    console_app: FastAPI, browser: TestClient
) -> None:
    bank = organisation(console_app, "issuer", "Bank")
    csrf = sign_in(browser, console_user(console_app, bank, Role.FINANCE))
    browser.post(
        "/console/locale", data={"locale": "zh_CN", "csrf_token": csrf, "back": "/console/"}
    )
    page = browser.get("/console/")
    assert "概览" in page.text
    assert 'lang="zh-CN"' in page.text
    assert [a.detail for a in _actions(console_app, "locale_set")] == [{"locale": "zh_CN"}]


def test_after_sign_in_only_a_console_page_is_a_destination(
    console_app: FastAPI, browser: TestClient
) -> None:
    bank = organisation(console_app, "issuer", "Bank")
    login = console_user(console_app, bank, Role.FINANCE)
    form = browser.get("/console/login?next=https://elsewhere.example/steal")
    answer = browser.post(
        "/console/login",
        data={
            "csrf_token": csrf_of(form.text),
            "username": login.username,
            "password": login.password,
            "code": login.code(),
            "next": "//elsewhere.example/",
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/"


def test_platform_roles_are_for_platform_people_only(console_app: FastAPI) -> None:
    from reports.console.accounts import RoleNotAllowed

    bank = organisation(console_app, "issuer", "Bank")
    with pytest.raises(RoleNotAllowed):
        console_user(console_app, bank, Role.OPERATOR)
    platform = organisation(console_app, "platform", "Platform")
    assert console_user(console_app, platform, Role.OPERATOR).org_id == platform

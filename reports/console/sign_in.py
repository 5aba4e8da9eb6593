"""Signing in and out, and the user's language."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from clearing.core.db import transaction
from clearing.core.timeutil import utcnow
from clearing.web.api import SessionDep
from reports.console import accounts
from reports.console.accounts import ABSOLUTE_TIMEOUT, SignInRefused
from reports.console.web import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    CsrfRefused,
    Viewer,
    base_path,
    new_login_token,
    render,
    see_other,
)

router = APIRouter()


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=base_path(request) or "/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def _safe_next(request: Request, target: str | None) -> str:
    """Only a page of this console: never another site (no open redirect)."""
    base = base_path(request)
    if (
        target
        and target.startswith(base + "/")
        and not target.startswith("//")
        and "\\" not in target
    ):
        return target
    return base + "/"


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    """The sign-in form: username, password and the authenticator's code."""
    token = request.cookies.get(LOGIN_COOKIE) or new_login_token()
    page = render(request, "login.html", csrf_token=token, next=_safe_next(request, next))
    _cookie(page, request, LOGIN_COOKIE, token, 3600)
    return page


@router.post("/login")
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    code: Annotated[str, Form(max_length=12)],
    csrf_token: Annotated[str, Form(alias=CSRF_FIELD, max_length=100)] = "",
    next: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Sign in; a refusal says the same whatever was wrong, and is counted against the user."""
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf_token):
        raise CsrfRefused("the sign-in form was not sent from this browser's console page")
    engine = request.app.state.engine

    def attempt() -> str:
        now = utcnow()
        with transaction(engine) as session:
            user = accounts.sign_in(
                session, username=username, password=password, code=code, now=now
            )
            return accounts.open_session(session, user, now)

    try:
        token = await run_in_threadpool(attempt)
    except SignInRefused:
        page = render(
            request,
            "login.html",
            status_code=401,
            csrf_token=expected,
            next=_safe_next(request, next),
            refused=True,
            username=username,
        )
        return page
    response = RedirectResponse(_safe_next(request, next), status_code=303)
    _cookie(response, request, SESSION_COOKIE, token, int(ABSOLUTE_TIMEOUT.total_seconds()))
    response.delete_cookie(LOGIN_COOKIE, path=base_path(request) or "/")
    return response


@router.post("/logout")
def logout(request: Request, viewer: Viewer, session: SessionDep) -> Response:
    """Sign out: the session ends on the server, not only in this browser."""
    accounts.end_session(session, request.cookies.get(SESSION_COOKIE, ""), utcnow())
    accounts.record(session, viewer.signed_in, "signed_out", "", {}, utcnow())
    response = see_other(request, "/login")
    response.delete_cookie(SESSION_COOKIE, path=base_path(request) or "/")
    return response


@router.post("/locale")
def choose_locale(
    request: Request,
    viewer: Viewer,
    session: SessionDep,
    locale: Annotated[str, Form(max_length=8)],
    back: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Read the console in another language from now on."""
    accounts.set_locale(session, viewer.signed_in, locale, utcnow())
    return RedirectResponse(_safe_next(request, back), status_code=303)

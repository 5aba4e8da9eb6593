"""The console's web layer: the app under /console, who is signed in, CSRF, roles, rendering.

Every route that needs a user takes `Viewer` or `allowed(page)`; for a POST that same dependency
checks the form's CSRF token against the session's, so no form can forget it. Pages are rendered
server-side (Jinja, autoescaped) with no script at all; charts are SVG images drawn on the
server. Every response carries the security headers (a strict CSP among them).
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from sqlalchemy import Engine
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clearing.core.config import Settings
from clearing.core.errors import ClearingError, Forbidden
from clearing.core.kinds import OrgKind
from clearing.core.timeutil import utcnow
from clearing.web.api import SessionDep
from reports.console import i18n
from reports.console.accounts import SignedIn, record, resolve_session
from reports.console.roles import Page, may_see

SESSION_COOKIE = "console_session"
LOGIN_COOKIE = "console_login"
"""Before sign-in there is no session: the login form's CSRF token is a double-submit cookie."""
CSRF_FIELD = "csrf_token"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "strict-transport-security": "max-age=31536000",
}
NAV = (
    Page.DASHBOARD,
    Page.BATCHES,
    Page.POSITIONS,
    Page.REPORTS,
    Page.REVIEWS,
    Page.RULES,
    Page.PARTIES,
    Page.MEMBERS,
    Page.AUDIT,
)


class NotSignedIn(ClearingError):
    status = 401
    code = "not_signed_in"
    title = "Sign in first"


class CsrfRefused(Forbidden):
    code = "csrf_refused"
    title = "The form's security token is missing or wrong"


class PageForbidden(Forbidden):
    code = "page_forbidden"
    title = "Your role does not allow this page"


@dataclass(frozen=True, slots=True)
class Viewing:
    """The signed-in user of a request, with what the pages need to know of them."""

    signed_in: SignedIn

    @property
    def org_id(self) -> uuid.UUID:
        """The user's organisation."""
        return self.signed_in.org_id

    @property
    def is_platform(self) -> bool:
        """Platform users see every party; others only their own organisation."""
        return self.signed_in.org_kind == OrgKind.PLATFORM

    @property
    def zone(self) -> str:
        """The organisation's zone: every date and time is shown in it."""
        return self.signed_in.zone

    @property
    def locale(self) -> str:
        """The language the user chose."""
        return self.signed_in.locale

    def may(self, page: Page) -> bool:
        """Whether the user's role opens `page`."""
        return may_see(self.signed_in.role, page)


async def posted_form(request: Request) -> FormData | None:
    """The form of a POST (parsed once; Starlette keeps it on the request)."""
    return await request.form() if request.method == "POST" else None


def _viewer(
    request: Request,
    session: SessionDep,
    form: Annotated[FormData | None, Depends(posted_form)],
) -> Viewing:
    token = request.cookies.get(SESSION_COOKIE)
    signed_in = resolve_session(session, token, utcnow()) if token else None
    if signed_in is None:
        raise NotSignedIn("sign in to open this page")
    viewer = Viewing(signed_in)
    request.state.viewer = viewer
    if form is not None:
        sent = form.get(CSRF_FIELD)
        if not isinstance(sent, str) or not hmac.compare_digest(sent, signed_in.csrf_token):
            raise CsrfRefused("the form was not sent from this console session")
    return viewer


Viewer = Annotated[Viewing, Depends(_viewer)]


def allowed(page: Page) -> Callable[..., Viewing]:
    """A dependency: the signed-in user, if their role opens `page` (else a 403 page, audited)."""

    def check(viewer: Viewer) -> Viewing:
        if not viewer.may(page):
            user = viewer.signed_in
            refused = PageForbidden(f"the role {user.role} does not open this page")
            # The refusal is audited although the request's own transaction rolls back.
            refused.kept = lambda fresh: record(
                fresh, user, "page_refused", page.value or "dashboard", {}, utcnow()
            )
            raise refused
        return viewer

    return check


def _environment(locale: str) -> Environment:
    env = Environment(
        loader=PackageLoader("reports.console", "templates"),
        autoescape=select_autoescape(default=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(i18n.translations(locale), newstyle=True)  # type: ignore[attr-defined]
    env.filters["money"] = lambda minor, currency: i18n.money(minor, currency, locale)
    env.filters["points"] = lambda value: i18n.points(value, locale)
    env.filters["day"] = lambda value: i18n.day(value, locale)

    @pass_context
    def when(context: Context, instant: Any) -> str:
        return i18n.when(instant, context["zone"], locale) if instant is not None else ""

    env.filters["when"] = when
    return env


_ENVIRONMENTS = {locale: _environment(locale) for locale in i18n.LANGUAGES}


def base_path(request: Request) -> str:
    """Where the console is mounted ("/console"): every link is built from it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def render(
    request: Request,
    template: str,
    *,
    viewer: Viewing | None = None,
    status_code: int = 200,
    locale: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page of the console, in the viewer's language and zone."""
    language = locale or (viewer.locale if viewer else "en")
    env = _ENVIRONMENTS.get(language, _ENVIRONMENTS["en"])
    base = base_path(request)
    html = env.get_template(template).render(
        base=base,
        viewer=viewer,
        zone=viewer.zone if viewer else "UTC",
        locale=language,
        languages=i18n.LANGUAGES,
        nav=[p for p in NAV if viewer.may(p)] if viewer else [],
        csrf_token=viewer.signed_in.csrf_token if viewer else context.pop("csrf_token", ""),
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def see_other(request: Request, path: str) -> RedirectResponse:
    """After a form: go to a page of the console (POST, then redirect, then GET)."""
    return RedirectResponse(base_path(request) + path, status_code=303)


class SecurityHeaders:
    """ASGI middleware: the security headers on every console response (unless a route set one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ClearingError)
    if isinstance(exc, NotSignedIn):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login = see_other(request, "/login")
        if request.method == "GET":
            login.headers["location"] += "?next=" + _quoted(target)
        return login
    viewer = getattr(request.state, "viewer", None)
    return render(request, "error.html", viewer=viewer, status_code=exc.status, error=exc)


def _http_error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    viewer = getattr(request.state, "viewer", None)
    error = ClearingError(str(exc.detail))
    return render(
        request,
        "error.html",
        viewer=viewer,
        status_code=exc.status_code,
        error=error,
        status=exc.status_code,
    )


def _quoted(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")


def new_login_token() -> str:
    """The login form's double-submit token."""
    return secrets.token_urlsafe(32)


def create_console(engine: Engine, settings: Settings) -> FastAPI:
    """The console app, to be mounted under /console next to the partner API."""
    from reports.console.pages import PAGE_ROUTERS
    from reports.console.sign_in import router as sign_in_router

    console = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    console.state.engine = engine
    console.state.settings = settings
    console.add_exception_handler(ClearingError, _error_page)
    console.add_exception_handler(StarletteHTTPException, _http_error_page)
    console.include_router(sign_in_router)
    for router in PAGE_ROUTERS:
        console.include_router(router)
    console.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    console.add_middleware(SecurityHeaders)
    return console

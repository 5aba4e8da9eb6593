"""The partner API application: routes, problem+json errors, signed responses."""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clearing.app.policy import open_engine
from clearing.app.scheduler import start_scheduler
from clearing.core.config import Settings
from clearing.core.errors import ClearingError, problem_body
from clearing.core.policy import PendingReview
from clearing.core.timeutil import utcnow
from clearing.web.api import KNOWN_DIGEST
from clearing.web.ingress import Ingress, adopt
from clearing.web.platform_key import PlatformKey, load_or_create
from clearing.web.routes import router as platform_router
from clearing.web.signatures import sign_response
from exchange.mall.routes import router as mall_router
from exchange.routes import router as exchange_router
from issuers.keys import ORGANISATION_KEYS
from issuers.routes import router as issuers_router
from issuers.tier_routes import router as tiers_router
from reports.console.web import create_console
from reports.routes import router as reports_router
from risk.routes import router as risk_router
from settlement.routes import router as settlement_router

PROBLEM = "application/problem+json"
CONSOLE_PREFIX = "/console"
"""Where the console for people is mounted, beside the partner API."""
log = logging.getLogger("clearing.web.api")


def _problem(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM, headers=headers)


async def _clearing_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ClearingError)
    if isinstance(exc, PendingReview):
        # Held for review is an answer, not a problem: the pending operation, as JSON. One with
        # nothing to keep is the stored answer to an earlier request under the same key.
        replayed = {"Idempotent-Replayed": "true"} if exc.kept is None else None
        return JSONResponse(exc.problem(), status_code=exc.status, headers=replayed)
    return _problem(exc.problem())


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # Only where and why: the submitted values ("input", "ctx") may hold secrets or personal data.
    errors = [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
    body = problem_body(422, "invalid_input", "Invalid input", "the request is not valid")
    return _problem({**body, "errors": errors})


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        body = problem_body(404, "not_found", "Not found", "no such resource")
    elif status == 405:
        body = problem_body(405, "method_not_allowed", "Method not allowed", "method not allowed")
    else:
        body = problem_body(
            status, "bad_request" if status == 400 else f"http_{status}", "Error", str(exc.detail)
        )
    return _problem(body, dict(exc.headers or {}))


def _unexpected(scope: Scope, exc: Exception) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A 500 (503 when the database is unreachable or gave up on a lock), logged without data."""
    # The traceback without the message: a database error's text quotes the statement's values.
    log.error(
        "unhandled %s on %s %s\n%s",
        type(exc).__name__,
        scope.get("method"),
        scope.get("path"),
        "".join(traceback.format_tb(exc.__traceback__)),
    )
    if isinstance(exc, OperationalError):
        body = problem_body(503, "unavailable", "Service unavailable", "try again shortly")
        extra = [(b"retry-after", b"1")]
    else:
        body = problem_body(500, "internal_error", "Internal error", "an unexpected error occurred")
        extra = []
    content = JSONResponse(body).body
    headers = [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(content)).encode())]
    return body["status"], headers + extra, bytes(content)


class SignedResponses:
    """ASGI middleware: signs every response with the platform key (RFC 9421), errors included.

    It buffers a response (ours are small JSON documents) because Content-Digest covers the
    whole body, and turns any exception that escaped the app into a signed problem+json. A
    response whose start message carries ``KNOWN_DIGEST`` (a file whose hash a manifest holds)
    is signed from that digest and its body streamed through, never held.
    """

    def __init__(self, app: ASGIApp, key: PlatformKey) -> None:
        self.app = app
        self.key = key

    def _signed(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, digest: str | None
    ) -> list[tuple[bytes, bytes]]:
        headers = [(k, v) for k, v in headers if k.lower() != b"content-digest"]
        if not any(k.lower() == b"x-content-type-options" for k, _ in headers):
            headers.append((b"x-content-type-options", b"nosniff"))
        fields = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
        signed = sign_response(
            self.key.private_key,
            self.key.keyid,
            status,
            fields,
            body,
            created=int(utcnow().timestamp()),
            digest=digest,
        )
        return headers + [(k.lower().encode(), v.encode("latin-1")) for k, v in signed.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONSOLE_PREFIX + "/"):
            # The console answers people's browsers, with headers of its own (reports.console).
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        streaming = False
        chunks: list[bytes] = []

        async def relay(message: Message) -> None:
            nonlocal start, streaming
            if message["type"] == "http.response.start":
                digest = message.get(KNOWN_DIGEST)
                if digest is None:
                    start = message
                    return
                streaming = True
                status: int = message["status"]
                headers = self._signed(status, list(message.get("headers", [])), b"", digest)
                await send({"type": "http.response.start", "status": status, "headers": headers})
            elif message["type"] == "http.response.body":
                if streaming:
                    await send(message)
                else:
                    chunks.append(message.get("body", b""))

        try:
            await self.app(scope, receive, relay)
            if streaming:
                return
            if start is None:
                raise RuntimeError("the application sent no response")
            status: int = start["status"]
            headers: list[tuple[bytes, bytes]] = list(start.get("headers", []))
            body = b"".join(chunks)
        except Exception as exc:
            if streaming:
                raise  # the head is out: all that is left is to cut the body short
            status, headers, body = _unexpected(scope, exc)
        headers = self._signed(status, headers, body, None)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings, *, run_scheduler: bool = False) -> FastAPI:
    """The partner API on the database and platform key of ``settings``."""
    engine = open_engine(settings)
    key = load_or_create(settings.platform_key_path)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The settlement scheduler runs next to the API when asked (`clearing serve`); several
        # instances may run it: the settlement runner lock lets one batch runner in at a time.
        scheduler = start_scheduler(settings) if run_scheduler else None
        yield
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        engine.dispose()

    app = FastAPI(
        title="Points clearing partner API",
        version="1",
        description="Every request is signed (RFC 9421, Ed25519); every response is signed by "
        "the platform key published at /v1/platform/keys.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.platform_key = key
    app.add_exception_handler(ClearingError, _clearing_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for router in (
        platform_router,
        issuers_router,
        tiers_router,
        exchange_router,
        mall_router,
        settlement_router,
        risk_router,
        reports_router,
    ):
        adopt(router)
        app.include_router(router)
    app.mount(CONSOLE_PREFIX, create_console(engine, settings))
    # Added first, so it runs inside SignedResponses: its refusals are signed too.
    app.add_middleware(Ingress, settings=settings, engine=engine, keys=ORGANISATION_KEYS)
    app.add_middleware(SignedResponses, key=key)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory clearing.app.factory:app_from_env`` (settings from CLEARING_*)."""
    return create_app(
        Settings.from_env(), run_scheduler=os.environ.get("CLEARING_SCHEDULER") == "1"
    )

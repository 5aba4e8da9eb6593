"""What reaches a route: first who signed it, from the head alone; then its body, bounded and
checked against its Content-Digest as it streams in; then that body parsed, once.

Order of the gates, each answered as early as it can be:

1. a declared Content-Length over the route's limit: 413 ``body_too_large``, nothing read;
2. the signature (``clearing.web.auth.authenticate``: key, clock, signature, nonce, status), from the
   headers alone, so an unauthenticated sender never gets a byte of its body read;
3. a POST's Idempotency-Key given more than once: 400 ``idempotency_key_repeated``;
4. the body, read chunk by chunk: over the limit (chunked, or a Content-Length that lied) is a
   413 as soon as it is; the Content-Digest is hashed incrementally and checked at the end;
5. a JSON body is parsed once (in a worker thread when large, so that a bulk file never holds
   up the event loop), duplicate object keys refused (422 ``duplicate_json_key``), and handed
   to FastAPI through ``IngressRoute`` so that it is not parsed again; a large body is also
   validated against the route's model in a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, APIRouter
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clearing.core.config import Settings
from clearing.core.errors import ClearingError, InvalidInput
from clearing.core.timeutil import utcnow
from clearing.web.auth import CALLER, KeyDirectory, authenticate, target_uri
from clearing.web.signatures import BodyDigest

BODY = "clearing.body"
"""Scope key of the request's ``ReadBody``."""
OPEN_PATHS = frozenset({"/v1/platform/keys"})
"""Paths under /v1 that need no signature (partners fetch the keys before they can verify)."""
BULK_ROUTES = frozenset({("POST", "/v1/accrual-batches")})
"""Routes whose bodies are files, with the larger limit."""
INLINE_BYTES = 64 << 10
"""Bodies up to this size are parsed on the event loop: a thread hop would cost more."""
PROBLEM = "application/problem+json"


class BodyTooLarge(ClearingError):
    status = 413
    code = "body_too_large"
    title = "Request body too large"


class ContentLengthMismatch(ClearingError):
    status = 400
    code = "content_length_mismatch"
    title = "Body length differs from Content-Length"


class IdempotencyKeyRepeated(ClearingError):
    status = 400
    code = "idempotency_key_repeated"
    title = "Idempotency-Key given more than once"


class DuplicateJsonKey(InvalidInput):
    code = "duplicate_json_key"
    title = "Duplicate key in a JSON object"


class _Disconnected(Exception):
    """The client went away before its body was read: there is nobody to answer."""


_UNPARSED: Any = object()


@dataclass(slots=True)
class ReadBody:
    """A request body, read whole and checked against its digest; ``parsed`` once JSON."""

    raw: bytes
    parsed: Any = _UNPARSED


# --------------------------------------------------------------------------- parsing


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers that keep different duplicates (first or last) read two different requests
    # out of one signed body; refusing them leaves only one reading.
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateJsonKey("a JSON object repeats a key", key=key[:100])
            seen.add(key)
    return result


def parse_json(raw: bytes) -> Any:
    """The JSON value of a body, as Starlette's parser reads it, refusing duplicate keys."""
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        # The same answer FastAPI gives a malformed body, without parsing it a second time.
        detail = [{"loc": ["body", error.pos], "msg": "JSON decode error", "type": "json_invalid"}]
        raise InvalidInput("the request is not valid", errors=detail) from None
    except (UnicodeDecodeError, RecursionError):
        detail = [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]
        raise InvalidInput("the request is not valid", errors=detail) from None


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


# --------------------------------------------------------------------------- middleware


_WATCHED = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"idempotency-key",
        b"content-digest",
        b"content-type",
    }
)


def _watched_lines(scope: Scope) -> dict[bytes, list[bytes]]:
    """The lines of the headers the gates look at, in one pass (ASGI names are lower case)."""
    lines: dict[bytes, list[bytes]] = {}
    for key, value in scope["headers"]:
        if key in _WATCHED:
            lines.setdefault(key, []).append(value)
    return lines


def _declared_length(lines: dict[bytes, list[bytes]]) -> int | None:
    given = lines.get(b"content-length")
    if given is None:
        return None
    if len(given) > 1 or not given[0].strip().isdigit():
        raise ContentLengthMismatch("Content-Length must be given once, as a number")
    return int(given[0])


def _check_idempotency_key(lines: dict[bytes, list[bytes]]) -> None:
    given = lines.get(b"idempotency-key", [])
    # A proxy may join repeated lines with a comma; a key of ours never holds one.
    if len(given) > 1 or any(b"," in line for line in given):
        raise IdempotencyKeyRepeated("the Idempotency-Key header must be given exactly once")


async def _read(
    receive: Receive, limit: int, declared: int | None, digest: BodyDigest | None
) -> bytes:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body exceeds {limit} bytes", limit=limit)
        if declared is not None and size > declared:
            raise ContentLengthMismatch("the body is longer than its Content-Length")
        if digest is not None:
            digest.update(chunk)
        chunks.append(chunk)
    if declared is not None and size != declared:
        raise ContentLengthMismatch("the body is shorter than its Content-Length")
    if digest is not None:
        digest.verify()
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that gives the app the body already read, then the client's events."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class Ingress:
    """ASGI middleware: authenticate from the head, then read a bounded, digest-checked body."""

    def __init__(
        self, app: ASGIApp, settings: Settings, engine: Engine, keys: KeyDirectory
    ) -> None:
        self.app = app
        self.engine = engine
        self.keys = keys
        self.limit = settings.max_body_bytes
        self.bulk_limit = settings.max_bulk_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._admit(scope, receive)
        except ClearingError as error:
            response = JSONResponse(error.problem(), status_code=error.status, media_type=PROBLEM)
            await response(scope, receive, send)
            return
        except _Disconnected:
            return
        scope[BODY] = body
        await self.app(scope, _replay(body.raw, receive), send)

    async def _admit(self, scope: Scope, receive: Receive) -> ReadBody:
        method: str = scope["method"]
        path: str = scope["path"]
        limit = self.bulk_limit if (method, path) in BULK_ROUTES else self.limit
        lines = _watched_lines(scope)
        declared = _declared_length(lines)
        if declared is not None and declared > limit:
            raise BodyTooLarge(f"the body exceeds {limit} bytes", limit=limit)
        chunked = b"transfer-encoding" in lines
        digest: BodyDigest | None = None
        if path.startswith("/v1/") and path not in OPEN_PATHS:
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
            scope[CALLER] = await run_in_threadpool(
                authenticate,
                self.engine,
                self.keys,
                method,
                target_uri(scope),
                headers,
                utcnow(),
                has_body=chunked or bool(declared),
            )
            if method == "POST":
                _check_idempotency_key(lines)
            if b"content-digest" in lines:
                digest = BodyDigest(b", ".join(lines[b"content-digest"]).decode("latin-1"))
        raw = await _read(receive, limit, None if chunked else (declared or 0), digest)
        body = ReadBody(raw)
        content_type = lines.get(b"content-type")
        if raw and _is_json(content_type[0].decode("latin-1") if content_type else None):
            if len(raw) <= INLINE_BYTES:
                body.parsed = parse_json(raw)
            else:
                body.parsed = await run_in_threadpool(parse_json, raw)
        return body


# --------------------------------------------------------------------------- routes


class _ReadRequest(Request):
    """A request whose body the middleware has read, checked and parsed already."""

    async def body(self) -> bytes:
        read = self.scope.get(BODY)
        return read.raw if isinstance(read, ReadBody) else await super().body()

    async def json(self) -> Any:
        read = self.scope.get(BODY)
        if isinstance(read, ReadBody) and read.parsed is not _UNPARSED:
            return read.parsed
        return await super().json()


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class IngressRoute(APIRoute):
    """A route that takes its body from ``Ingress``: parsed once, and a large one validated
    against the route's model in a worker thread, so FastAPI finds a model and has no work."""

    def get_route_handler(self) -> Handler:
        """FastAPI's handler, given the body the middleware read."""
        handler = super().get_route_handler()
        field = None if self._embed_body_fields else self.body_field

        async def prepared(request: Request) -> Response:
            read = request.scope.get(BODY)
            if not isinstance(read, ReadBody):
                return await handler(request)
            if field is not None and read.parsed is not _UNPARSED and len(read.raw) > INLINE_BYTES:
                value, errors = await run_in_threadpool(
                    field.validate, read.parsed, {}, loc=("body",)
                )
                # On errors FastAPI validates again and answers them in its own words.
                if not errors:
                    read.parsed = value
            return await handler(_ReadRequest(request.scope, request.receive))

        return prepared


def adopt(router: APIRouter) -> None:
    """Make every route of ``router`` take its body from ``Ingress``; call before including it."""
    # The domain routers are plain APIRouter()s: their routes are switched here, in one place,
    # rather than each domain passing route_class (FastAPI builds handlers at inclusion).
    for route in router.routes:
        if type(route) is APIRoute:
            route.__class__ = IngressRoute

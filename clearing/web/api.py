"""What every route shares: the request's transaction, idempotency keys, responses, pages."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import anyio
from fastapi import Depends, Header, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from clearing.core.db import transaction
from clearing.core.errors import ClearingError, InvalidInput
from clearing.core.idempotency import CREATED, Operation, Outcome, run_once
from clearing.core.models import IdempotencyRecord
from clearing.core.schemas import Model

T = TypeVar("T")
JSON = "application/json"
KNOWN_DIGEST = "clearing.content_digest"
"""Key of a response start message carrying the body's Content-Digest, known before the body."""


class IdempotencyKeyMissing(ClearingError):
    status = 400
    code = "idempotency_key_missing"
    title = "Idempotency-Key header required"


async def db_session(request: Request) -> AsyncIterator[Session]:
    """One transaction per request: committed if the route returns, rolled back if it raises.

    Opening it does no I/O (the session connects at its first statement), so it opens on the
    event loop; only its end, the commit or rollback, takes a worker thread. That end is shielded
    from cancellation: a client that disconnects never leaves a connection checked out.
    """
    unit = transaction(request.app.state.engine)
    session = unit.__enter__()
    try:
        yield session
    except BaseException as error:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(unit.__exit__, type(error), error, error.__traceback__)
        raise
    with anyio.CancelScope(shield=True):
        await run_in_threadpool(unit.__exit__, None, None, None)


async def idempotency_key(
    key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="Unique per logical operation; 1-200 chars"),
    ] = None,
) -> str:
    """The Idempotency-Key header, required on every POST."""
    if key is None or not key.strip():
        raise IdempotencyKeyMissing("every POST needs an Idempotency-Key header")
    if len(key) > 200:
        raise InvalidInput(
            "Idempotency-Key must be at most 200 characters", field="Idempotency-Key"
        )
    return key


# scope="function": the commit happens before the response leaves, so a 2xx is durable.
SessionDep = Annotated[Session, Depends(db_session, scope="function")]
IdempotencyKey = Annotated[str, Depends(idempotency_key)]
Limit = Annotated[int, Query(ge=1, le=200, description="Page size")]
After = Annotated[
    str | None,
    Query(max_length=200, pattern=r"^[A-Za-z0-9_-]+$", description="Cursor from `next`"),
]


def json_response(result: BaseModel, status_code: int = 200) -> Response:
    """A model as the JSON body, serialised the way the idempotency store serialises it."""
    return Response(result.model_dump_json().encode(), status_code=status_code, media_type=JSON)


def once_response(session: Session, org_id: uuid.UUID, key: str, outcome: Outcome[Any]) -> Response:
    """The answer to a POST run through ``run_once``: a replay sends the stored bytes verbatim."""
    if not outcome.replayed:
        return json_response(outcome.result, CREATED)
    row = session.execute(
        select(IdempotencyRecord.status_code, IdempotencyRecord.result).where(
            IdempotencyRecord.org_id == org_id, IdempotencyRecord.key == key
        )
    ).one()
    return Response(
        row.result or b"",
        status_code=row.status_code,
        media_type=JSON,
        headers={"Idempotent-Replayed": "true"},
    )


def respond_once(
    session: Session, org_id: uuid.UUID, key: str, operation: Operation[Any], now: datetime
) -> Response:
    """Run a route's operation once per Idempotency-Key and answer it (replays byte for byte)."""
    return once_response(session, org_id, key, run_once(session, org_id, key, operation, now))


class Page(Model, Generic[T]):
    items: list[T]
    next: str | None


def encode_cursor(*parts: Any) -> str:
    """An opaque cursor for the last item of a page."""
    raw = json.dumps([str(p) for p in parts], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, size: int) -> list[str]:
    """The parts of a cursor made by ``encode_cursor``; a forged one is invalid input."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (ValueError, binascii.Error):
        raise InvalidInput("invalid cursor", field="after") from None
    if (
        not isinstance(parts, list)
        or len(parts) != size
        or not all(isinstance(p, str) and p.isprintable() for p in parts)
    ):
        raise InvalidInput("invalid cursor", field="after")
    return parts


class DigestedFileResponse(Response):
    """A file streamed from disk under a SHA-256 known in advance (a manifest's): the response is
    signed from that hash before the body goes out, so memory stays flat whatever the size.

    The file is hashed as it is sent; the last chunk is held back until the hash is known, and a
    file that no longer matches is cut short rather than delivered whole under a false digest.
    """

    chunk_size = 64 << 10

    def __init__(
        self, path: Path, sha256: str, size: int, media_type: str, headers: Mapping[str, str]
    ) -> None:
        super().__init__(status_code=200, headers=headers, media_type=media_type)
        self.path = path
        self.sha256 = sha256
        self.size = size
        self.digest = f"sha-256=:{base64.b64encode(bytes.fromhex(sha256)).decode('ascii')}:"
        # Response computed a length for its empty body; ours is the file's.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.raw_headers.append((b"content-length", str(size).encode("ascii")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hasher = hashlib.sha256()
        async with await anyio.open_file(self.path, "rb") as file:
            chunk = await file.read(self.chunk_size)
            start = {"type": "http.response.start", "status": self.status_code}
            await send({**start, "headers": self.raw_headers, KNOWN_DIGEST: self.digest})
            sent = 0
            while True:
                following = await file.read(self.chunk_size)
                hasher.update(chunk)
                sent += len(chunk)
                if not following and (hasher.hexdigest() != self.sha256 or sent != self.size):
                    raise RuntimeError(f"{self.path.name} differs from its manifest")
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": bool(following)}
                )
                if not following:
                    return
                chunk = following

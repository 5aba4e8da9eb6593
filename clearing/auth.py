"""Who sent this request: RFC 9421 verification, the database nonce store, key to organisation."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Depends, Request
from sqlalchemy import Engine, delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from clearing.context import Caller
from clearing.db import transaction
from clearing.errors import Forbidden
from clearing.models import SeenNonce
from clearing.signatures import (
    NonceReplayed,
    SignatureMalformed,
    load_public_key,
    verify_request,
)
from clearing.timeutil import utcnow
from issuers.keys import active_key
from issuers.models import Organisation

MAX_SKEW = 300
"""Seconds a signature's ``created`` may differ from the server clock, either way."""
NONCE_RETENTION = timedelta(seconds=2 * MAX_SKEW)
"""A nonce first seen at t can come back signed with created <= t + skew, valid until + skew."""
MAX_NONCE = 128
PRUNE_ONE_IN = 64
PRUNE_BATCH = 1000


class OrganisationSuspended(Forbidden):
    code = "organisation_suspended"
    title = "Organisation suspended"


class OperatorOnly(Forbidden):
    code = "operator_only"
    title = "Operator key required"


def authenticate(
    engine: Engine,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
) -> Caller:
    """Verify a signed request and burn its nonce; return the organisation that signed it."""
    # Its own transaction, committed before the request's work: a request that then fails must
    # not leave its nonce reusable, or a declined payment could be replayed once it would pass.
    with transaction(engine) as session:
        owner: list[Organisation] = []

        def resolve(keyid: str) -> Ed25519PublicKey | None:
            found = active_key(session, keyid)
            if found is None:
                return None
            owner.append(found[1])
            return load_public_key(found[0].public_key_pem)

        verified = verify_request(
            method, url, headers, body, resolve, now=int(now.timestamp()), max_skew=MAX_SKEW
        )
        org = owner[0]
        nonce = verified.nonce or ""
        if not 1 <= len(nonce) <= MAX_NONCE:
            raise SignatureMalformed(f"signature nonce must be 1 to {MAX_NONCE} characters")
        record_nonce(session, verified.keyid, nonce, now)
        if org.status != "active":
            raise OrganisationSuspended(f"organisation is {org.status}")
        return Caller(org.id, org.kind)


def record_nonce(session: Session, keyid: str, nonce: str, now: datetime) -> None:
    """Remember a nonce for a key; raise NonceReplayed if it was seen inside the window."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    inserted = session.execute(
        insert(SeenNonce)
        .values(keyid=keyid, nonce=nonce, seen_at=now)
        .on_conflict_do_nothing()
        .returning(SeenNonce.nonce)
    ).first()
    if inserted is None:
        raise NonceReplayed("this signature nonce was already used with this key")
    if secrets.randbelow(PRUNE_ONE_IN) == 0:
        prune_nonces(session, now)


def prune_nonces(session: Session, now: datetime) -> None:
    """Forget nonces too old to be replayed, a bounded batch at a time."""
    old = select(SeenNonce.keyid, SeenNonce.nonce).where(SeenNonce.seen_at < now - NONCE_RETENTION)
    if session.get_bind().dialect.name == "postgresql":
        # Two pruners never wait on (or deadlock over) the same rows.
        old = old.with_for_update(skip_locked=True)
    session.execute(
        delete(SeenNonce).where(
            tuple_(SeenNonce.keyid, SeenNonce.nonce).in_(old.limit(PRUNE_BATCH))
        )
    )


def target_uri(request: Request) -> str:
    """The request's URL as the client sent it: path and query still percent-encoded."""
    # scope["path"] is decoded; the signature covers the encoded form the client wrote.
    raw: bytes | None = request.scope.get("raw_path")
    path = raw.split(b"?", 1)[0].decode("latin-1") if raw else request.url.path
    query = request.scope.get("query_string", b"").decode("latin-1")
    origin = f"{request.url.scheme}://{request.url.netloc}"
    return f"{origin}{path}?{query}" if query else f"{origin}{path}"


async def current_caller(request: Request) -> Caller:
    """FastAPI dependency: the verified organisation behind a signed request."""
    body = await request.body()
    return await run_in_threadpool(
        authenticate,
        request.app.state.engine,
        request.method,
        target_uri(request),
        request.headers,
        body,
        utcnow(),
    )


async def operator(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
    """FastAPI dependency: the caller, who must hold a key of the platform organisation."""
    if not caller.is_platform:
        raise OperatorOnly("this endpoint needs a key of the platform organisation")
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]
OperatorDep = Annotated[Caller, Depends(operator)]

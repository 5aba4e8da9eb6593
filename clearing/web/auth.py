"""Who sent this request: RFC 9421 verification, the database nonce store, key to organisation.

The signature is verified from the request's head alone, before a byte of its body is read
(``clearing.web.ingress`` then checks the Content-Digest while the body streams in). Per request,
once the signature has verified, one statement in its own committed transaction
(on PostgreSQL one round trip, in autocommit) checks that the key is still active with the PEM
we verified against, reads its organisation and burns the nonce. Parsed public keys are cached
by key id (a key id is the key's thumbprint, so the key behind it never changes), but never
their status: revocation is read from the database on every request.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Protocol, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Depends, Request
from sqlalchemy import Engine, Table, bindparam, delete, select, tuple_
from starlette.types import Scope

from clearing.core.db import Sql, is_postgres
from clearing.core.errors import Forbidden
from clearing.core.models import SeenNonce
from clearing.web.context import Caller
from clearing.web.signatures import (
    NonceReplayed,
    SignatureError,
    SignatureMalformed,
    SignatureMissing,
    SignedMessage,
    UnknownKey,
    load_public_key,
    parse_signed_head,
)

MAX_SKEW = 300
"""Seconds a signature's ``created`` may differ from the server clock, either way."""
NONCE_RETENTION = timedelta(seconds=2 * MAX_SKEW)
"""A nonce first seen at t can come back signed with created <= t + skew, valid until + skew."""
MAX_NONCE = 128
MAX_KEYID = 100
PRUNE_ONE_IN = 64
PRUNE_BATCH = 1000
KEY_CACHE_SIZE = 1024
CALLER = "clearing.caller"
"""Scope key under which the ingress middleware leaves the verified Caller for the routes."""


class OrganisationSuspended(Forbidden):
    code = "organisation_suspended"
    title = "Organisation suspended"


class OperatorOnly(Forbidden):
    code = "operator_only"
    title = "Operator key required"


# --------------------------------------------------------------------------- statements

_NONCES = cast(Table, SeenNonce.__table__)

_old = select(_NONCES.c.keyid, _NONCES.c.nonce).where(
    _NONCES.c.seen_at < bindparam("cutoff", type_=_NONCES.c.seen_at.type)
)
_PRUNE = delete(_NONCES).where(
    tuple_(_NONCES.c.keyid, _NONCES.c.nonce).in_(_old.limit(PRUNE_BATCH))
)
# Two pruners never wait on (or deadlock over) the same rows.
_PRUNE_PG = delete(_NONCES).where(
    tuple_(_NONCES.c.keyid, _NONCES.c.nonce).in_(
        _old.with_for_update(skip_locked=True).limit(PRUNE_BATCH)
    )
)
_PRUNE_STATEMENT = Sql(_PRUNE)
_PRUNE_PG_STATEMENT = Sql(_PRUNE_PG)


# --------------------------------------------------------------------------- key directory


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """The organisation behind an active key, and whether the request's nonce was new."""

    org_id: uuid.UUID
    kind: str
    status: str
    fresh: bool
    """Whether the nonce was new (it is burnt now either way)."""


class KeyDirectory(Protocol):
    """Where partners' keys live: the web layer asks, the organisations' domain answers.

    The app wires the implementation in (``issuers.keys.ORGANISATION_KEYS``), so that the web
    layer never imports a domain.
    """

    def active_pem(self, engine: Engine, keyid: str) -> str | None:
        """The PEM of the active key with this id, committed; None if there is none."""

    def claim(
        self, engine: Engine, keyid: str, pem: str, nonce: str, now: datetime
    ) -> KeyOwner | None:
        """Burn ``nonce`` if the key is still active with ``pem``, in its own committed transaction;
        the key's owner, or None if the key is no longer that."""


# --------------------------------------------------------------------------- keys


class _KeyCache:
    """Parsed public keys by key id, each with the PEM it was parsed from; bounded."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._keys: dict[str, tuple[str, Ed25519PublicKey]] = {}
        self._lock = threading.Lock()

    def get(self, keyid: str) -> tuple[str, Ed25519PublicKey] | None:
        return self._keys.get(keyid)

    def load(self, keyid: str, pem: str) -> Ed25519PublicKey:
        cached = self._keys.get(keyid)
        if cached is not None and cached[0] == pem:
            return cached[1]
        key = load_public_key(pem)
        with self._lock:
            while len(self._keys) >= self._size:
                del self._keys[next(iter(self._keys))]
            self._keys[keyid] = (pem, key)
        return key

    def forget(self, keyid: str) -> None:
        with self._lock:
            self._keys.pop(keyid, None)


_key_cache = _KeyCache(KEY_CACHE_SIZE)


def _verified_pem(
    engine: Engine, keys: KeyDirectory, signed: SignedMessage, now: int, *, use_cache: bool
) -> str:
    """Verify the signature under the key id's active key; the PEM of that key."""
    if use_cache:
        cached = _key_cache.get(signed.keyid)
        if cached is not None:
            try:
                signed.verify(cached[1], now=now, max_skew=MAX_SKEW)
            except SignatureError:
                pass  # the database decides: an unknown or revoked key is reported as such first
            else:
                return cached[0]
    pem = None if len(signed.keyid) > MAX_KEYID else keys.active_pem(engine, signed.keyid)
    key = None if pem is None else _key_cache.load(signed.keyid, pem)
    signed.verify(key, now=now, max_skew=MAX_SKEW)  # UnknownKey when there is none
    assert pem is not None
    return pem


# --------------------------------------------------------------------------- nonces


def prune_nonces(engine: Engine, now: datetime) -> None:
    """Forget nonces too old to be replayed, a bounded batch at a time."""
    statement = _PRUNE_PG_STATEMENT if is_postgres(engine) else _PRUNE_STATEMENT
    statement.first_committed(engine, {"cutoff": now - NONCE_RETENTION})


# --------------------------------------------------------------------------- requests


def authenticate(
    engine: Engine,
    keys: KeyDirectory,
    method: str,
    url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    now: datetime,
    *,
    has_body: bool,
) -> Caller:
    """Verify a signed request's head and burn its nonce; return the organisation that signed it."""
    # No body: the caller checks its Content-Digest as it streams in, so nothing of an
    # unauthenticated request's body is ever read. The nonce is burnt in its own transaction,
    # committed before the request's work: a request that then fails must not leave its nonce
    # reusable, or a declined payment could be replayed once it would pass. Only a request
    # whose signature verified burns a nonce.
    signed = parse_signed_head(method, url, headers, has_body=has_body)
    keyid = signed.keyid
    nonce = signed.nonce or ""
    timestamp = int(now.timestamp())
    nonce_ok = 1 <= len(nonce) <= MAX_NONCE
    # Errors keep their order: unknown key, clock, signature, nonce, replay, status; the digest
    # comes last, once the body has been read.
    pem = _verified_pem(engine, keys, signed, timestamp, use_cache=nonce_ok)
    if not nonce_ok:
        raise SignatureMalformed(f"signature nonce must be 1 to {MAX_NONCE} characters")
    owner = keys.claim(engine, keyid, pem, nonce, now)
    if owner is None:
        # Revoked since we parsed it: the database, not the cache, says so.
        _key_cache.forget(keyid)
        pem = _verified_pem(engine, keys, signed, timestamp, use_cache=False)
        owner = keys.claim(engine, keyid, pem, nonce, now)
        if owner is None:
            raise UnknownKey("the signature keyid is not a known key")
    if not owner.fresh:
        raise NonceReplayed("this signature nonce was already used with this key")
    if secrets.randbelow(PRUNE_ONE_IN) == 0:
        prune_nonces(engine, now)
    if owner.status != "active":
        raise OrganisationSuspended(f"organisation is {owner.status}")
    return Caller(owner.org_id, owner.kind, keyid)


def target_uri(scope: Scope) -> str:
    """The request's URL as the client sent it: path and query still percent-encoded."""
    # scope["path"] is decoded; the signature covers the encoded form the client wrote.
    request = Request(scope)
    raw: bytes | None = scope.get("raw_path")
    path = raw.split(b"?", 1)[0].decode("latin-1") if raw else request.url.path
    query = scope.get("query_string", b"").decode("latin-1")
    origin = f"{request.url.scheme}://{request.url.netloc}"
    return f"{origin}{path}?{query}" if query else f"{origin}{path}"


async def current_caller(request: Request) -> Caller:
    """FastAPI dependency: the organisation the ingress middleware verified for this request."""
    caller = request.scope.get(CALLER)
    if not isinstance(caller, Caller):
        # A route reached without the middleware (an app assembled without it) serves nobody.
        raise SignatureMissing("Signature-Input and Signature headers are required")
    return caller


async def operator(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
    """FastAPI dependency: the caller, who must hold a key of the platform organisation."""
    if not caller.is_platform:
        raise OperatorOnly("this endpoint needs a key of the platform organisation")
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]
OperatorDep = Annotated[Caller, Depends(operator)]

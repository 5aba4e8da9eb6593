"""API keys of organisations: register, revoke, resolve (no HTTP here)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, cast

from cryptography.hazmat.primitives import serialization
from pydantic import Field
from sqlalchemy import Connection, Engine, Table, bindparam, exists, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from clearing.core.db import Sql, is_postgres
from clearing.core.errors import Conflict, NotFound
from clearing.core.models import SeenNonce
from clearing.core.schemas import Model
from clearing.core.timeutil import aware
from clearing.web.auth import KeyOwner
from clearing.web.platform_key import jwk_thumbprint
from clearing.web.signatures import load_public_key, public_jwk
from issuers.models import ApiKey, Organisation


class KeyExists(Conflict):
    code = "key_exists"
    title = "Public key already registered"


class ApiKeyCreate(Model):
    public_key: str | dict[str, str] = Field(
        description="Ed25519 public key: SubjectPublicKeyInfo PEM, or an OKP JWK (object or text)"
    )


class ApiKeyOut(Model):
    keyid: str
    org_id: uuid.UUID
    status: str
    jwk: dict[str, str]
    created_at: datetime
    revoked_at: datetime | None


def key_out(key: ApiKey) -> ApiKeyOut:
    """The public view of an API key."""
    return ApiKeyOut(
        keyid=key.keyid,
        org_id=key.org_id,
        status=key.status,
        jwk=public_jwk(load_public_key(key.public_key_pem), key.keyid),
        created_at=aware(key.created_at),
        revoked_at=aware(key.revoked_at) if key.revoked_at else None,
    )


def add_key(session: Session, org_id: uuid.UUID, req: ApiKeyCreate, now: datetime) -> ApiKeyOut:
    """Register a public key for an organisation; its id is the key's JWK thumbprint."""
    if session.get(Organisation, org_id) is None:
        raise NotFound("unknown organisation")
    text = req.public_key if isinstance(req.public_key, str) else json.dumps(req.public_key)
    public = load_public_key(text)
    keyid = jwk_thumbprint(public)
    if session.get(ApiKey, keyid) is not None:
        raise KeyExists("this public key is already registered", keyid=keyid)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    key = ApiKey(keyid=keyid, org_id=org_id, public_key_pem=pem, status="active", created_at=now)
    session.add(key)
    session.flush()
    return key_out(key)


def revoke_key(
    session: Session, keyid: str, now: datetime, org_id: uuid.UUID | None = None
) -> ApiKeyOut:
    """Revoke a key at once (idempotent); with ``org_id``, only a key of that organisation."""
    key = session.get(ApiKey, keyid, with_for_update=True)
    if key is None or (org_id is not None and key.org_id != org_id):
        raise NotFound("unknown key")
    if key.status != "revoked":
        session.execute(
            update(ApiKey).where(ApiKey.keyid == keyid).values(status="revoked", revoked_at=now)
        )
        session.refresh(key)
    return key_out(key)


def list_keys(session: Session, org_id: uuid.UUID) -> list[ApiKeyOut]:
    """Every key of an organisation, oldest first."""
    keys = session.execute(
        select(ApiKey).where(ApiKey.org_id == org_id).order_by(ApiKey.created_at, ApiKey.keyid)
    ).scalars()
    return [key_out(k) for k in keys]


# --------------------------------------------------------------------------- the key directory

_KEYS = cast(Table, ApiKey.__table__)
_ORGS = cast(Table, Organisation.__table__)
_NONCES = cast(Table, SeenNonce.__table__)
_SEEN_AT = bindparam("seen_at", type_=_NONCES.c.seen_at.type)

_ACTIVE_PEM = select(_KEYS.c.public_key_pem).where(
    _KEYS.c.keyid == bindparam("keyid"), _KEYS.c.status == "active"
)
_OWNER = (
    select(_KEYS.c.keyid, _ORGS.c.id.label("org_id"), _ORGS.c.kind, _ORGS.c.status)
    .join_from(_KEYS, _ORGS, _ORGS.c.id == _KEYS.c.org_id)
    .where(
        _KEYS.c.keyid == bindparam("keyid"),
        _KEYS.c.status == "active",
        _KEYS.c.public_key_pem == bindparam("pem"),
    )
)
"""The owner of a key that is active and still the key we verified against."""

_owner = _OWNER.cte("owner")
_burnt = (
    pg_insert(_NONCES)
    .from_select(
        ["keyid", "nonce", "seen_at"],
        select(_owner.c.keyid, bindparam("nonce", type_=_NONCES.c.nonce.type), _SEEN_AT),
    )
    .on_conflict_do_nothing()
    .returning(_NONCES.c.nonce)
    .cte("burnt")
)
_CLAIM_PG = select(
    _owner.c.org_id,
    _owner.c.kind,
    _owner.c.status,
    exists(select(_burnt.c.nonce)).label("fresh"),
)
"""PostgreSQL, one round trip: the owner of the key, and whether its nonce was new (now burnt)."""
_INSERT_NONCE_SQLITE = sqlite_insert(_NONCES).on_conflict_do_nothing().returning(_NONCES.c.nonce)

_ACTIVE_PEM_STATEMENT = Sql(_ACTIVE_PEM)
_CLAIM_STATEMENT = Sql(_CLAIM_PG)


class OrganisationKeys:
    """The web layer's key directory over organisations' API keys (see ``clearing.web.auth``)."""

    def active_pem(self, engine: Engine, keyid: str) -> str | None:
        """The PEM of the active key with this id; None if there is none."""
        row = _ACTIVE_PEM_STATEMENT.first_committed(engine, {"keyid": keyid})
        return None if row is None else str(row.public_key_pem)

    def claim(
        self, engine: Engine, keyid: str, pem: str, nonce: str, now: datetime
    ) -> KeyOwner | None:
        """Burn the nonce if the key is still active with this PEM: its owner; None if it is not."""
        params = {"keyid": keyid, "pem": pem, "nonce": nonce, "seen_at": now}
        if is_postgres(engine):
            row = _CLAIM_STATEMENT.first_committed(engine, params)
            return (
                None if row is None else KeyOwner(row.org_id, row.kind, row.status, bool(row.fresh))
            )
        with engine.begin() as conn:
            return _claim_in(conn, params)


def _claim_in(conn: Connection, params: dict[str, Any]) -> KeyOwner | None:
    owner = conn.execute(_OWNER, params).first()
    if owner is None:
        return None
    inserted = conn.execute(_INSERT_NONCE_SQLITE, params).first()
    return KeyOwner(owner.org_id, owner.kind, owner.status, inserted is not None)


ORGANISATION_KEYS = OrganisationKeys()
"""The one key directory the app wires into the web layer."""

"""API keys of organisations: register, revoke, resolve (no HTTP here)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from pydantic import Field
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from clearing.errors import Conflict, NotFound
from clearing.platform_key import jwk_thumbprint
from clearing.schemas import Model
from clearing.signatures import load_public_key, public_jwk
from clearing.timeutil import aware
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

"""Helpers of the API tests: parties with keys, a bootstrap, a raw signed request."""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from starlette.testclient import TestClient

from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.timeutil import utcnow
from clearing.sdk.client import PartnerClient
from clearing.web.signatures import sign_request
from issuers.keys import ApiKeyCreate, add_key
from issuers.organisations import create_organisation
from issuers.schemas import OrganisationCreate

BASE = "http://testserver"


def public_pem(key: Ed25519PrivateKey) -> str:
    """The SubjectPublicKeyInfo PEM of a private key's public half."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@dataclass
class Party:
    """An organisation with one signing key."""

    org_id: str
    keyid: str
    key: Ed25519PrivateKey


@dataclass
class World:
    """The platform operator, two issuers with a program each, two merchants."""

    app: FastAPI
    operator: Party
    bank: Party
    telco: Party
    shop: Party
    other_shop: Party

    def payment_token(self, program: str = "BANK", external_id: str = "alice") -> str:
        """A payment token the program's issuer mints for its member (the member's consent)."""
        issuer = self.bank if program == "BANK" else self.telco
        with self.client(issuer) as client:
            return str(client.payment_token(program, external_id)["token"])

    def client(self, party: Party) -> PartnerClient:
        """An SDK client for ``party`` talking to the app in-process."""
        return PartnerClient(
            BASE, party.keyid, party.key, transport=httpx.ASGITransport(app=self.app)
        )


def agree_everything(w: World) -> None:
    """The agreements the risk controls ask for: each issuer lets both merchants accept and
    fund its program's points, and the two issuers consent to interchange."""
    for issuer, program in ((w.bank, "BANK"), (w.telco, "TEL")):
        for merchant in (w.shop, w.other_shop):
            with w.client(issuer) as client:
                proposed = client.request(
                    "POST",
                    "/v1/agreements",
                    {
                        "program": program,
                        "merchant_id": merchant.org_id,
                        "accept": True,
                        "fund": True,
                    },
                )
            with w.client(merchant) as client:
                client.request("POST", f"/v1/agreements/{proposed['id']}/approve", {})
    for issuer, counterparty in ((w.bank, w.telco), (w.telco, w.bank)):
        with w.client(issuer) as client:
            client.request("PUT", f"/v1/interchange/{counterparty.org_id}", {"enabled": True})


def make_settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings on ``db_url`` with a platform key under ``tmp_path``."""
    return dataclasses.replace(
        Settings.from_env(),
        database_url=db_url,
        platform_key_path=tmp_path / "keys" / "platform.pem",
        settlement_dir=tmp_path / "settlement",
    )


def bootstrap_operator(app: FastAPI) -> Party:
    """What `clearing org create --kind platform` and `clearing key add` do."""
    key = Ed25519PrivateKey.generate()
    now = utcnow()
    with transaction(app.state.engine) as session:
        org = create_organisation(
            session, OrganisationCreate(kind="platform", name="Platform", currency="CNY"), now
        )
        added = add_key(session, org.id, ApiKeyCreate(public_key=public_pem(key)), now)
    return Party(str(org.id), added.keyid, key)


def onboard(operator: PartnerClient, kind: str, name: str) -> Party:
    """Create an organisation and register a fresh key for it, through the operator API."""
    org = operator.request(
        "POST", "/v1/organizations", {"kind": kind, "name": name, "currency": "CNY"}
    )
    key = Ed25519PrivateKey.generate()
    added = operator.request(
        "POST", f"/v1/organizations/{org['id']}/keys", {"public_key": public_pem(key)}
    )
    return Party(org["id"], added["keyid"], key)


def signed(
    http: TestClient,
    party: Party,
    method: str,
    path: str,
    body: Mapping[str, Any] | bytes | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    created: int | None = None,
    nonce: str | None = None,
    idempotency_key: str | None = "auto",
    **sign_options: Any,
) -> httpx.Response:
    """Send a request signed with our own signer, with every knob a test may want to turn."""
    content = (
        body
        if isinstance(body, bytes)
        else b""
        if body is None
        else json.dumps(body, separators=(",", ":")).encode()
    )
    all_headers = dict(headers or {})
    if content:
        all_headers.setdefault("Content-Type", "application/json")
    if method == "POST" and idempotency_key is not None:
        all_headers["Idempotency-Key"] = (
            str(uuid.uuid4()) if idempotency_key == "auto" else idempotency_key
        )
    # sign_request covers the Idempotency-Key too, as the platform requires of a POST.
    added = sign_request(
        party.key,
        party.keyid,
        method,
        BASE + path,
        all_headers,
        content,
        created=int(time.time()) if created is None else created,
        nonce=nonce or secrets.token_urlsafe(16),
        **sign_options,
    )
    response: httpx.Response = http.request(
        method, path, headers={**all_headers, **added}, content=content
    )
    return response


PROBLEM = "application/problem+json"


def assert_problem(response: object, status: int, code: str) -> dict[str, object]:
    """The response is a signed problem+json with this status and code."""
    assert hasattr(response, "status_code")
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == PROBLEM  # type: ignore[attr-defined]
    assert "signature" in response.headers  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["code"] == code
    assert body["status"] == status
    return body

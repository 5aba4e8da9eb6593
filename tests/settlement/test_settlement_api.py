"""Settlement over the signed API: each party lists its batches and downloads only its files."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from starlette.testclient import TestClient

from clearing.app.factory import create_app
from clearing.core.db import transaction
from clearing.web.context import Caller
from clearing.web.signatures import sign_request
from issuers.keys import ApiKeyCreate, add_key
from settlement.service import run_batch
from tests.factories import T0
from tests.settlement.settlement_world import (
    AFTER_DAY2,
    DAY1,
    DAY2,
    Days,
    book_two_days,
    settlement_settings,
)

BASE = "http://testserver"
Signer = tuple[str, Ed25519PrivateKey]


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[FastAPI]:
    application = create_app(settlement_settings(db_url, tmp_path))
    yield application
    application.state.engine.dispose()


def signer(app: FastAPI, party: Caller) -> Signer:
    key = Ed25519PrivateKey.generate()
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with transaction(app.state.engine) as session:
        added = add_key(session, party.org_id, ApiKeyCreate(public_key=pem), T0)
    return added.keyid, key


def get(http: TestClient, who: Signer, path: str) -> httpx.Response:
    headers = sign_request(
        who[1],
        who[0],
        "GET",
        BASE + path,
        {},
        b"",
        created=int(time.time()),
        nonce=secrets.token_urlsafe(16),
    )
    response: httpx.Response = http.get(path, headers=headers)
    return response


@pytest.fixture
def settled(app: FastAPI) -> Days:
    days = book_two_days(app.state.engine)
    settings = app.state.settings
    run_batch(app.state.engine, DAY1, "CNY", AFTER_DAY2, settings)
    run_batch(app.state.engine, DAY2, "CNY", AFTER_DAY2, settings)
    return days


def test_party_lists_only_its_batches_and_position(app: FastAPI, settled: Days) -> None:
    http = TestClient(app, base_url=BASE)
    w = settled.world
    carrier = signer(app, w.carrier)
    page = get(http, carrier, "/v1/settlement/batches")
    assert page.status_code == 200, page.text
    body = page.json()
    # the carrier only took part on day 1 (a MOBILE capture)
    assert [b["business_date"] for b in body["items"]] == [DAY1.isoformat()]
    item = body["items"][0]
    assert [p["org_id"] for p in item["positions"]] == [str(w.carrier.org_id)]
    assert {f["name"] for f in item["files"]} >= {"statement.csv", "camt053.xml", "manifest.json"}
    operator = signer(app, w.platform)
    first = get(http, operator, "/v1/settlement/batches?limit=1").json()
    assert [b["business_date"] for b in first["items"]] == [DAY2.isoformat()]
    assert len(first["items"][0]["positions"]) > 1
    assert first["next"]
    rest = get(http, operator, f"/v1/settlement/batches?limit=1&after={first['next']}").json()
    assert [b["business_date"] for b in rest["items"]] == [DAY1.isoformat()]
    assert rest["next"] is None


def test_downloads_are_tenant_scoped(app: FastAPI, settled: Days) -> None:
    http = TestClient(app, base_url=BASE)
    w = settled.world
    shop, cafe, operator = signer(app, w.shop), signer(app, w.cafe), signer(app, w.platform)
    root: Path = app.state.settings.settlement_dir
    own = get(http, shop, f"/v1/settlement/batches/{DAY1}/files/statement.csv")
    assert own.status_code == 200, own.text
    on_disk = (root / "CNY" / DAY1.isoformat() / str(w.shop.org_id) / "statement.csv").read_bytes()
    assert own.content == on_disk
    assert own.headers["x-content-sha256"] == hashlib.sha256(on_disk).hexdigest()
    assert own.headers["content-type"].startswith("text/csv")
    sig = get(http, shop, f"/v1/settlement/batches/{DAY1}/files/manifest.json.sig")
    assert sig.status_code == 200
    assert len(sig.content) == 64
    # another party's file, a file that does not exist, a day with no batch: all 404
    for path in (
        f"/v1/settlement/batches/{DAY1}/files/statement.csv?party={w.shop.org_id}",
        f"/v1/settlement/batches/{DAY1}/files/nothing.csv",
        "/v1/settlement/batches/2026-01-01/files/statement.csv",
    ):
        response = get(http, cafe, path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 404
    # the carrier has no folder on day 2
    carrier = signer(app, w.carrier)
    assert (
        get(http, carrier, f"/v1/settlement/batches/{DAY2}/files/statement.csv").status_code == 404
    )
    # the operator may fetch any party's file
    theirs = get(
        http, operator, f"/v1/settlement/batches/{DAY1}/files/statement.csv?party={w.shop.org_id}"
    )
    assert theirs.status_code == 200
    assert theirs.content == on_disk

"""Fixtures of the API tests: the real ASGI app on a real database, with real Ed25519 keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from clearing.app.factory import create_app
from clearing.core.config import Settings
from tests.api.api_support import (
    BASE,
    World,
    agree_everything,
    bootstrap_operator,
    make_settings,
    onboard,
)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path)


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    application = create_app(settings)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def http(app: FastAPI) -> TestClient:
    """A raw HTTP client on the app (no signing of its own)."""
    return TestClient(app, base_url=BASE)


@pytest.fixture
def world(app: FastAPI) -> World:
    operator = bootstrap_operator(app)
    w = World(app, operator, operator, operator, operator, operator)
    with w.client(operator) as op:
        w.bank = onboard(op, "issuer", "Bank")
        w.telco = onboard(op, "issuer", "Telco")
        w.shop = onboard(op, "merchant", "Shop")
        w.other_shop = onboard(op, "merchant", "Other shop")
    with w.client(w.bank) as bank:
        bank.request(
            "POST", "/v1/programs", {"code": "BANK", "name": "Bank points", "point_value": "0.01"}
        )
        bank.request("POST", "/v1/programs/BANK/members", {"external_id": "alice"})
        bank.request("POST", "/v1/programs/BANK/members", {"external_id": "bob"})
    with w.client(w.telco) as telco:
        telco.request(
            "POST", "/v1/programs", {"code": "TEL", "name": "Telco points", "point_value": "0.005"}
        )
        telco.request("POST", "/v1/programs/TEL/members", {"external_id": "carol"})
    agree_everything(w)
    return w

"""Property-based requests from our own OpenAPI document, each one signed: no input gives a 5xx."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from starlette.testclient import TestClient

from clearing.web.signatures import sign_request
from tests.api.api_support import BASE, Party, World, signed


def _party(world: World, path: str) -> Party:
    if path.startswith("/v1/organizations"):
        return world.operator
    if path.startswith("/v1/checkouts"):
        return world.shop
    return world.bank


def _send(http: TestClient, party: Party, case: Any) -> Any:
    kwargs = case.as_transport_kwargs(base_url=BASE)
    if "json" in kwargs:
        content = json.dumps(kwargs["json"]).encode()
    else:
        data = kwargs.get("data") or b""
        content = data.encode() if isinstance(data, str) else bytes(data)
    headers = {str(k): str(v) for k, v in (kwargs.get("headers") or {}).items()}
    if kwargs["method"].upper() == "POST":
        headers.setdefault("Idempotency-Key", secrets.token_hex(8))
    if content:
        headers.setdefault("Content-Type", "application/json")
    request = http.build_request(
        kwargs["method"],
        kwargs["url"],
        params=kwargs.get("params"),
        headers=headers,
        content=content,
    )
    added = sign_request(
        party.key,
        party.keyid,
        request.method,
        str(request.url),
        dict(request.headers),
        content,
        created=int(time.time()),
        nonce=secrets.token_urlsafe(16),
    )
    request.headers.update(added)
    return http.send(request)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_no_generated_request_is_a_server_error(world: World, http: TestClient) -> None:
    # Some real data, so that generated ids and codes sometimes hit existing rows.
    signed(
        http,
        world.bank,
        "POST",
        "/v1/accruals",
        {"program": "BANK", "external_id": "alice", "points": 500},
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", world.app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 20
    for operation in operations:
        _fuzz(http, _party(world, operation.path), operation)


def _fuzz(http: TestClient, party: Party, operation: Any) -> None:
    @settings(
        max_examples=20,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response = _send(http, party, case)
        assert response.status_code != 401, response.text
        case.validate_response(response, checks=[not_a_server_error])

    run()

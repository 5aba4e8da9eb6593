"""Idempotency keys over HTTP, and problem+json for malformed requests and unknown routes."""

from __future__ import annotations

from starlette.testclient import TestClient

from tests.api.api_support import World, signed


def test_replay_is_byte_for_byte_with_header(world: World, http: TestClient) -> None:
    body = {"program": "BANK", "external_id": "alice", "points": 10}
    first = signed(http, world.bank, "POST", "/v1/accruals", body, idempotency_key="acc-1")
    second = signed(http, world.bank, "POST", "/v1/accruals", body, idempotency_key="acc-1")
    assert first.status_code == second.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert second.content == first.content
    member = signed(http, world.bank, "GET", "/v1/programs/BANK/members/alice").json()
    assert member["balance"] == 10

    # Routes whose services are not idempotent themselves are made so at the route.
    program = {"code": "BANK2", "name": "Second", "point_value": "0.02"}
    a = signed(http, world.bank, "POST", "/v1/programs", program, idempotency_key="p-1")
    b = signed(http, world.bank, "POST", "/v1/programs", program, idempotency_key="p-1")
    assert (a.status_code, b.status_code) == (201, 201)
    assert b.content == a.content
    assert b.headers["idempotent-replayed"] == "true"


def test_same_key_other_body_is_conflict(world: World, http: TestClient) -> None:
    body = {"program": "BANK", "external_id": "alice", "points": 10}
    assert (
        signed(http, world.bank, "POST", "/v1/accruals", body, idempotency_key="k").status_code
        == 201
    )
    other = signed(
        http, world.bank, "POST", "/v1/accruals", {**body, "points": 11}, idempotency_key="k"
    )
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["code"] == "idempotency_conflict"
    # Keys are per organisation: another issuer may use the same key string.
    telco = {"program": "TEL", "external_id": "carol", "points": 1}
    assert (
        signed(http, world.telco, "POST", "/v1/accruals", telco, idempotency_key="k").status_code
        == 201
    )


def test_post_without_idempotency_key(world: World, http: TestClient) -> None:
    body = {"program": "BANK", "external_id": "alice", "points": 10}
    response = signed(http, world.bank, "POST", "/v1/accruals", body, idempotency_key=None)
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_missing"


def test_validation_errors_do_not_echo_input(world: World, http: TestClient) -> None:
    secret = "4111111111111111"
    body = {"program": "BANK", "external_id": "alice", "points": -5, "card": secret}
    response = signed(http, world.bank, "POST", "/v1/accruals", body)
    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["code"] == "invalid_input"
    assert {tuple(e["loc"]) for e in problem["errors"]} == {("body", "points"), ("body", "card")}
    assert secret not in response.text
    assert "signature" in response.headers

    broken = signed(http, world.bank, "POST", "/v1/accruals", b"{not json")
    assert broken.status_code == 422
    assert broken.json()["code"] == "invalid_input"


def test_unknown_routes_and_methods(world: World, http: TestClient) -> None:
    missing = signed(http, world.bank, "GET", "/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "not_found"
    wrong = signed(http, world.bank, "PUT", "/v1/accruals")
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"
    bad_id = signed(http, world.shop, "GET", "/v1/checkouts/not-a-uuid")
    assert bad_id.status_code == 422

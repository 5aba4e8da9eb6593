"""Idempotency keys over HTTP, and problem+json for malformed requests and unknown routes."""

from __future__ import annotations

import httpx
from sqlalchemy import update
from starlette.testclient import TestClient

from clearing.core.models import IdempotencyRecord
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


def test_conflict_names_the_request_field_that_differs(world: World, http: TestClient) -> None:
    body = {"program": "BANK", "external_id": "alice", "points": 10}
    first = signed(http, world.bank, "POST", "/v1/accruals", body, idempotency_key="field")
    assert first.status_code == 201
    other = signed(
        http, world.bank, "POST", "/v1/accruals", {**body, "points": 11}, idempotency_key="field"
    )
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"
    problem = other.json()
    assert (problem["code"], problem["differs"], problem["differing"]) == (
        "idempotency_conflict",
        "points",
        "request",
    )
    # A field the first request left out differs too; the first answer still replays.
    added = signed(
        http,
        world.bank,
        "POST",
        "/v1/accruals",
        {**body, "reference": "card-spend-9"},
        idempotency_key="field",
    )
    assert (added.status_code, added.json()["differs"]) == (409, "reference")
    again = signed(http, world.bank, "POST", "/v1/accruals", body, idempotency_key="field")
    assert again.content == first.content
    member = signed(http, world.bank, "GET", "/v1/programs/BANK/members/alice").json()
    assert member["balance"] == 10


def test_conflict_names_a_path_field_and_another_operation(world: World, http: TestClient) -> None:
    # Captures and voids read their checkout with the key's claim (one statement on PostgreSQL).
    accrual = {"program": "BANK", "external_id": "alice", "points": 1000}
    assert signed(http, world.bank, "POST", "/v1/accruals", accrual).status_code == 201
    ids = []
    for _ in range(2):
        checkout = {"program": "BANK", "external_id": "alice", "order_total": 300}
        body = {**checkout, "points_amount": 300, "payment_token": world.payment_token()}
        made = signed(http, world.shop, "POST", "/v1/checkouts", body)
        assert made.status_code == 201
        ids.append(made.json()["id"])

    def capture(checkout_id: str, amount: int) -> httpx.Response:
        path = f"/v1/checkouts/{checkout_id}/capture"
        return signed(http, world.shop, "POST", path, {"amount": amount}, idempotency_key="cap")

    assert capture(ids[0], 100).status_code == 201
    other_amount = capture(ids[0], 200)
    assert (other_amount.status_code, other_amount.json()["differs"]) == (409, "amount")
    other_checkout = capture(ids[1], 100)
    assert (other_checkout.status_code, other_checkout.json()["differs"]) == (409, "checkout")
    voided = signed(
        http, world.shop, "POST", f"/v1/checkouts/{ids[1]}/void", None, idempotency_key="cap"
    )
    problem = voided.json()
    assert voided.status_code == 409
    assert (problem["code"], problem["differs"], problem["differing"]) == (
        "idempotency_conflict",
        "operation",
        "operation",
    )
    # The conflicting requests changed nothing: the second checkout is still authorised.
    second = signed(http, world.shop, "GET", f"/v1/checkouts/{ids[1]}").json()
    assert second["status"] == "authorised"


def test_conflict_with_a_record_from_before_field_digests(world: World, http: TestClient) -> None:
    body = {"program": "BANK", "external_id": "alice", "points": 10}
    first = signed(http, world.bank, "POST", "/v1/accruals", body, idempotency_key="old")
    assert first.status_code == 201
    with world.app.state.engine.begin() as connection:
        forgotten = connection.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == "old")
            .values(request_digests=None)
        )
        assert forgotten.rowcount == 1
    other = signed(
        http, world.bank, "POST", "/v1/accruals", {**body, "points": 12}, idempotency_key="old"
    )
    assert (other.status_code, other.json()["differs"]) == (409, "request")
    again = signed(http, world.bank, "POST", "/v1/accruals", body, idempotency_key="old")
    assert (again.status_code, again.content) == (201, first.content)

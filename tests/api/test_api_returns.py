"""Returns, adjustments and transfers through the real app: signed requests, problem+json
refusals, idempotent replays."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.testclient import TestClient

from clearing.core.db import transaction
from clearing.core.ids import new_id
from clearing.core.timeutil import utcnow
from clearing.sdk.client import ApiError
from issuers.members import member_of
from issuers.models import ProgramEvent
from issuers.programs import program_by_code
from tests.api.api_support import Party, World, assert_problem, public_pem, signed


def second_key(w: World, party: Party) -> Party:
    """The operator registers another key of the same organisation."""
    key = Ed25519PrivateKey.generate()
    with w.client(w.operator) as op:
        added = op.request(
            "POST", f"/v1/organizations/{party.org_id}/keys", {"public_key": public_pem(key)}
        )
    return Party(party.org_id, added["keyid"], key)


def member_view(w: World, external_id: str) -> dict[str, int]:
    with w.client(w.bank) as bank:
        return dict(bank.request("GET", f"/v1/programs/BANK/members/{external_id}"))


def test_a_reversal_of_spent_points_records_a_debt_repaid_by_the_next_accrual(
    world: World,
) -> None:
    w = world
    with w.client(w.bank) as bank:
        policy = bank.request("PUT", "/v1/programs/BANK/return-policy", {"spent_reversal": "debt"})
        assert policy == {"program": "BANK", "spent_reversal": "debt"}
        bank.request("PUT", "/v1/programs/BANK/transfer-rules", {"allowed": True})
        earned = bank.accrue("BANK", "alice", 100)
        bank.request(
            "POST",
            "/v1/programs/BANK/transfers",
            {"from_external_id": "alice", "to_external_id": "bob", "points": 60},
        )
        reversed_ = bank.request("POST", f"/v1/accruals/{earned['id']}/reversals", {"points": 100})
        # alice had 40 left: taken; 60 she gave away are owed.
        assert (reversed_["points_taken"], reversed_["debt_recorded"]) == (40, 60)
        assert member_view(w, "alice")["debt"] == 60
        bank.accrue("BANK", "alice", 100)
        view = member_view(w, "alice")
        assert (view["balance"], view["debt"]) == (40, 0)
        lines = bank.request("GET", "/v1/programs/BANK/members/alice/statement")["items"]
    assert [(ln["kind"], ln["points"], ln["balance_after"]) for ln in lines] == [
        ("accrual", 100, 100),
        ("transfer", -60, 40),
        ("accrual_reversal", -40, 0),
        ("accrual", 100, 100),
        ("debt_recovery", -60, 40),
    ]
    assert lines[1]["counterparty"] == "bob"
    assert lines[2]["debt_recorded"] == 60
    assert lines[4]["debt_repaid"] == 60


def test_adjustments_need_two_keys_of_the_issuer(world: World, http: TestClient) -> None:
    w = world
    checker = second_key(w, w.bank)
    proposed = signed(
        http,
        w.bank,
        "POST",
        "/v1/programs/BANK/adjustments",
        {"external_id": "alice", "direction": "credit", "points": 70, "reason_code": "goodwill"},
    )
    assert proposed.status_code == 201, proposed.text
    adjustment = proposed.json()
    path = f"/v1/programs/BANK/adjustments/{adjustment['id']}"
    same = signed(http, w.bank, "POST", f"{path}/approve", {})
    assert_problem(same, 403, "maker_checker")
    other_issuer = signed(http, w.telco, "POST", f"{path}/approve", {})
    assert_problem(other_issuer, 404, "not_found")
    approved = signed(http, checker, "POST", f"{path}/approve", {})
    assert approved.status_code == 201, approved.text
    body = approved.json()
    assert body["status"] == "approved"
    assert [(s["step"], s["key_id"]) for s in body["steps"]] == [
        ("proposed", w.bank.keyid),
        ("approved", checker.keyid),
    ]
    assert_problem(signed(http, checker, "POST", f"{path}/reject", {}), 409, "adjustment_decided")
    assert member_view(w, "alice")["balance"] == 70
    debit = signed(
        http,
        w.bank,
        "POST",
        "/v1/programs/BANK/adjustments",
        {"external_id": "alice", "direction": "debit", "points": 71, "reason_code": "fraud"},
    ).json()
    refused = signed(
        http, checker, "POST", f"/v1/programs/BANK/adjustments/{debit['id']}/approve", {}
    )
    assert_problem(refused, 409, "insufficient_points")
    with w.client(checker) as client:
        waiting = client.request(
            "GET", "/v1/programs/BANK/adjustments", params={"status": "proposed"}
        )
    assert [a["id"] for a in waiting] == [debit["id"]]


def test_a_transfer_replays_and_refuses_by_the_rules(world: World, http: TestClient) -> None:
    w = world
    with w.client(w.bank) as bank:
        bank.accrue("BANK", "alice", 500)
        refused = signed(
            http,
            w.bank,
            "POST",
            "/v1/programs/BANK/transfers",
            {"from_external_id": "alice", "to_external_id": "bob", "points": 50},
        )
        assert_problem(refused, 409, "transfers_not_allowed")
        rules = bank.request(
            "PUT",
            "/v1/programs/BANK/transfer-rules",
            {"allowed": True, "fee_points": 2, "min_points": 10, "max_points": 100},
        )
        assert rules["fee_points"] == 2
        assert bank.request("GET", "/v1/programs/BANK/transfer-rules") == rules
    idem = str(uuid.uuid4())
    body = {"from_external_id": "alice", "to_external_id": "bob", "points": 50}
    first = signed(http, w.bank, "POST", "/v1/programs/BANK/transfers", body, idempotency_key=idem)
    again = signed(http, w.bank, "POST", "/v1/programs/BANK/transfers", body, idempotency_key=idem)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    too_big = {**body, "points": 101}
    assert_problem(
        signed(http, w.bank, "POST", "/v1/programs/BANK/transfers", too_big),
        409,
        "transfer_out_of_bounds",
    )
    assert member_view(w, "alice")["balance"] == 448
    assert member_view(w, "bob")["balance"] == 50


def test_a_purchase_event_refund_takes_back_its_points(world: World, http: TestClient) -> None:
    w = world
    with w.client(w.bank) as bank:
        earned = bank.accrue("BANK", "alice", 30)
    with transaction(w.app.state.engine) as session:
        program = program_by_code(session, "BANK")
        event_id = new_id()
        session.add(
            ProgramEvent(
                id=event_id,
                program_id=program.id,
                member_id=member_of(session, program, "alice").id,
                kind="purchase",
                posted_by=program.issuer_id,
                occurred_at=utcnow(),
                spend=999,
                currency="CNY",
                points=30,
                accrual_id=uuid.UUID(earned["id"]),
                explanation=[],
                refunded_spend=0,
                created_at=utcnow(),
            )
        )
    path = f"/v1/programs/BANK/events/{event_id}/refunds"
    part = signed(http, w.bank, "POST", path, {"spend": 500})
    assert part.status_code == 201, part.text
    assert part.json()["points"] == 15  # floor(30 x 500 / 999) = 15
    assert_problem(signed(http, w.bank, "POST", path, {"spend": 500}), 409, "refund_exceeds_spend")
    rest = signed(http, w.bank, "POST", path, {"spend": 499})
    assert rest.json()["points"] == 15
    assert member_view(w, "alice")["balance"] == 0
    with w.client(w.telco) as telco, pytest.raises(ApiError) as err:
        telco.request("POST", path, {"spend": 1})
    assert err.value.code == "not_found"

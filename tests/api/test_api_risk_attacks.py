"""The attacks of issue 9, tried through the signed API as a hostile partner would: each is
declined (or held for review) by the platform's default controls."""

from __future__ import annotations

import pytest

from clearing.sdk.client import ApiError
from tests.api.api_support import World, onboard


def refused(call: object, *args: object, **kwargs: object) -> ApiError:
    """The problem a call answers with (it must answer with one)."""
    assert callable(call)
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    return caught.value


def test_a_merchant_cannot_fund_accruals_into_a_program_without_its_issuers_agreement(
    world: World,
) -> None:
    with world.client(world.operator) as op:
        rogue = onboard(op, "merchant", "Rogue shop")
    with world.client(rogue) as client:
        error = refused(client.accrue, "BANK", "alice", 10_000_000)
    assert (error.status, error.code, error.problem["rule"]) == (409, "no_agreement", "agreement")
    with world.client(world.bank) as bank:
        assert bank.request("GET", "/v1/programs/BANK/members/alice")["balance"] == 0
    # The decline is logged for the operator, with what the rule saw.
    with world.client(world.operator) as op:
        logged = op.request("GET", "/v1/risk/decisions", params={"org_id": rogue.org_id})
    assert [(d["code"], d["outcome"], d["inputs"]["points"]) for d in logged] == [
        ("no_agreement", "declined", 10_000_000)
    ]


def test_a_merchant_cannot_accept_a_third_issuers_points_without_an_agreement(
    world: World,
) -> None:
    with world.client(world.operator) as op:
        rogue = onboard(op, "merchant", "Rogue shop")
    with world.client(world.bank) as bank:
        bank.accrue("BANK", "alice", 5_000)
    token = world.payment_token("BANK", "alice")
    with world.client(rogue) as client:
        error = refused(client.authorise, "BANK", "alice", 1_000, 1_000, payment_token=token)
    assert (error.status, error.code) == (409, "no_agreement")
    with world.client(world.bank) as bank:
        alice = bank.request("GET", "/v1/programs/BANK/members/alice")
    assert (alice["balance"], alice["available"]) == (5_000, 5_000)


def test_an_issuer_cannot_publish_a_rate_into_another_issuers_program_alone(
    world: World,
) -> None:
    rate = {
        "source_program": "TEL",
        "target_program": "BANK",
        "source_block": 1_000,
        "target_block": 400,
        "min_source_points": 1_000,
    }
    # The bank consents to interchange with the telco in the test world; it withdraws here.
    with world.client(world.bank) as bank:
        bank.request("PUT", f"/v1/interchange/{world.telco.org_id}", {"enabled": False})
    with world.client(world.telco) as telco:
        error = refused(telco.request, "POST", "/v1/bilateral-rates", rate)
    assert (error.status, error.code) == (409, "no_consent")


def test_a_rate_that_would_create_points_from_nothing_is_refused(world: World) -> None:
    # TEL is worth 0.005 and BANK 0.01: 1 TEL -> 1 BANK, then BANK -> TEL at value gives 2.
    with world.client(world.telco) as telco:
        error = refused(
            telco.request,
            "POST",
            "/v1/bilateral-rates",
            {
                "source_program": "TEL",
                "target_program": "BANK",
                "source_block": 1,
                "target_block": 1,
                "min_source_points": 1,
            },
        )
    assert (error.status, error.code) == (409, "arbitrage_cycle")
    assert error.problem["cycle"] == ["BANK", "TEL", "BANK"]
    assert error.problem["gain"] == "2"

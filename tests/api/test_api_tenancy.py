"""Tenancy: an organisation sees and changes only its own things; the rest does not exist."""

from __future__ import annotations

import uuid

import pytest

from clearing.sdk.client import ApiError
from tests.api.api_support import World


def not_found(call: object, *args: object, **kwargs: object) -> None:
    """The call fails with 404 not_found (existence does not leak)."""
    assert callable(call)
    with pytest.raises(ApiError) as error:
        call(*args, **kwargs)
    assert error.value.status == 404, error.value.problem


def test_issuers_only_touch_their_own_programs_and_members(world: World) -> None:
    with world.client(world.bank) as bank, world.client(world.telco) as telco:
        bank.accrue("BANK", "alice", 100)
        not_found(telco.member, "BANK", "alice")
        not_found(telco.request, "GET", "/v1/programs/BANK/members/alice/statement")
        not_found(telco.accrue, "BANK", "alice", 5)
        not_found(telco.request, "POST", "/v1/programs/BANK/members", {"external_id": "mallory"})
        not_found(telco.request, "POST", "/v1/programs/BANK/point-values", {"value": "1"})
        not_found(telco.quote, "BANK", "alice", "TEL", "carol", 10)
        accrual = bank.accrue("BANK", "bob", 50)
        not_found(telco.request, "POST", f"/v1/accruals/{accrual['id']}/reversals", {"points": 1})
        assert bank.member("BANK", "alice")["balance"] == 100


def test_merchants_only_touch_their_own_checkouts_and_funded_accruals(world: World) -> None:
    with world.client(world.bank) as bank:
        bank.accrue("BANK", "alice", 1000)
    with world.client(world.shop) as shop, world.client(world.other_shop) as other:
        checkout = shop.authorise("BANK", "alice", 500, 500, payment_token=world.payment_token())
        not_found(other.checkout, checkout["id"])
        not_found(other.capture, checkout["id"])
        not_found(other.void, checkout["id"])
        not_found(other.refund, checkout["id"], 1)
        not_found(other.checkout, str(uuid.uuid4()))
        funded = shop.accrue("BANK", "bob", 10)
        not_found(other.request, "POST", f"/v1/accruals/{funded['id']}/reversals", {"points": 1})
        reversed_ = shop.request("POST", f"/v1/accruals/{funded['id']}/reversals", {"points": 4})
        assert reversed_["reversed_points_total"] == 4
        # Merchants have no members to look at.
        not_found(shop.member, "BANK", "alice")
        assert shop.capture(checkout["id"])["status"] == "captured"


def test_issuer_cannot_take_checkouts(world: World) -> None:
    with world.client(world.bank) as bank:
        with pytest.raises(ApiError) as error:
            bank.authorise("BANK", "alice", 100, 100)
        assert error.value.status == 403

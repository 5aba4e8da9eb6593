"""Bulk enrolment, expiry policy, points expiring soon and expiry notices through the signed
ASGI app."""

from __future__ import annotations

import pytest

from clearing.sdk.client import ApiError
from tests.api.api_support import World


def test_enrol_a_list_once_then_read_the_expiry_views(world: World) -> None:
    with world.client(world.bank) as bank:
        body = {"items": [{"external_id": f"card-{n}"} for n in range(40)]}
        first = bank.request("POST", "/v1/programs/BANK/members/batch", body, idempotency_key="b-1")
        again = bank.request("POST", "/v1/programs/BANK/members/batch", body, idempotency_key="b-1")
        assert first == again == {"program": "BANK", "enrolled": 40}
        # alice exists already: the whole list is refused, nothing enrolled.
        clash = {"items": [{"external_id": "new-1"}, {"external_id": "alice"}]}
        with pytest.raises(ApiError) as refused:
            bank.request("POST", "/v1/programs/BANK/members/batch", clash)
        assert (refused.value.status, refused.value.code) == (409, "members_exist")
        with pytest.raises(ApiError) as unknown:
            bank.member("BANK", "new-1")
        assert unknown.value.status == 404

        policy = bank.request(
            "PUT",
            "/v1/programs/BANK/expiry-policy",
            {"expiry_policy": "rolling", "expiry_months": 1, "expiry_notice_days": 45},
        )
        assert policy["expiry_months"] == 1
        bank.accrue("BANK", "card-7", 120)
        view = bank.member("BANK", "card-7")
        # A month from now is at most 31 days away: within 60 and 90 days, and maybe 30.
        assert view["expiring"]["within_60_days"] == view["expiring"]["within_90_days"] == 120
        mine = bank.request("GET", "/v1/programs/BANK/members/card-7/expiring", params={"days": 60})
        assert mine["points"] == 120
        assert len(mine["lots"]) == 1
        program = bank.request("GET", "/v1/programs/BANK/expiring", params={"days": 60})
        assert (program["members"], program["points"]) == (1, 120)
        assert program["items"][0]["external_id"] == "card-7"
        notices = bank.request("GET", "/v1/programs/BANK/expiry-notices")
        assert notices == {"items": [], "next": None}  # the daily job has not run
    with world.client(world.telco) as telco, pytest.raises(ApiError) as other:
        telco.request("GET", "/v1/programs/BANK/expiring")
    assert other.value.status == 404

"""The ledger's flows end to end through the SDK, the signed ASGI app and a real database."""

from __future__ import annotations

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clearing.sdk.client import ApiError, PartnerClient, SignatureError
from tests.api.api_support import BASE, World


def test_accrue_checkout_capture_refund_and_conversion(world: World) -> None:
    with world.client(world.bank) as bank, world.client(world.shop) as shop:
        accrual = bank.accrue("BANK", "alice", 1000, reference="card-spend-1")
        assert accrual["points"] == 1000
        assert bank.member("BANK", "alice")["available"] == 1000

        token = bank.payment_token("BANK", "alice")["token"]
        checkout = shop.authorise(
            "BANK", "alice", order_total=800, points_amount=500, payment_token=token
        )
        assert checkout["status"] == "authorised"
        assert checkout["points"] == 500  # 5.00 CNY at 0.01 per point
        assert bank.member("BANK", "alice")["held"] == 500
        captured = shop.capture(checkout["id"], amount=300)
        assert captured["status"] == "captured"
        assert captured["captured_points"] == 300
        refund = shop.refund(checkout["id"], 100)
        assert refund["points"] == 100
        assert shop.checkout(checkout["id"])["refunded_amount"] == 100
        assert bank.member("BANK", "alice") == {
            "program": "BANK",
            "external_id": "alice",
            "status": "active",
            "balance": 800,
            "held": 0,
            "available": 800,
            "debt": 0,
            "tier": None,  # BANK has no tiers
            "expiring": {"within_30_days": 0, "within_60_days": 0, "within_90_days": 0},
        }

        token = bank.payment_token("BANK", "alice")["token"]
        voided = shop.void(shop.authorise("BANK", "alice", 100, 100, payment_token=token)["id"])
        assert voided["status"] == "voided"

        funded = shop.accrue("BANK", "bob", 200)
        assert funded["funding_org_id"] == world.shop.org_id
        assert funded["amount_owed"] == 200  # 200 points at 0.01 CNY = 2.00 CNY = 200 fen

    with world.client(world.telco) as telco, world.client(world.bank) as bank:
        link_token = bank.link_token("BANK", "alice")["token"]
        telco.link("BANK", "alice", "TEL", "carol", link_token)
        quote = bank.quote("BANK", "alice", "TEL", "carol", 100)
        assert quote["points_in"] == 200
        done = bank.convert(quote["id"])
        assert done["points_out"] == 100
        assert telco.member("TEL", "carol")["balance"] == 200


def test_statement_pages_with_cursor(world: World) -> None:
    with world.client(world.bank) as bank:
        for points in range(1, 6):
            bank.accrue("BANK", "alice", points)
        lines: list[dict[str, object]] = []
        after = None
        while True:
            params: dict[str, object] = {"limit": 2}
            if after:
                params["after"] = after
            page = bank.request("GET", "/v1/programs/BANK/members/alice/statement", params=params)
            lines += page["items"]
            after = page["next"]
            if after is None:
                break
        assert [line["points"] for line in lines] == [1, 2, 3, 4, 5]
        assert lines[-1]["balance_after"] == 15


def test_programs_list_is_paginated_for_anyone_signed(world: World) -> None:
    with world.client(world.shop) as shop:
        page = shop.programs(limit=1)
        assert [p["code"] for p in page["items"]] == ["BANK"]
        assert page["next"] is not None
        assert [p["code"] for p in shop.all_programs()] == ["BANK", "TEL"]
        with pytest.raises(ApiError) as error:
            shop.programs(after="not a cursor")
        assert error.value.status == 422
        assert error.value.code == "invalid_input"


def test_service_errors_are_problem_json(world: World) -> None:
    token = world.payment_token()
    with world.client(world.shop) as shop:
        with pytest.raises(ApiError) as error:
            shop.authorise("BANK", "alice", order_total=100, points_amount=100, payment_token=token)
        assert error.value.status == 409
        assert error.value.code == "insufficient_points"
        assert error.value.problem["type"].endswith("/insufficient_points")


class FlakyTransport(httpx.AsyncBaseTransport):
    """Loses the first response of each POST after the app has applied it, then behaves."""

    def __init__(self, app: object) -> None:
        self.inner = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        self.keys: list[str] = []
        self.failed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self.keys.append(request.headers["idempotency-key"])
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and not self.failed:
            self.failed = True
            raise httpx.ReadTimeout("response lost", request=request)
        return response


def test_sdk_retries_with_the_same_idempotency_key(world: World) -> None:
    transport = FlakyTransport(world.app)
    bank = PartnerClient(BASE, world.bank.keyid, world.bank.key, transport=transport, backoff=0)
    accrual = bank.accrue("BANK", "alice", 25)
    assert len(transport.keys) == 2
    assert transport.keys[0] == transport.keys[1]
    assert accrual["points"] == 25
    assert bank.member("BANK", "alice")["balance"] == 25


def test_sdk_refuses_a_response_not_signed_by_the_platform(world: World) -> None:
    wrong = Ed25519PrivateKey.generate().public_key()
    platform_kid = world.app.state.platform_key.keyid
    bank = PartnerClient(
        BASE,
        world.bank.keyid,
        world.bank.key,
        platform_public_keys={platform_kid: wrong},
        transport=httpx.ASGITransport(app=world.app),
    )
    with pytest.raises(SignatureError):
        bank.programs()


def test_bulk_accrual_file_and_member_freeze(world: World) -> None:
    with world.client(world.bank) as bank, world.client(world.shop) as shop:
        items = [
            {"program": "BANK", "external_id": m, "points": 100 + i}
            for i, m in enumerate(["alice", "bob", "alice"])
        ]
        out = bank.request("POST", "/v1/accrual-batches", {"items": items})
        assert (out["count"], out["points"], len(out["accrual_ids"])) == (3, 303, 3)
        assert bank.member("BANK", "alice")["balance"] == 202

        bad = [*items, {"program": "BANK", "external_id": "nobody", "points": 1}]
        with pytest.raises(ApiError) as err:
            bank.request("POST", "/v1/accrual-batches", {"items": bad})
        assert (err.value.status, err.value.code) == (404, "not_found")
        assert bank.member("BANK", "bob")["balance"] == 101

        # Minted while alice is active: once consent is shown, her state may be told.
        token = world.payment_token()
        frozen = bank.request("PATCH", "/v1/programs/BANK/members/alice", {"status": "frozen"})
        assert frozen["status"] == "frozen"
        with pytest.raises(ApiError) as err:
            shop.authorise("BANK", "alice", 100, 100, payment_token=token)
        assert err.value.code == "member_inactive"
        with pytest.raises(ApiError) as err:
            bank.payment_token("BANK", "alice")
        assert err.value.code == "member_inactive"
        with pytest.raises(ApiError) as err:
            shop.request("PATCH", "/v1/programs/BANK/members/alice", {"status": "active"})
        assert err.value.code == "not_found"
        bank.request("PATCH", "/v1/programs/BANK/members/alice", {"status": "active"})
        token = world.payment_token()
        assert (
            shop.authorise("BANK", "alice", 100, 100, payment_token=token)["status"] == "authorised"
        )

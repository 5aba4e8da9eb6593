"""The points mall's catalogue through the signed API: items, offers, stock, the member's mall."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from clearing.sdk.client import ApiError, PartnerClient
from tests.api.api_support import World, assert_problem, signed


def api_error(call: Any, status: int, code: str) -> None:
    with pytest.raises(ApiError) as error:
        call()
    assert (error.value.status, error.value.code) == (status, code), error.value.problem


def new_item(client: PartnerClient, sku: str, **fields: Any) -> dict[str, Any]:
    body = {"sku": sku, "title": f"Item {sku}", "value_amount": 1500, **fields}
    item: dict[str, Any] = client.request("POST", "/v1/mall/items", body)
    return item


def on_sale(client: PartnerClient, item_id: str, program: str, points: int, **fields: Any) -> None:
    client.request(
        "POST", f"/v1/mall/items/{item_id}/offers", {"program": program, "points": points, **fields}
    )
    client.request("PATCH", f"/v1/mall/items/{item_id}", {"status": "on_sale"})


def test_an_issuer_sells_an_item_to_its_members(world: World, http: TestClient) -> None:
    body = {"sku": "MUG", "title": "Mug", "value_amount": 1500, "stock": 10}
    first = signed(http, world.bank, "POST", "/v1/mall/items", body, idempotency_key="mug-1")
    assert first.status_code == 201, first.text
    replay = signed(http, world.bank, "POST", "/v1/mall/items", body, idempotency_key="mug-1")
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == first.content
    item = first.json()
    assert (item["status"], item["stock"], item["currency"], item["offers"]) == (
        "draft",
        10,
        "CNY",
        [],
    )
    with world.client(world.bank) as bank:
        offered = bank.request(
            "POST",
            f"/v1/mall/items/{item['id']}/offers",
            {"program": "BANK", "points": 300, "cash_amount": 100},
        )
        assert offered["price"]["version"] == 1
        assert [p["points"] for p in offered["prices"]] == [300]
        moved = bank.request("PATCH", f"/v1/mall/items/{item['id']}", {"status": "on_sale"})
        assert moved["status"] == "on_sale"
        stocked = bank.request("POST", f"/v1/mall/items/{item['id']}/stock", {"units": -4})
        assert stocked["stock"] == 6
        seen = bank.request("GET", f"/v1/mall/items/{item['id']}")
        assert (seen["stock"], seen["offers"][0]["price"]["points"]) == (6, 300)
        mall = bank.request("GET", "/v1/programs/BANK/mall/items", params={"external_id": "alice"})
        assert mall["next"] is None
        assert [(i["id"], i["points"], i["cash_amount"], i["stock"]) for i in mall["items"]] == [
            (item["id"], 300, 100, 6)
        ]
        assert bank.request("GET", "/v1/mall/items")["items"] == [seen]
    with world.client(world.telco) as telco:
        api_error(lambda: telco.request("GET", f"/v1/mall/items/{item['id']}"), 404, "not_found")
        api_error(
            lambda: telco.request(
                "GET", "/v1/programs/BANK/mall/items", params={"external_id": "alice"}
            ),
            404,
            "not_found",
        )
        assert telco.request("GET", "/v1/mall/items")["items"] == []


def test_a_supplier_offers_in_a_program_once_its_issuer_agreed(world: World) -> None:
    with world.client(world.shop) as shop:
        item = new_item(shop, "TEA")
        offer = {"program": "BANK", "points": 200}
        path = f"/v1/mall/items/{item['id']}/offers"
        api_error(lambda: shop.request("POST", path, offer), 409, "no_supply_agreement")
        proposed = shop.request(
            "POST",
            "/v1/agreements",
            {
                "program": "BANK",
                "accept": True,
                "fund": True,
                "supply": True,
                "wholesale_rate": "0.8",
            },
        )
    with world.client(world.bank) as bank:
        bank.request("POST", f"/v1/agreements/{proposed['id']}/approve", {})
    with world.client(world.shop) as shop:
        assert shop.request("POST", path, offer)["program"] == "BANK"
        api_error(
            lambda: shop.request("POST", path, {"program": "TEL", "points": 1}),
            409,
            "no_supply_agreement",
        )
    with world.client(world.bank) as bank:
        seen = bank.request("GET", f"/v1/mall/items/{item['id']}")
        assert (seen["owner_org_id"], [o["program"] for o in seen["offers"]]) == (
            world.shop.org_id,
            ["BANK"],
        )
        # The issuer sees the item but changes nothing of it.
        api_error(
            lambda: bank.request("PATCH", f"/v1/mall/items/{item['id']}", {"title": "Mine"}),
            404,
            "not_found",
        )


def test_catalogue_refusals_are_problem_json(world: World, http: TestClient) -> None:
    with world.client(world.bank) as bank:
        item = new_item(bank, "CUP", stock=2)
        path = f"/v1/mall/items/{item['id']}"
        api_error(lambda: new_item(bank, "CUP"), 409, "sku_taken")
        api_error(
            lambda: bank.request("PATCH", path, {"status": "on_sale"}), 409, "item_not_priced"
        )
        api_error(
            lambda: bank.request("POST", f"{path}/stock", {"units": -3}), 409, "stock_insufficient"
        )
        api_error(
            lambda: bank.request(
                "POST", f"{path}/offers", {"program": "BANK", "points": 1, "min_tier": "gold"}
            ),
            404,
            "tier_unknown",
        )
        api_error(
            lambda: bank.request("POST", f"{path}/offers", {"program": "TEL", "points": 1}),
            409,
            "foreign_program",
        )
        bank.request("PATCH", path, {"status": "withdrawn"})
        api_error(lambda: bank.request("PATCH", path, {"status": "draft"}), 409, "item_status_move")
        api_error(
            lambda: bank.request(
                "GET", "/v1/programs/BANK/mall/items", params={"external_id": "nobody"}
            ),
            404,
            "not_found",
        )
        api_error(
            lambda: bank.request("GET", "/v1/mall/items", params={"after": "bm90IGEgdXVpZA"}),
            422,
            "invalid_input",
        )
    unlimited = signed(
        http,
        world.bank,
        "POST",
        "/v1/mall/items",
        {"sku": "WIN", "title": "Window", "value_amount": 1, "member_limit": 1},
    )
    body = assert_problem(unlimited, 422, "invalid_input")
    assert body["field"] == "limit_period"
    platform = signed(
        http,
        world.operator,
        "POST",
        "/v1/mall/items",
        {"sku": "X", "title": "X", "value_amount": 1},
    )
    assert_problem(platform, 403, "forbidden")


def test_the_members_mall_pages_across_items_it_may_not_take(world: World) -> None:
    with world.client(world.bank) as bank:
        bank.accrue("BANK", "alice", 50)
        ids = []
        for n in range(7):
            item = new_item(bank, f"ITEM-{n}")
            # Items 1 to 4 ask for more points held than alice has.
            on_sale(bank, item["id"], "BANK", 10, min_balance=100 if 1 <= n <= 4 else 0)
            ids.append(item["id"])
        seen: list[str] = []
        after = None
        while True:
            params: dict[str, Any] = {"external_id": "alice", "limit": 2}
            if after:
                params["after"] = after
            page = bank.request("GET", "/v1/programs/BANK/mall/items", params=params)
            seen += [i["id"] for i in page["items"]]
            after = page["next"]
            if after is None:
                break
            assert len(page["items"]) == 2
        assert seen == sorted([ids[0], ids[5], ids[6]])

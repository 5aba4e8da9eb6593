"""Earning rules, campaigns and events through the real app and signed requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from tests.api.api_support import World, assert_problem, signed


def test_rules_campaign_events_preview_and_files(world: World, http: TestClient) -> None:
    rules = {
        "spend_rules": [
            {"code": "base", "rate": "1"},
            {"code": "shop", "rate": "2", "merchant_id": world.shop.org_id},
        ],
        "behaviours": [{"event": "sign_up", "points": 50, "frequency": "once"}],
        "month_cap": 100_000,
    }
    made = signed(http, world.bank, "POST", "/v1/programs/BANK/earning-rules", rules)
    assert made.status_code == 201, made.text
    assert made.json()["version"] == 1
    read = signed(http, world.bank, "GET", "/v1/programs/BANK/earning-rules")
    assert read.status_code == 200, read.text
    assert [r["code"] for r in read.json()["spend_rules"]] == ["base", "shop"]
    # another issuer does not see the program's rules
    assert_problem(
        signed(http, world.telco, "GET", "/v1/programs/BANK/earning-rules"), 404, "not_found"
    )
    start = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    body = {
        "code": "double",
        "name": "Double",
        "kind": "multiplier",
        "multiplier": "2",
        "starts_at": start,
        "budget": 150,
    }
    made = signed(http, world.bank, "POST", "/v1/programs/BANK/campaigns", body)
    assert made.status_code == 201, made.text
    purchase = {"external_id": "alice", "kind": "purchase", "spend": 12_345, "reference": "order-1"}
    # preview: 123 by the base rule, 123 by the campaign, nothing written
    seen = signed(http, world.bank, "POST", "/v1/programs/BANK/events/preview", purchase)
    assert seen.status_code == 200, seen.text
    assert [(s["step"], s["points"]) for s in seen.json()["earnings"][0]["explanation"]] == [
        ("rule", 123),
        ("campaign", 123),
    ]
    # the shop funds its own purchase: 2 per yuan = 246, the campaign's 150 budget pays 150
    posted = signed(
        http, world.shop, "POST", "/v1/programs/BANK/events", purchase, idempotency_key="e-1"
    )
    assert posted.status_code == 201, posted.text
    out = posted.json()
    assert out["points"] == 246 + 150
    assert out["earnings"][0]["explanation"][-1]["note"] == "budget exhausted: paid 150 of 246"
    again = signed(
        http, world.shop, "POST", "/v1/programs/BANK/events", purchase, idempotency_key="e-1"
    )
    assert again.json() == out
    assert again.headers.get("Idempotent-Replayed") == "true"
    figures = signed(http, world.bank, "GET", "/v1/programs/BANK/campaigns/double").json()
    assert (figures["paid"], figures["members_reached"], figures["exhausted"]) == (150, 1, True)
    batch = {
        "items": [
            {"external_id": "alice", "kind": "sign_up"},
            {"external_id": "bob", "kind": "sign_up"},
            {"external_id": "bob", "kind": "purchase", "spend": 1000},
        ]
    }
    filed = signed(http, world.bank, "POST", "/v1/programs/BANK/event-batches", batch)
    assert filed.status_code == 201, filed.text
    assert (filed.json()["count"], filed.json()["points"]) == (3, 50 + 50 + 10)
    bad = {"items": [*batch["items"], {"external_id": "ghost", "kind": "sign_up"}]}
    assert_problem(
        signed(http, world.bank, "POST", "/v1/programs/BANK/event-batches", bad), 404, "not_found"
    )
    alice = signed(http, world.bank, "GET", "/v1/programs/BANK/members/alice").json()
    assert alice["balance"] == 396 + 50
    unknown = signed(
        http,
        world.bank,
        "POST",
        "/v1/programs/BANK/events",
        {"external_id": "alice", "kind": "dance"},
    )
    assert_problem(unknown, 422, "unknown_event")

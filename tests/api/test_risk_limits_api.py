"""The operator's limit routes through the signed API, and the default limits at work there."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.api_support import World, assert_problem, signed


def test_operator_routes_list_set_history_disable(world: World, http: TestClient) -> None:
    listed = signed(http, world.operator, "GET", "/v1/risk/limits")
    assert listed.status_code == 200, listed.text
    assert any(r["kind"] == "single_operation" for r in listed.json())
    body = {"kind": "member_window", "action": "accrual", "period": "hour", "max_count": 50}
    made = signed(http, world.operator, "POST", "/v1/risk/limits", body)
    assert made.status_code == 201, made.text
    rule = made.json()
    assert rule["version"] == 1
    assert rule["created_by_key"] == world.operator.keyid
    off = signed(http, world.operator, "POST", f"/v1/risk/limits/{rule['rule_id']}/disable")
    assert off.status_code == 201, off.text
    history = signed(http, world.operator, "GET", f"/v1/risk/limits/{rule['rule_id']}/history")
    assert [(r["version"], r["enabled"]) for r in history.json()] == [(1, True), (2, False)]
    bad = signed(http, world.operator, "POST", "/v1/risk/limits", {**body, "period": ""})
    assert_problem(bad, 422, "limit_invalid")
    assert signed(http, world.bank, "GET", "/v1/risk/limits").status_code == 403
    attack = {"program": "BANK", "external_id": "alice", "points": 10**15 - 1}
    refused = signed(http, world.bank, "POST", "/v1/accruals", attack)
    problem = assert_problem(refused, 409, "limit_exceeded")
    assert str(problem["rule"]).startswith("limit:")

"""Points are never created for free: what a merchant owes for a file of lines, end to end."""

from __future__ import annotations

from api_support import World, signed
from starlette.testclient import TestClient


def test_a_file_of_one_point_lines_owes_at_least_what_one_accrual_of_them_owes(
    http: TestClient, world: World
) -> None:
    # The telco's point is worth 0.005 CNY: one point is half a fen. 2,000 one-point lines once
    # owed nothing (each rounded half-even to 0); the merchant could then spend the points.
    lines = [{"program": "TEL", "external_id": "carol", "points": 1}] * 2000
    file = signed(http, world.shop, "POST", "/v1/accrual-batches", {"items": lines})
    assert file.status_code == 201, file.text
    assert file.json()["amount_owed"] == 2000  # every line owes at least one fen
    whole = signed(
        http,
        world.shop,
        "POST",
        "/v1/accruals",
        {"program": "TEL", "external_id": "carol", "points": 2000},
    )
    assert whole.status_code == 201, whole.text
    assert whole.json()["amount_owed"] == 1000
    assert file.json()["amount_owed"] >= whole.json()["amount_owed"]
    one = signed(
        http,
        world.shop,
        "POST",
        "/v1/accruals",
        {"program": "TEL", "external_id": "carol", "points": 1},
    )
    assert one.json()["amount_owed"] == 1  # the smallest accrual owes one minor unit

"""Points are never created for free: what a merchant owes for a file of lines, end to end."""

from __future__ import annotations

from starlette.testclient import TestClient

from tests.api.api_support import World, signed


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


def test_a_quote_never_settles_for_nothing(world: World) -> None:
    # Points worth a thousandth of a fen: three BANK points buy one TEL point, whose value
    # (0.002 fen) once rounded to a settlement of 0 fen at quote time.
    with world.client(world.bank) as bank, world.client(world.telco) as telco:
        bank.request("POST", "/v1/programs/BANK/point-values", {"value": "0.00001"})
        telco.request("POST", "/v1/programs/TEL/point-values", {"value": "0.00002"})
        bank.accrue("BANK", "alice", 3)
        token = bank.link_token("BANK", "alice")["token"]
        telco.link("BANK", "alice", "TEL", "carol", token)
        quote = bank.quote("BANK", "alice", "TEL", "carol", 3)
        assert quote["points_in"] == 1
        assert quote["settlement_amount"] == 1  # bank A pays for the point it creates in TEL
        done = bank.convert(quote["id"])
        assert (done["points_in"], done["settlement_amount"]) == (1, 1)
        assert telco.member("TEL", "carol")["balance"] == 1

"""Member consent through the signed app: payment and link tokens, one answer without consent."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from clearing.sdk.client import ApiError
from tests.api.api_support import World, assert_problem, signed


def test_checkout_with_a_token_once_and_one_answer_without(world: World, http: TestClient) -> None:
    with world.client(world.bank) as bank:
        bank.accrue("BANK", "alice", 1000)
        bank.accrue("BANK", "bob", 10)
    alices = world.payment_token("BANK", "alice")
    bobs = world.payment_token("BANK", "bob")
    carols = world.payment_token("TEL", "carol")

    def pay(external_id: str, amount: int, token: str | None) -> bytes:
        body: dict[str, object] = {
            "program": "BANK",
            "external_id": external_id,
            "order_total": amount,
            "points_amount": amount,
        }
        if token is not None:
            body["payment_token"] = token
        response = signed(http, world.shop, "POST", "/v1/checkouts", body)
        if response.status_code == 201:
            return b"201"
        assert_problem(response, 403, "consent_required")
        assert alices not in response.text
        return response.content

    answers = {
        "no token": pay("alice", 100, None),
        "unknown member": pay("ghost", 100, bobs),
        "another member's token": pay("alice", 100, bobs),
        "another program's token": pay("alice", 100, carols),
        "insufficient points": pay("bob", 1000, None),
    }
    assert len(set(answers.values())) == 1
    assert pay("alice", 100, alices) == b"201"
    assert pay("alice", 100, alices) == answers["no token"]  # used once
    with world.client(world.bank) as bank:
        assert bank.member("BANK", "alice")["held"] == 100


def test_a_replayed_mint_returns_the_same_token(world: World, http: TestClient) -> None:
    path = "/v1/programs/BANK/members/alice/payment-tokens"
    first = signed(http, world.bank, "POST", path, {"max_amount": 500}, idempotency_key="mint-1")
    again = signed(http, world.bank, "POST", path, {"max_amount": 500}, idempotency_key="mint-1")
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert first.json()["token"].startswith("pt_")
    assert_problem(signed(http, world.telco, "POST", path, {}), 404, "not_found")
    assert_problem(signed(http, world.shop, "POST", path, {}), 404, "not_found")


def test_trusted_merchant_checks_out_without_a_token(world: World) -> None:
    with world.client(world.bank) as bank, world.client(world.shop) as shop:
        bank.accrue("BANK", "alice", 1000)
        with pytest.raises(ApiError) as error:
            shop.authorise("BANK", "alice", 100, 100)
        assert (error.value.status, error.value.code) == (403, "consent_required")
        trusted = bank.request(
            "PATCH",
            f"/v1/programs/BANK/merchants/{world.shop.org_id}",
            {"checkout_without_token": True},
        )
        assert trusted["checkout_without_token"] is True
        assert shop.authorise("BANK", "alice", 100, 100)["status"] == "authorised"
    with world.client(world.telco) as telco, pytest.raises(ApiError) as error:
        telco.request(
            "PATCH",
            f"/v1/programs/BANK/merchants/{world.other_shop.org_id}",
            {"checkout_without_token": True},
        )
    assert error.value.status == 404


def test_links_need_the_source_token_and_quotes_do_not_tell_missing_from_unlinked(
    world: World,
) -> None:
    with world.client(world.telco) as telco:
        telco.request("POST", "/v1/programs/TEL/members", {"external_id": "dave"})
    with world.client(world.bank) as bank, world.client(world.telco) as telco:
        bank.accrue("BANK", "alice", 1000)
        answers = []
        for source, token in (("ghost", "lt_x"), ("alice", "lt_x"), ("bob", None)):
            if token is None:
                token = bank.link_token("BANK", "alice")["token"]
            with pytest.raises(ApiError) as error:
                telco.link("BANK", source, "TEL", "carol", token)
            answers.append((error.value.status, error.value.problem))
        assert answers[0][0] == 403
        assert answers[0] == answers[1] == answers[2]
        telco.link("BANK", "alice", "TEL", "carol", bank.link_token("BANK", "alice")["token"])
        problems = []
        for target in ("nobody", "dave"):
            with pytest.raises(ApiError) as error:
                bank.quote("BANK", "alice", "TEL", target, 100)
            problems.append((error.value.status, error.value.problem))
        assert problems[0] == problems[1]
        assert problems[0][0] == 409
        assert bank.quote("BANK", "alice", "TEL", "carol", 100)["points_in"] > 0

"""Member consent: payment tokens at checkout, link tokens for member links, one answer without
consent, trusted merchants, and one winner when a token is used concurrently (PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, func, select, text

from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.models import Hold, IdempotencyRecord
from exchange import service as exchange
from exchange.schemas import QuoteCreate
from issuers import members, tokens
from issuers.models import MemberLink, MemberToken
from issuers.schemas import MemberLinkCreate, MerchantTrustSet, PaymentTokenCreate
from tests.factories import (
    T0,
    TOKEN_SECRET,
    World,
    accrue,
    authorise,
    balance,
    build_world,
    key,
    link,
    link_token,
    member,
    payment_token,
    trust,
)


def refused(action: Callable[[], object]) -> dict[str, object]:
    """The problem body of an action that must fail."""
    with pytest.raises(ClearingError) as error:
        action()
    return {"status": error.value.status, **error.value.problem()}


def holds(engine: Engine) -> int:
    with transaction(engine) as session:
        return session.execute(select(func.count()).select_from(Hold)).scalar_one()


def shop_world(engine: Engine) -> World:
    w = build_world(engine)
    for name in ("alice", "bob", "poor", "frozen"):
        member(engine, w.bank_a, "BANKA", name)
    member(engine, w.bank_b, "BANKB", "alice")
    accrue(engine, w.bank_a, "BANKA", "alice", 1000)
    accrue(engine, w.bank_a, "BANKA", "bob", 1000)
    accrue(engine, w.bank_a, "BANKA", "frozen", 1000)
    accrue(engine, w.bank_b, "BANKB", "alice", 1000)
    return w


def test_token_from_the_issuer_pays_once(engine: Engine) -> None:
    w = shop_world(engine)
    token = payment_token(engine, w.bank_a, "BANKA", "alice")
    assert token.startswith("pt_")
    assert len(token) == 46
    out = authorise(engine, w.shop, "BANKA", "alice", 100, token=token)
    assert (out.status, out.points) == ("authorised", 200)
    assert balance(engine, w.bank_a, "BANKA", "alice") == (1000, 800)
    again = refused(lambda: authorise(engine, w.shop, "BANKA", "alice", 100, token=token))
    assert (again["status"], again["code"]) == (403, "consent_required")
    assert balance(engine, w.bank_a, "BANKA", "alice") == (1000, 800)
    with transaction(engine) as session:
        row = session.execute(select(MemberToken)).scalar_one()
        assert row.used_by_org_id == w.shop.org_id
        assert row.used_at is not None


def test_only_the_hash_is_stored_and_a_replayed_mint_gives_the_same_token(engine: Engine) -> None:
    w = shop_world(engine)
    with transaction(engine) as session:
        first, replayed = tokens.mint_payment_token(
            session, w.bank_a, "BANKA", "alice", PaymentTokenCreate(), T0, "k1", TOKEN_SECRET
        )
        assert not replayed
    with transaction(engine) as session:
        again, replayed = tokens.mint_payment_token(
            session, w.bank_a, "BANKA", "alice", PaymentTokenCreate(), T0, "k1", TOKEN_SECRET
        )
        assert replayed
    assert again == first
    assert first.expires_at == T0 + timedelta(seconds=180)
    with transaction(engine) as session:
        stored = session.execute(select(MemberToken)).scalar_one()
        assert stored.token_hash == tokens.token_hash(first.token)
        records = session.execute(select(IdempotencyRecord.result)).scalars().all()
        dump = session.execute(text("SELECT * FROM member_tokens")).all()
    assert all(first.token.encode() not in (r or b"") for r in records)
    assert first.token not in repr(dump)


def test_refusals_without_consent_are_all_the_same(engine: Engine) -> None:
    w = shop_world(engine)
    frozen = payment_token(engine, w.bank_a, "BANKA", "frozen")
    with transaction(engine) as session:
        members.set_member_status(session, w.bank_a, "BANKA", "frozen", "frozen")
    expired = payment_token(engine, w.bank_a, "BANKA", "alice", ttl_seconds=60)
    used = payment_token(engine, w.bank_a, "BANKA", "alice")
    authorise(engine, w.shop, "BANKA", "alice", 10, token=used)
    bobs = payment_token(engine, w.bank_a, "BANKA", "bob")
    other_program = payment_token(engine, w.bank_b, "BANKB", "alice")
    links = link_token(engine, w.bank_a, "BANKA", "alice")
    later = T0 + timedelta(seconds=61)

    def pay(external_id: str, token: str | None, amount: int = 100) -> Callable[[], object]:
        return lambda: authorise(
            engine, w.shop, "BANKA", external_id, amount, now=later, token=token
        )

    answers = {
        "unknown member": refused(pay("ghost", None)),
        "unknown member with a token": refused(pay("ghost", bobs)),
        "no token": refused(pay("alice", None)),
        "wrong token": refused(pay("alice", "pt_" + "A" * 43)),
        "expired token": refused(pay("alice", expired)),
        "used token": refused(pay("alice", used)),
        "another member's token": refused(pay("alice", bobs)),
        "another program's token": refused(pay("alice", other_program)),
        "a link token": refused(pay("alice", links)),
        "insufficient points, no token": refused(pay("poor", None)),
        "insufficient points, another's token": refused(pay("poor", bobs)),
        "frozen member, no token": refused(pay("frozen", None)),
    }
    first = answers["no token"]
    assert first["status"] == 403
    assert first["code"] == "consent_required"
    assert {name: body for name, body in answers.items() if body != first} == {}
    # Once the member consents, her own state may be told.
    poor = payment_token(engine, w.bank_a, "BANKA", "poor", now=later)
    told = refused(pay("poor", poor))
    assert (told["status"], told["code"]) == (409, "insufficient_points")
    assert refused(pay("frozen", frozen))["code"] == "member_inactive"
    assert holds(engine) == 1


def test_a_refused_checkout_does_not_use_up_the_token(engine: Engine) -> None:
    w = shop_world(engine)
    token = payment_token(engine, w.bank_a, "BANKA", "alice", max_amount=600)
    over = refused(lambda: authorise(engine, w.shop, "BANKA", "alice", 601, token=token))
    assert (over["code"], over["max_amount"]) == ("payment_token_limit", 600)
    short = refused(lambda: authorise(engine, w.shop, "BANKA", "alice", 600, token=token))
    assert short["code"] == "insufficient_points"  # 1200 points, alice has 1000
    assert authorise(engine, w.shop, "BANKA", "alice", 250, token=token).points == 500


def test_trusted_merchant_needs_no_token_and_trust_is_per_merchant_and_program(
    engine: Engine,
) -> None:
    w = shop_world(engine)
    refused_ = refused(lambda: authorise(engine, w.cafe, "BANKA", "alice", 100, token=None))
    assert refused_["code"] == "consent_required"
    trust(engine, w.bank_a, "BANKA", w.cafe)
    out = authorise(engine, w.cafe, "BANKA", "alice", 100, token=None)
    assert out.status == "authorised"
    # The cafe's fee term for BANKB is untouched; trust for BANKA leaves its fee at the default.
    assert out.fee_rate == Decimal("0.008")
    assert (
        refused(lambda: authorise(engine, w.shop, "BANKA", "alice", 1, token=None))["code"]
        == "consent_required"
    )
    assert (
        refused(lambda: authorise(engine, w.cafe, "BANKB", "alice", 1, token=None))["code"]
        == "consent_required"
    )
    with pytest.raises(ClearingError) as error, transaction(engine) as session:
        # Only the program's own issuer can trust a merchant with it.
        tokens.set_merchant_trust(
            session, w.bank_b, "BANKA", w.shop.org_id, MerchantTrustSet(checkout_without_token=True)
        )
    assert error.value.code == "not_found"
    trust(engine, w.bank_a, "BANKA", w.cafe, trusted=False)
    assert (
        refused(lambda: authorise(engine, w.cafe, "BANKA", "alice", 1, token=None))["code"]
        == "consent_required"
    )


def _link(engine: Engine, w: World, source: tuple[str, str], token: str) -> Callable[[], object]:
    def run() -> object:
        with transaction(engine) as session:
            return tokens.link_members(
                session,
                w.bank_b,
                MemberLinkCreate(
                    source_program=source[0],
                    source_external_id=source[1],
                    target_program="BANKB",
                    target_external_id="alice",
                    link_token=token,
                ),
                T0,
            )

    return run


def test_a_link_needs_the_source_issuers_token(engine: Engine) -> None:
    w = shop_world(engine)
    alices = link_token(engine, w.bank_a, "BANKA", "alice")
    bobs = link_token(engine, w.bank_a, "BANKA", "bob")
    pays = payment_token(engine, w.bank_a, "BANKA", "alice")
    answers = {
        "unknown source member": refused(_link(engine, w, ("BANKA", "ghost"), alices)),
        "another member's token": refused(_link(engine, w, ("BANKA", "alice"), bobs)),
        "a payment token": refused(_link(engine, w, ("BANKA", "alice"), pays)),
        "bad token": refused(_link(engine, w, ("BANKA", "alice"), "lt_nope")),
        "unknown program": refused(_link(engine, w, ("NOPE", "alice"), alices)),
    }
    first = answers["bad token"]
    assert (first["status"], first["code"]) == (403, "consent_required")
    assert {name: body for name, body in answers.items() if body != first} == {}
    with transaction(engine) as session:
        assert session.execute(select(func.count()).select_from(MemberLink)).scalar_one() == 0
    _link(engine, w, ("BANKA", "alice"), alices)()
    assert refused(_link(engine, w, ("BANKA", "alice"), alices)) == first  # used once
    with transaction(engine) as session:
        assert session.execute(select(func.count()).select_from(MemberLink)).scalar_one() == 1


def test_quote_answers_the_same_for_a_missing_and_an_unlinked_target(engine: Engine) -> None:
    w = shop_world(engine)
    member(engine, w.bank_b, "BANKB", "stranger")
    member(engine, w.bank_b, "BANKB", "linked")
    link(engine, w.bank_b, ("BANKA", "alice"), ("BANKB", "linked"))

    def quote(target: str) -> Callable[[], object]:
        def run() -> object:
            with transaction(engine) as session:
                return exchange.quote_conversion(
                    session,
                    w.bank_a,
                    QuoteCreate(
                        source_program="BANKA",
                        source_external_id="alice",
                        target_program="BANKB",
                        target_external_id=target,
                        points=100,
                    ),
                    T0,
                )

        return run

    missing, unlinked = refused(quote("nobody")), refused(quote("stranger"))
    assert missing == unlinked
    assert (missing["status"], missing["code"]) == (409, "member_not_linked")
    assert quote("linked")() is not None


def test_one_token_used_concurrently_places_one_hold(pg_engine: Engine) -> None:
    w = shop_world(pg_engine)
    token = payment_token(pg_engine, w.bank_a, "BANKA", "alice")
    workers = 8
    gate = threading.Barrier(workers)

    def use(i: int) -> str:
        gate.wait()
        try:
            authorise(pg_engine, w.shop, "BANKA", "alice", 10, token=token)
        except ClearingError as error:
            return error.code
        return "authorised"

    with ThreadPoolExecutor(workers) as pool:
        outcomes = sorted(pool.map(use, range(workers)))
    assert outcomes == ["authorised"] + ["consent_required"] * (workers - 1)
    assert holds(pg_engine) == 1
    assert balance(pg_engine, w.bank_a, "BANKA", "alice") == (1000, 980)


def test_every_idempotency_key_mints_its_own_token(engine: Engine) -> None:
    w = shop_world(engine)
    with transaction(engine) as session:
        a, _ = tokens.mint_payment_token(
            session, w.bank_a, "BANKA", "alice", PaymentTokenCreate(), T0, key(), TOKEN_SECRET
        )
        b, _ = tokens.mint_payment_token(
            session, w.bank_a, "BANKA", "alice", PaymentTokenCreate(), T0, key(), TOKEN_SECRET
        )
    assert a.token != b.token
    assert a.id != b.id

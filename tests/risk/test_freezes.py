"""Freezes, the blocklist and closed members: what they decline, what they still allow, and
that a decline leaves nothing but its decision."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select
from starlette.testclient import TestClient

from clearing.core.db import transaction
from clearing.core.errors import ClearingError, InsufficientPoints
from clearing.core.ledger import Ledger
from clearing.core.models import JournalEntry
from clearing.core.policy import bind_policy
from clearing.web.auth import OperatorOnly
from clearing.web.context import Caller
from exchange import service as exchange
from exchange.schemas import ConversionCreate, QuoteCreate
from issuers import members
from issuers.members import MemberClosed
from risk import freezes
from risk.freezes import AlreadyFrozen, FreezeLifted, FreezeRule, PlatformNotFreezable
from risk.models import RiskDecision
from risk.policy import RiskPolicy
from risk.schemas import BlocklistCreate, FreezeCreate, FreezeOut
from tests.api.api_support import World as ApiWorld
from tests.api.api_support import assert_problem, signed
from tests.api.conftest import app, http, settings, world  # noqa: F401  (the API fixtures)
from tests.factories import (
    T0,
    World,
    accrue,
    authorise,
    balance,
    build_world,
    capture,
    key,
    link,
    member,
)


@pytest.fixture
def w(engine: Engine) -> World:
    """The factories' world under a policy of the freeze rule alone; alice has 10,000 BANKA
    points (0.005 CNY each: a fen buys 2 points) and bob 1,000."""
    bind_policy(engine, RiskPolicy(rules=[FreezeRule()]))
    made = build_world(engine)
    for name in ("alice", "bob"):
        member(engine, made.bank_a, "BANKA", name)
    accrue(engine, made.bank_a, "BANKA", "alice", 10_000)
    accrue(engine, made.bank_a, "BANKA", "bob", 1_000)
    return made


def operator(w: World) -> Caller:
    return Caller(w.platform.org_id, "platform", "operator-key")


def do_freeze(engine: Engine, w: World, **fields: object) -> FreezeOut:
    with transaction(engine) as session:
        return freezes.freeze(
            session,
            operator(w),
            FreezeCreate.model_validate({"reason": "fraud suspected", **fields}),
            T0,
        )


def do_unfreeze(engine: Engine, w: World, freeze_id: uuid.UUID) -> FreezeOut:
    with transaction(engine) as session:
        return freezes.unfreeze(session, operator(w), freeze_id, "cleared", T0)


def counts(engine: Engine) -> tuple[int, int]:
    """Journal entries and decisions written so far."""
    with transaction(engine) as session:
        entries = session.execute(select(func.count()).select_from(JournalEntry)).scalar_one()
        decisions = session.execute(select(func.count()).select_from(RiskDecision)).scalar_one()
        return entries, decisions


def refused(engine: Engine, attempt: Callable[[], object]) -> dict[str, object]:
    """`attempt` is declined; only its decision is written. Its problem document."""
    entries, decisions = counts(engine)
    with pytest.raises(ClearingError) as caught:
        attempt()
    assert counts(engine) == (entries, decisions + 1)
    return caught.value.problem()


def void(engine: Engine, merchant: Caller, checkout_id: uuid.UUID) -> str:
    with transaction(engine) as session:
        out, _ = exchange.void(session, merchant, checkout_id, T0, key())
        return out.status


SUBJECTS: dict[str, Callable[[World], dict[str, object]]] = {
    "member": lambda w: {"subject": "member", "program": "BANKA", "external_id": "alice"},
    "program": lambda w: {"subject": "program", "program": "BANKA"},
    "issuer": lambda w: {"subject": "organisation", "org_id": str(w.bank_a.org_id)},
    "merchant": lambda w: {"subject": "organisation", "org_id": str(w.shop.org_id)},
}


@pytest.mark.parametrize("subject", list(SUBJECTS))
def test_a_freeze_declines_what_touches_its_subject_but_a_void(
    engine: Engine, w: World, subject: str
) -> None:
    held = authorise(engine, w.shop, "BANKA", "alice", 100)
    other = authorise(engine, w.shop, "BANKA", "alice", 100)
    frozen = do_freeze(engine, w, **SUBJECTS[subject](w))

    attempts: dict[str, Callable[[], object]] = {
        "accrual": lambda: accrue(engine, w.bank_a, "BANKA", "alice", 10),
        "authorisation": lambda: authorise(engine, w.shop, "BANKA", "alice", 10),
        "capture": lambda: capture(engine, w.shop, held.id),
    }
    if subject == "merchant":
        # The issuer's own accrual does not touch the shop.
        assert accrue(engine, w.bank_a, "BANKA", "alice", 10).points == 10
        del attempts["accrual"]
    for name, attempt in attempts.items():
        problem = refused(engine, attempt)
        assert (problem["code"], problem["rule"]) == ("frozen", f"freeze:{frozen.id}"), name
        assert problem["status"] == 409
    # Releasing a hold is always allowed: it only gives the member's points back.
    assert void(engine, w.shop, other.id) == "voided"
    # 200 points still held by the checkout the freeze stopped.
    credited = 10 if subject == "merchant" else 0
    assert balance(engine, w.bank_a, "BANKA", "alice") == (10_000 + credited, 9_800 + credited)
    with transaction(engine) as session:
        logged = session.execute(
            select(RiskDecision).where(RiskDecision.code == "frozen")
        ).scalars()
        assert {d.rule_id for d in logged} == {f"freeze:{frozen.id}"}

    do_unfreeze(engine, w, frozen.id)
    assert capture(engine, w.shop, held.id).status == "captured"
    assert accrue(engine, w.bank_a, "BANKA", "alice", 10).points == 10


def test_a_frozen_member_declines_conversions_either_way(engine: Engine, w: World) -> None:
    member(engine, w.bank_b, "BANKB", "alice-b")
    link(engine, w.bank_b, ("BANKA", "alice"), ("BANKB", "alice-b"))
    with transaction(engine) as session:
        quote = exchange.quote_conversion(
            session,
            w.bank_a,
            QuoteCreate(
                source_program="BANKA",
                source_external_id="alice",
                target_program="BANKB",
                target_external_id="alice-b",
                points=1_000,
            ),
            T0,
        )
    target = do_freeze(engine, w, subject="member", program="BANKB", external_id="alice-b")

    def convert() -> object:
        with transaction(engine) as session:
            return exchange.convert(
                session, w.bank_a, ConversionCreate(quote_id=quote.id), T0, key()
            )

    assert refused(engine, convert)["rule"] == f"freeze:{target.id}"

    def quote_again() -> object:
        with transaction(engine) as session:
            return exchange.quote_conversion(
                session,
                w.bank_a,
                QuoteCreate(
                    source_program="BANKA",
                    source_external_id="alice",
                    target_program="BANKB",
                    target_external_id="alice-b",
                    points=1_000,
                ),
                T0,
            )

    # The quote already sees the frozen target.
    assert refused(engine, quote_again)["rule"] == f"freeze:{target.id}"
    do_unfreeze(engine, w, target.id)
    source = do_freeze(engine, w, subject="member", program="BANKA", external_id="alice")
    assert refused(engine, convert)["rule"] == f"freeze:{source.id}"
    do_unfreeze(engine, w, source.id)
    convert()
    assert balance(engine, w.bank_a, "BANKA", "alice")[0] == 9_000


def test_a_hold_authorised_before_the_issuer_froze_its_member_is_not_captured(
    engine: Engine, w: World
) -> None:
    """The attack of the issue: the issuer freezes its member (its own status), and the shop
    still captured the hold it took before."""
    held = authorise(engine, w.shop, "BANKA", "alice", 100)
    with transaction(engine) as session:
        members.set_member_status(session, w.bank_a, "BANKA", "alice", "frozen")
    problem = refused(engine, lambda: capture(engine, w.shop, held.id))
    assert (problem["code"], problem["rule"], problem["member_status"]) == (
        "member_inactive",
        "member_status",
        "frozen",
    )
    assert void(engine, w.shop, held.id) == "voided"
    assert balance(engine, w.bank_a, "BANKA", "alice") == (10_000, 10_000)


@pytest.mark.ledger_engines
def test_a_frozen_amount_cannot_be_spent_and_comes_back_when_lifted(
    engine: Engine, w: World
) -> None:
    part = do_freeze(
        engine, w, subject="member", program="BANKA", external_id="alice", points=6_000
    )
    assert part.hold_id is not None
    assert balance(engine, w.bank_a, "BANKA", "alice") == (10_000, 4_000)
    # A partial freeze declines nothing: only the frozen points are out of reach.
    with pytest.raises(InsufficientPoints):
        authorise(engine, w.shop, "BANKA", "alice", 2_001)  # 4,002 points
    spent = authorise(engine, w.shop, "BANKA", "alice", 2_000)  # 4,000 points
    capture(engine, w.shop, spent.id)
    assert balance(engine, w.bank_a, "BANKA", "alice") == (6_000, 0)
    accrue(engine, w.bank_a, "BANKA", "alice", 10)
    assert balance(engine, w.bank_a, "BANKA", "alice") == (6_010, 10)
    # More than is available cannot be frozen.
    with pytest.raises(InsufficientPoints):
        do_freeze(engine, w, subject="member", program="BANKA", external_id="alice", points=11)

    lifted = do_unfreeze(engine, w, part.id)
    assert (lifted.lifted_by_key, lifted.lifted_reason) == ("operator-key", "cleared")
    assert balance(engine, w.bank_a, "BANKA", "alice") == (6_010, 6_010)
    with pytest.raises(FreezeLifted):
        do_unfreeze(engine, w, part.id)
    assert balance(engine, w.bank_a, "BANKA", "alice") == (6_010, 6_010)


def test_freezes_are_recorded_listed_and_refused_twice(engine: Engine, w: World) -> None:
    frozen = do_freeze(engine, w, subject="member", program="BANKA", external_id="alice")
    assert (frozen.frozen_by_org, frozen.frozen_by_key) == (w.platform.org_id, "operator-key")
    assert (frozen.reason, frozen.frozen_at, frozen.lifted_at) == ("fraud suspected", T0, None)
    with pytest.raises(AlreadyFrozen):
        do_freeze(engine, w, subject="member", program="BANKA", external_id="alice")
    with pytest.raises(PlatformNotFreezable):
        do_freeze(engine, w, subject="organisation", org_id=str(w.platform.org_id))
    with pytest.raises(OperatorOnly), transaction(engine) as session:
        freezes.freeze(
            session,
            w.bank_a,
            FreezeCreate(subject="program", program="BANKA", reason="mine"),
            T0,
        )
    with transaction(engine) as session:
        assert [(f.id, f.frozen_at) for f in freezes.list_freezes(session)] == [(frozen.id, T0)]
    do_unfreeze(engine, w, frozen.id)
    with transaction(engine) as session:
        assert freezes.list_freezes(session) == []
        assert [f.lifted_reason for f in freezes.list_freezes(session, active=False)] == ["cleared"]
    # Bob was never touched.
    assert accrue(engine, w.bank_a, "BANKA", "bob", 1).points == 1


def test_the_blocklist_declines_a_member_id_of_its_program(engine: Engine, w: World) -> None:
    member(engine, w.bank_b, "BANKB", "mallory")
    link(engine, w.bank_b, ("BANKA", "alice"), ("BANKB", "mallory"))
    with transaction(engine) as session:
        quote = exchange.quote_conversion(
            session,
            w.bank_a,
            QuoteCreate(
                source_program="BANKA",
                source_external_id="alice",
                target_program="BANKB",
                target_external_id="mallory",
                points=1_000,
            ),
            T0,
        )
        entry = freezes.block(
            session,
            operator(w),
            BlocklistCreate(program="BANKB", external_id="mallory", reason="mule"),
            T0,
        )
        # An id not enrolled yet can be listed: it is refused from its first operation.
        freezes.block(
            session,
            operator(w),
            BlocklistCreate(program="BANKA", external_id="eve", reason="known fraudster"),
            T0,
        )

    def convert() -> object:
        with transaction(engine) as session:
            return exchange.convert(
                session, w.bank_a, ConversionCreate(quote_id=quote.id), T0, key()
            )

    problem = refused(engine, convert)
    assert (problem["code"], problem["rule"]) == ("blocklisted", f"blocklist:{entry.id}")
    member(engine, w.bank_a, "BANKA", "eve")
    assert refused(engine, lambda: accrue(engine, w.bank_a, "BANKA", "eve", 10))["code"] == (
        "blocklisted"
    )
    with transaction(engine) as session:
        listed = freezes.block(
            session,
            operator(w),
            BlocklistCreate(program="BANKA", external_id="alice", reason="mule"),
            T0,
        )
    for attempt in (
        lambda: accrue(engine, w.bank_a, "BANKA", "alice", 10),
        lambda: authorise(engine, w.shop, "BANKA", "alice", 10),
    ):
        assert refused(engine, attempt)["rule"] == f"blocklist:{listed.id}"
    # Other members, and the same id in another program, are not listed.
    assert accrue(engine, w.bank_a, "BANKA", "bob", 10).points == 10
    with transaction(engine) as session:
        assert {e.external_id for e in freezes.list_blocklist(session, program="BANKA")} == {
            "alice",
            "eve",
        }
        freezes.unblock(session, operator(w), listed.id, "cleared", T0)
        freezes.unblock(session, operator(w), entry.id, "cleared", T0)
        assert {e.external_id for e in freezes.list_blocklist(session)} == {"eve"}
    convert()
    assert balance(engine, w.bank_a, "BANKA", "alice")[0] == 9_000


def test_a_closed_member_stays_closed(engine: Engine, w: World) -> None:
    held = authorise(engine, w.shop, "BANKA", "alice", 100)
    with transaction(engine) as session:
        members.set_member_status(session, w.bank_a, "BANKA", "alice", "closed")
        members.set_member_status(session, w.bank_a, "BANKA", "alice", "closed")
    for status in ("active", "frozen"):
        with pytest.raises(MemberClosed) as caught, transaction(engine) as session:
            members.set_member_status(session, w.bank_a, "BANKA", "alice", status)
        assert (caught.value.status, caught.value.code) == (409, "member_closed")
    with transaction(engine) as session:
        assert members.member_view(session, w.bank_a, "BANKA", "alice", T0).status == "closed"
    assert refused(engine, lambda: capture(engine, w.shop, held.id))["code"] == "member_inactive"
    # A frozen member may be reactivated; only closing is final.
    with transaction(engine) as session:
        members.set_member_status(session, w.bank_a, "BANKA", "bob", "frozen")
        members.set_member_status(session, w.bank_a, "BANKA", "bob", "active")


# through the signed API --------------------------------------------------------------------


def test_api_freeze_stops_the_capture_of_an_earlier_hold(
    world: ApiWorld,  # noqa: F811
    http: TestClient,  # noqa: F811
) -> None:
    with world.client(world.bank) as bank:
        bank.accrue("BANK", "alice", 5_000)
    token = world.payment_token()
    with world.client(world.shop) as shop:
        held = shop.authorise("BANK", "alice", 1_000, 1_000, payment_token=token)
        other = shop.authorise("BANK", "alice", 1_000, 1_000, payment_token=world.payment_token())
    frozen = signed(
        http,
        world.operator,
        "POST",
        "/v1/risk/freezes",
        {"subject": "member", "program": "BANK", "external_id": "alice", "reason": "stolen"},
    )
    assert frozen.status_code == 201, frozen.text
    freeze_id = frozen.json()["id"]
    # Only an operator freezes.
    assert_problem(
        signed(
            http,
            world.bank,
            "POST",
            "/v1/risk/freezes",
            {"subject": "program", "program": "BANK", "reason": "x"},
        ),
        403,
        "operator_only",
    )
    problem = assert_problem(
        signed(http, world.shop, "POST", f"/v1/checkouts/{held['id']}/capture", {}), 409, "frozen"
    )
    assert problem["rule"] == f"freeze:{freeze_id}"
    voided = signed(http, world.shop, "POST", f"/v1/checkouts/{other['id']}/void")
    assert (voided.status_code, voided.json()["status"]) == (201, "voided")
    listed = signed(http, world.operator, "GET", "/v1/risk/freezes")
    assert [f["id"] for f in listed.json()] == [freeze_id]
    lifted = signed(
        http, world.operator, "POST", f"/v1/risk/freezes/{freeze_id}/lift", {"reason": "found"}
    )
    assert lifted.json()["lifted_reason"] == "found"
    captured = signed(http, world.shop, "POST", f"/v1/checkouts/{held['id']}/capture", {})
    assert captured.json()["status"] == "captured"

    # The issuer's own freeze stops an earlier hold too; closing is final.
    with world.client(world.shop) as shop:
        again = shop.authorise("BANK", "alice", 100, 100, payment_token=world.payment_token())
    path = "/v1/programs/BANK/members/alice"
    assert signed(http, world.bank, "PATCH", path, {"status": "frozen"}).status_code == 200
    assert_problem(
        signed(http, world.shop, "POST", f"/v1/checkouts/{again['id']}/capture", {}),
        409,
        "member_inactive",
    )
    assert signed(http, world.bank, "PATCH", path, {"status": "closed"}).status_code == 200
    assert_problem(
        signed(http, world.bank, "PATCH", path, {"status": "active"}), 409, "member_closed"
    )


def test_api_blocklist(world: ApiWorld, http: TestClient) -> None:  # noqa: F811
    added = signed(
        http,
        world.operator,
        "POST",
        "/v1/risk/blocklist",
        {"program": "BANK", "external_id": "bob", "reason": "mule"},
    )
    assert added.status_code == 201, added.text
    problem = assert_problem(
        signed(
            http,
            world.bank,
            "POST",
            "/v1/accruals",
            {"program": "BANK", "external_id": "bob", "points": 10},
        ),
        409,
        "blocklisted",
    )
    assert problem["rule"] == f"blocklist:{added.json()['id']}"
    listed = signed(http, world.operator, "GET", "/v1/risk/blocklist?program=BANK")
    assert [e["external_id"] for e in listed.json()] == ["bob"]
    removed = signed(
        http,
        world.operator,
        "POST",
        f"/v1/risk/blocklist/{added.json()['id']}/remove",
        {"reason": "cleared"},
    )
    assert removed.json()["removed_reason"] == "cleared"
    with world.client(world.bank) as bank:
        assert bank.accrue("BANK", "bob", 10)["points"] == 10


def test_the_freeze_hold_lasts(engine: Engine, w: World) -> None:
    """The frozen amount's hold is not released by the sweep of expired holds."""
    part = do_freeze(engine, w, subject="member", program="BANKA", external_id="bob", points=500)
    with transaction(engine) as session:
        assert Ledger(session).release_expired_holds(T0 + timedelta(days=3650)) == 0
    assert balance(engine, w.bank_a, "BANKA", "bob", T0 + timedelta(days=3650)) == (1_000, 500)
    do_unfreeze(engine, w, part.id)

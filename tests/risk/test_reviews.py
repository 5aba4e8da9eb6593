"""Reviews: an operation a rule sends to review answers 202 with its points held; an operator
approves it (it completes once, and a retry of its request gets the result) or rejects it (the
hold is released, a retry gets 409); the key that asked never approves."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from clearing.app.policy import REVIEWABLE
from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.models import IdempotencyRecord, JournalEntry
from clearing.core.policy import (
    Action,
    Decision,
    OperationContext,
    PendingReview,
    ReviewRejected,
    Verdict,
    bind_policy,
)
from clearing.web.auth import OperatorOnly
from clearing.web.context import Caller
from exchange import service as exchange
from exchange.schemas import ConversionCreate, ConversionOut, QuoteCreate
from issuers import accruals
from issuers.schemas import AccrualBatchCreate, AccrualBatchOut, AccrualCreate
from risk import freezes, reviews
from risk.freezes import FreezeRule
from risk.models import Review, RiskDecision
from risk.policy import RiskPolicy
from risk.reviews import ApproverIsRequester, ReviewDecidedAlready, ReviewLapsed
from risk.schemas import FreezeCreate
from tests.api.api_support import World as ApiWorld
from tests.api.api_support import assert_problem, signed
from tests.api.conftest import app, http, settings, world  # noqa: F401  (the API fixtures)
from tests.factories import T0, World, accrue, balance, build_world, key, link, member

LATER = T0 + timedelta(minutes=1)


class ReviewAbove:
    """A rule of the tests: sends to review any operation of `actions` above `points`."""

    name = "review_above"

    def __init__(self, actions: set[Action], points: int) -> None:
        self.actions = actions
        self.points = points

    def screen(
        self, session: Session, operations: Sequence[OperationContext]
    ) -> Sequence[Decision | None]:
        """Review what is above the threshold."""
        return [
            Decision(
                Verdict.REVIEW,
                code="large_operation",
                rule_id="test:review_above",
                rule_version=3,
                reason=f"{op.action} of {op.points} points is above {self.points}",
            )
            if op.action in self.actions and op.points > self.points
            else None
            for op in operations
        ]


def policy(*actions: Action, points: int = 1_000) -> RiskPolicy:
    """The test rule after the freeze rule, completing reviews with the app's own builders."""
    return RiskPolicy(
        rules=[FreezeRule(), ReviewAbove(set(actions), points)], operations=REVIEWABLE
    )


@pytest.fixture
def w(engine: Engine) -> World:
    """Alice has 10,000 BANKA points and is linked to alice-b of BANKB."""
    bind_policy(engine, policy(Action.CONVERSION, Action.ACCRUAL))
    made = build_world(engine)
    member(engine, made.bank_a, "BANKA", "alice")
    member(engine, made.bank_b, "BANKB", "alice-b")
    member(engine, made.bank_a, "BANKA", "bob")
    link(engine, made.bank_b, ("BANKA", "alice"), ("BANKB", "alice-b"))
    for _ in range(10):  # at the threshold: none goes to review
        accrue(engine, made.bank_a, "BANKA", "alice", 1_000)
    return made


def operator(w: World, key_id: str = "operator-key") -> Caller:
    return Caller(w.platform.org_id, "platform", key_id)


def requester(w: World) -> Caller:
    return Caller(w.bank_a.org_id, "issuer", "bank-a-key")


def quote(engine: Engine, w: World, points: int) -> uuid.UUID:
    with transaction(engine) as session:
        return exchange.quote_conversion(
            session,
            requester(w),
            QuoteCreate(
                source_program="BANKA",
                source_external_id="alice",
                target_program="BANKB",
                target_external_id="alice-b",
                points=points,
            ),
            T0,
        ).id


def convert(engine: Engine, w: World, quote_id: uuid.UUID, idem: str) -> ConversionOut:
    with transaction(engine) as session:
        out, _ = exchange.convert(
            session, requester(w), ConversionCreate(quote_id=quote_id), T0, idem
        )
        return out


def pending(engine: Engine, w: World, quote_id: uuid.UUID, idem: str) -> dict[str, Any]:
    """Ask for the conversion; it must be held for review. The 202's body."""
    with pytest.raises(PendingReview) as held:
        convert(engine, w, quote_id, idem)
    return held.value.problem()


def stored(engine: Engine, org_id: uuid.UUID, idem: str) -> tuple[int, bytes]:
    """The answer stored under an idempotency key."""
    with transaction(engine) as session:
        row = session.execute(
            select(IdempotencyRecord.status_code, IdempotencyRecord.result).where(
                IdempotencyRecord.org_id == org_id, IdempotencyRecord.key == idem
            )
        ).one()
        return row.status_code, bytes(row.result)


def entries(engine: Engine) -> int:
    with transaction(engine) as session:
        return int(session.execute(select(func.count()).select_from(JournalEntry)).scalar_one())


def outcomes(engine: Engine) -> list[tuple[str, str | None, int | None]]:
    with transaction(engine) as session:
        rows = session.execute(
            select(RiskDecision.outcome, RiskDecision.rule_id, RiskDecision.rule_version).order_by(
                RiskDecision.decided_at, RiskDecision.outcome
            )
        )
        return [(o.split(":")[0], r, v) for o, r, v in rows]


def approve(
    engine: Engine, w: World, review_id: uuid.UUID, who: Caller | None = None, at: datetime = LATER
) -> Any:
    with transaction(engine) as session:
        return reviews.approve(session, who or operator(w), review_id, at)


def reject(engine: Engine, w: World, review_id: uuid.UUID, at: datetime = LATER) -> Any:
    with transaction(engine) as session:
        return reviews.reject(session, operator(w), review_id, "not the member's doing", at)


@pytest.mark.ledger_engines
def test_a_reviewed_conversion_holds_its_points_and_completes_once_on_approval(
    engine: Engine, w: World
) -> None:
    small = quote(engine, w, 1_000)
    assert convert(engine, w, small, key()).points_out == 1_000  # at the threshold: no review
    quote_id = quote(engine, w, 5_000)
    before = entries(engine)
    idem = key()
    body = pending(engine, w, quote_id, idem)
    assert body["status"] == "pending_review"
    assert (body["code"], body["rule"], body["rule_version"]) == (
        "large_operation",
        "test:review_above",
        3,
    )
    review_id = uuid.UUID(body["review_id"])
    # Nothing posted, but the points are held while the review waits.
    assert entries(engine) == before
    assert balance(engine, w.bank_a, "BANKA", "alice") == (9_000, 4_000)
    # A retry of the request gets the same 202.
    assert pending(engine, w, quote_id, idem) == body
    assert stored(engine, w.bank_a.org_id, idem)[0] == 202
    with transaction(engine) as session:
        (queued,) = reviews.list_reviews(session)
        assert (queued.id, queued.operation, queued.points_held) == (
            review_id,
            "conversion",
            5_000,
        )
        assert (queued.key_id, queued.idempotency_key) == ("bank-a-key", idem)

    b_before = balance(engine, w.bank_b, "BANKB", "alice-b")[0]
    decided, result = approve(engine, w, review_id)
    assert (decided.status, decided.decided_by_key, decided.decided_at) == (
        "approved",
        "operator-key",
        LATER,
    )
    assert isinstance(result, ConversionOut)
    assert result.points_out == 5_000
    # The points moved once, the hold is gone.
    assert balance(engine, w.bank_a, "BANKA", "alice") == (4_000, 4_000)
    assert balance(engine, w.bank_b, "BANKB", "alice-b")[0] == b_before + result.points_in
    assert entries(engine) == before + 1
    # A retry of the original request now gets the result, byte for byte.
    assert stored(engine, w.bank_a.org_id, idem) == (201, result.model_dump_json().encode())
    with transaction(engine) as session:
        again, replayed = exchange.convert(
            session, requester(w), ConversionCreate(quote_id=quote_id), T0, idem
        )
    assert replayed
    assert again.model_dump_json() == result.model_dump_json()
    # Decided once only.
    with pytest.raises(ReviewDecidedAlready) as twice:
        approve(engine, w, review_id, operator(w, "another-operator"))
    assert (twice.value.status, twice.value.code) == (409, "review_decided")
    with pytest.raises(ReviewDecidedAlready):
        reject(engine, w, review_id)
    assert entries(engine) == before + 1
    assert outcomes(engine) == [
        ("pending_review", "test:review_above", 3),
        ("approved", "test:review_above", 3),
    ]


@pytest.mark.ledger_engines
def test_a_rejected_review_releases_its_hold_and_its_retry_is_refused(
    engine: Engine, w: World
) -> None:
    quote_id = quote(engine, w, 5_000)
    idem = key()
    review_id = uuid.UUID(pending(engine, w, quote_id, idem)["review_id"])
    assert balance(engine, w.bank_a, "BANKA", "alice") == (10_000, 5_000)
    rejected = reject(engine, w, review_id)
    assert (rejected.status, rejected.decided_by_key) == ("rejected", "operator-key")
    assert balance(engine, w.bank_a, "BANKA", "alice") == (10_000, 10_000)
    with pytest.raises(ReviewRejected) as refused:
        convert(engine, w, quote_id, idem)
    problem = refused.value.problem()
    assert (problem["status"], problem["code"]) == (409, "review_rejected")
    assert problem["review_id"] == str(review_id)
    with pytest.raises(ReviewDecidedAlready):
        approve(engine, w, review_id)
    assert outcomes(engine) == [
        ("pending_review", "test:review_above", 3),
        ("rejected", "test:review_above", 3),
    ]
    with transaction(engine) as session:
        assert reviews.list_reviews(session) == []
        assert [r.status for r in reviews.list_reviews(session, status=None)] == ["rejected"]
        logged = session.execute(
            select(RiskDecision).where(RiskDecision.outcome == f"rejected:{review_id}")
        ).scalar_one()
        assert logged.inputs["decided_by_key"] == "operator-key"
        assert logged.reason == "not the member's doing"


def test_only_another_operator_key_approves(engine: Engine, w: World) -> None:
    idem = key()
    with pytest.raises(PendingReview) as held, transaction(engine) as session:
        accruals.accrue(
            session,
            requester(w),
            AccrualCreate(program="BANKA", external_id="bob", points=2_000),
            T0,
            idem,
        )
    review_id = uuid.UUID(held.value.problem()["review_id"])
    # An accrual spends nothing: nothing is held.
    with transaction(engine) as session:
        review = session.get(Review, review_id)
        assert review is not None
        assert (review.hold_id, review.points_held) == (None, 0)
    with pytest.raises(OperatorOnly):
        approve(engine, w, review_id, Caller(w.bank_b.org_id, "issuer", "bank-b-key"))
    # A platform key that also asked for the operation: never its own approver.
    with pytest.raises(ApproverIsRequester) as same:
        approve(engine, w, review_id, operator(w, "bank-a-key"))
    assert (same.value.status, same.value.code) == (403, "approver_is_requester")
    assert balance(engine, w.bank_a, "BANKA", "bob")[0] == 0
    _, result = approve(engine, w, review_id)
    assert result.points == 2_000
    assert balance(engine, w.bank_a, "BANKA", "bob")[0] == 2_000


def test_an_approval_that_cannot_complete_fails_and_leaves_the_review_pending(
    engine: Engine, w: World
) -> None:
    quote_id = quote(engine, w, 5_000)
    idem = key()
    review_id = uuid.UUID(pending(engine, w, quote_id, idem)["review_id"])
    with transaction(engine) as session:
        frozen = freezes.freeze(
            session,
            operator(w),
            FreezeCreate(subject="member", program="BANKA", external_id="alice", reason="fraud"),
            T0,
        )
    with pytest.raises(ClearingError) as failed:
        approve(engine, w, review_id)
    assert failed.value.problem()["code"] == "frozen"
    with transaction(engine) as session:
        review = session.get(Review, review_id)
        assert review is not None
        assert review.status == "pending"
        freezes.unfreeze(session, operator(w), frozen.id, "cleared", T0)
    # The hold stayed in place through the failed approval.
    assert balance(engine, w.bank_a, "BANKA", "alice") == (10_000, 5_000)
    assert stored(engine, w.bank_a.org_id, idem)[0] == 202
    approve(engine, w, review_id)
    assert balance(engine, w.bank_a, "BANKA", "alice") == (5_000, 5_000)


def test_a_review_lapses_with_its_hold(engine: Engine, w: World) -> None:
    quote_id = quote(engine, w, 5_000)
    review_id = uuid.UUID(pending(engine, w, quote_id, key())["review_id"])
    late = T0 + reviews.REVIEW_HOLD
    with pytest.raises(ReviewLapsed):
        approve(engine, w, review_id, at=late)
    reject(engine, w, review_id, at=late)
    assert balance(engine, w.bank_a, "BANKA", "alice", late) == (10_000, 10_000)


@pytest.mark.ledger_engines
def test_a_reviewed_bulk_accrual_file_completes_whole_on_approval(engine: Engine, w: World) -> None:
    items = [
        AccrualCreate(program="BANKA", external_id="bob", points=500),
        AccrualCreate(program="BANKA", external_id="alice", points=1_500),
        AccrualCreate(program="BANKA", external_id="bob", points=700),
    ]
    idem = key()
    before = entries(engine)
    with pytest.raises(PendingReview) as held, transaction(engine) as session:
        accruals.accrue_batch(session, requester(w), AccrualBatchCreate(items=items), T0, idem)
    body = held.value.problem()
    assert (body["operation"], body["status"]) == ("accrual_batch", "pending_review")
    assert entries(engine) == before
    assert balance(engine, w.bank_a, "BANKA", "bob")[0] == 0
    _, result = approve(engine, w, uuid.UUID(body["review_id"]))
    assert isinstance(result, AccrualBatchOut)
    assert (result.count, result.points) == (3, 2_700)
    assert entries(engine) == before + 3
    assert balance(engine, w.bank_a, "BANKA", "bob")[0] == 1_200
    assert balance(engine, w.bank_a, "BANKA", "alice")[0] == 11_500
    with transaction(engine) as session:
        again, replayed = accruals.accrue_batch(
            session, requester(w), AccrualBatchCreate(items=items), T0, idem
        )
    assert replayed
    assert again == result
    assert entries(engine) == before + 3


# through the signed API --------------------------------------------------------------------


def test_api_review_approved_by_an_operator(
    world: ApiWorld,  # noqa: F811
    http: TestClient,  # noqa: F811
) -> None:
    bind_policy(world.app.state.engine, policy(Action.ACCRUAL))
    body = {"program": "BANK", "external_id": "alice", "points": 5_000}
    idem = str(uuid.uuid4())
    first = signed(http, world.bank, "POST", "/v1/accruals", body, idempotency_key=idem)
    assert first.status_code == 202, first.text
    held = first.json()
    assert held["status"] == "pending_review"
    assert "idempotent-replayed" not in first.headers
    again = signed(http, world.bank, "POST", "/v1/accruals", body, idempotency_key=idem)
    assert (again.status_code, again.json()) == (202, held)
    assert again.headers["idempotent-replayed"] == "true"
    with world.client(world.bank) as bank:
        assert bank.member("BANK", "alice")["balance"] == 0

    queue = signed(http, world.operator, "GET", "/v1/risk/reviews")
    assert [r["id"] for r in queue.json()] == [held["review_id"]]
    assert queue.json()[0]["key_id"] == world.bank.keyid
    path = f"/v1/risk/reviews/{held['review_id']}"
    assert_problem(signed(http, world.bank, "POST", f"{path}/approve"), 403, "operator_only")
    approved = signed(http, world.operator, "POST", f"{path}/approve")
    assert approved.status_code == 201, approved.text
    decided = approved.json()
    assert decided["review"]["status"] == "approved"
    assert decided["review"]["decided_by_key"] == world.operator.keyid
    assert decided["result"]["points"] == 5_000
    with world.client(world.bank) as bank:
        assert bank.member("BANK", "alice")["balance"] == 5_000

    retry = signed(http, world.bank, "POST", "/v1/accruals", body, idempotency_key=idem)
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert json.loads(retry.content) == decided["result"]
    assert (
        retry.content
        == signed(http, world.bank, "POST", "/v1/accruals", body, idempotency_key=idem).content
    )
    assert_problem(signed(http, world.operator, "POST", f"{path}/approve"), 409, "review_decided")
    with world.client(world.bank) as bank:
        assert bank.member("BANK", "alice")["balance"] == 5_000


def test_api_review_rejected(world: ApiWorld, http: TestClient) -> None:  # noqa: F811
    bind_policy(world.app.state.engine, policy(Action.ACCRUAL))
    body = {"program": "BANK", "external_id": "bob", "points": 5_000}
    idem = str(uuid.uuid4())
    held = signed(http, world.bank, "POST", "/v1/accruals", body, idempotency_key=idem).json()
    path = f"/v1/risk/reviews/{held['review_id']}/reject"
    rejected = signed(http, world.operator, "POST", path, {"reason": "partner key misused"})
    assert rejected.status_code == 201, rejected.text
    assert rejected.json()["review"]["status"] == "rejected"
    problem = assert_problem(
        signed(http, world.bank, "POST", "/v1/accruals", body, idempotency_key=idem),
        409,
        "review_rejected",
    )
    assert problem["detail"] == "partner key misused"
    decisions = signed(http, world.operator, "GET", "/v1/risk/decisions").json()
    assert {d["outcome"] for d in decisions} == {
        "pending_review",
        f"rejected:{held['review_id']}",
    }

"""An event whose accrual the risk policy sends to review writes nothing until approved, then
earns once, as the event would have (the app's own builder rebuilds it)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, func, select

from clearing.core.db import transaction
from clearing.core.policy import Action, PendingReview, bind_policy
from clearing.web.context import Caller
from issuers import events
from issuers.earning_schemas import EventCreate, EventOut
from issuers.models import EarningCounter, ProgramEvent
from risk import reviews
from tests.factories import T0, balance, build_world, key, member
from tests.issuers.earning_support import book
from tests.risk.test_reviews import LATER, policy


def test_a_reviewed_event_earns_once_on_approval(engine: Engine) -> None:
    bind_policy(engine, policy(Action.ACCRUAL))
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    book(engine, w.bank_a, "BANKA", spend_rules=[{"code": "base", "rate": "1"}], month_cap=5000)
    req = EventCreate(external_id="alice", kind="purchase", spend=300_000)  # 3,000 points
    idem = key()
    issuer = Caller(w.bank_a.org_id, "issuer", "bank-a-key")
    with pytest.raises(PendingReview) as held, transaction(engine) as session:
        events.post_event(session, issuer, "BANKA", req, T0, idem)
    body = held.value.problem()
    assert (body["operation"], body["status"]) == ("program_event", "pending_review")
    with transaction(engine) as session:
        assert session.execute(select(func.count()).select_from(ProgramEvent)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(EarningCounter)).scalar_one() == 0
    with transaction(engine) as session:
        _, result = reviews.approve(
            session,
            Caller(w.platform.org_id, "platform", "op-key"),
            uuid.UUID(body["review_id"]),
            LATER,
        )
    assert isinstance(result, EventOut)
    assert result.points == 3000
    assert balance(engine, w.bank_a, "BANKA", "alice")[0] == 3000
    with transaction(engine) as session:
        again, replayed = events.post_event(session, issuer, "BANKA", req, T0, idem)
        counted = session.scalars(
            select(EarningCounter.points).where(EarningCounter.key.like("cap:m:%"))
        ).all()
    assert replayed
    assert again == result
    assert counted == [3000]

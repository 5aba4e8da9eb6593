"""Refunds of purchase events: the points the event earned (its campaign bonuses included, all
in its one accrual) are taken back in proportion to the spend refunded."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from clearing.core.errors import Conflict, NotFound
from clearing.core.idempotency import Operation, Outcome, run_once
from clearing.core.money import cumulative_share
from clearing.web.context import Caller
from issuers import accruals
from issuers.models import ProgramEvent
from issuers.programs import program_by_code
from issuers.schemas import EventRefundCreate, EventRefundOut


class EventNotRefundable(Conflict):
    code = "event_not_refundable"
    title = "Only a purchase event can be refunded"


class RefundExceedsSpend(Conflict):
    code = "refund_exceeds_spend"
    title = "Refund exceeds what remains of the purchase"


def refund_event(
    session: Session,
    caller: Caller,
    code: str,
    event_id: uuid.UUID,
    req: EventRefundCreate,
    now: datetime,
    idempotency_key: str,
) -> Outcome[EventRefundOut]:
    """Refund part or all of a purchase event's spend, taking back its points in proportion."""
    operation = Operation(
        "event_refund",
        {"program": code, "event": str(event_id), **req.model_dump(mode="json")},
        EventRefundOut,
        lambda _: _refund(session, caller, code, event_id, req, now),
    )
    return run_once(session, caller.org_id, idempotency_key, operation, now)


def _refund(
    session: Session,
    caller: Caller,
    code: str,
    event_id: uuid.UUID,
    req: EventRefundCreate,
    now: datetime,
) -> EventRefundOut:
    program = program_by_code(session, code)
    # Locked: two refunds of one event count their spend one after the other.
    event = session.get(ProgramEvent, event_id, with_for_update=True)
    if (
        event is None
        or event.program_id != program.id
        or caller.org_id not in (program.issuer_id, event.posted_by)
    ):
        raise NotFound("unknown event")
    if event.spend is None:
        raise EventNotRefundable(f"a {event.kind} event has no spend to refund")
    if event.refunded_spend + req.spend > event.spend:
        raise RefundExceedsSpend(
            "cannot refund more than the purchase spent",
            refundable=event.spend - event.refunded_spend,
        )
    # Cumulative shares: whatever the parts, refunds of the whole spend take back exactly the
    # event's points; a part rounds down, so the member keeps a fraction until the last part.
    before = cumulative_share(event.points, event.refunded_spend, event.spend)
    event.refunded_spend += req.spend
    back = cumulative_share(event.points, event.refunded_spend, event.spend) - before
    session.flush()
    if back == 0 or event.accrual_id is None:
        return EventRefundOut(
            event_id=event.id,
            spend=req.spend,
            refunded_spend_total=event.refunded_spend,
            points=0,
            points_taken=0,
            debt_recorded=0,
            written_off=0,
            amount_returned=0,
            entry_id=None,
        )
    reversal = accruals.reverse_points(session, caller, event.accrual_id, back, now)
    return EventRefundOut(
        event_id=event.id,
        spend=req.spend,
        refunded_spend_total=event.refunded_spend,
        points=back,
        points_taken=reversal.points_taken,
        debt_recorded=reversal.debt_recorded,
        written_off=reversal.written_off,
        amount_returned=reversal.amount_returned,
        entry_id=reversal.entry_id,
    )

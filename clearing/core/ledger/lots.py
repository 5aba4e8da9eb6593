"""Lots: where a member's points came from and when they expire; which lots a debit takes and
which a give-back restores (the Python engine's side; `ledger_post` takes lots the same way)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from clearing.core.db import Sql, bulk_insert
from clearing.core.ids import new_id
from clearing.core.ledger.model import EntryDraft, Infos, LedgerImbalance, Leg
from clearing.core.models import JournalEntry, Lot, LotMovement

LOTS = cast(Table, Lot.__table__)
_LOT_MOVEMENTS = cast(Table, LotMovement.__table__)
_OPEN_LOTS = Sql(
    select(LOTS.c.id, LOTS.c.remaining, LOTS.c.expires_at).where(
        LOTS.c.account_id == bindparam("account_id"), LOTS.c.remaining > 0
    )
)
_EXPIRY_ORDER = (LOTS.c.expires_at.is_(None), LOTS.c.expires_at, LOTS.c.id)
_RUNNING = (
    select(
        LOTS.c.id,
        LOTS.c.remaining,
        LOTS.c.expires_at,
        (func.sum(LOTS.c.remaining).over(order_by=_EXPIRY_ORDER) - LOTS.c.remaining).label(
            "before"
        ),
    )
    .where(LOTS.c.account_id == bindparam("account_id"), LOTS.c.remaining > 0)
    .subquery()
)
# Only the lots a debit reaches, expiring first: a member with years of lots reads a few rows.
_LOTS_TO_TAKE = Sql(
    select(_RUNNING.c.id, _RUNNING.c.remaining, _RUNNING.c.expires_at)
    .where(_RUNNING.c.before < bindparam("needed"))
    .order_by(_RUNNING.c.expires_at.is_(None), _RUNNING.c.expires_at, _RUNNING.c.id)
)
_LOT_CHANGE = Sql(
    update(LOTS)
    .where(LOTS.c.id == bindparam("lot_id"))
    .values(remaining=LOTS.c.remaining + bindparam("delta"))
)


def new_lot(draft: EntryDraft, leg: Leg) -> dict[str, Any]:
    """The row of the lot a credit creates (without `remaining`: both engines set it)."""
    assert leg.lot is not None
    return {
        "id": new_id(),
        "account_id": leg.account_id,
        "entry_id": draft.id,
        "source": leg.lot.source,
        "funding_org_id": leg.lot.funding_org_id,
        "source_program": leg.lot.source_program,
        "earned_at": draft.booked_at,
        "expires_at": leg.lot.expires_at,
        "points": leg.amount,
    }


def take_lots(session: Session, leg: Leg) -> list[tuple[uuid.UUID, int]]:
    """Which lots a debit takes: preferred lots first, then those expiring first."""
    needed = -leg.amount
    if not leg.prefer_lots:
        rows = _LOTS_TO_TAKE.rows(session, {"account_id": leg.account_id, "needed": needed})
    else:
        rows = _OPEN_LOTS.rows(session, {"account_id": leg.account_id})
    if leg.only_lots:
        rows = [r for r in rows if r.id in leg.prefer_lots]
    preferred = {lot_id: n for n, lot_id in enumerate(leg.prefer_lots)}
    rows.sort(
        key=lambda r: (
            preferred.get(r.id, len(preferred)),
            r.expires_at is None,
            r.expires_at or datetime.min,
            r.id,
        )
    )
    taken: list[tuple[uuid.UUID, int]] = []
    for row in rows:
        if needed == 0:
            break
        n = min(needed, row.remaining)
        taken.append((row.id, n))
        needed -= n
    if needed:
        raise LedgerImbalance("lots do not cover the balance of a member account")
    return taken


def restorable(
    session: Session, account_id: uuid.UUID, original: uuid.UUID, points: int
) -> list[tuple[uuid.UUID, int]]:
    """Give back points to the lots `original` took, latest-expiring first."""
    taken = dict(
        session.execute(
            select(LotMovement.lot_id, -LotMovement.points)
            .join(Lot, Lot.id == LotMovement.lot_id)
            .where(LotMovement.entry_id == original, Lot.account_id == account_id)
        ).all()
    )
    given_back = dict(
        session.execute(
            select(LotMovement.lot_id, func.sum(LotMovement.points))
            .join(JournalEntry, JournalEntry.id == LotMovement.entry_id)
            .where(JournalEntry.reverses_id == original, LotMovement.points > 0)
            .group_by(LotMovement.lot_id)
        ).all()
    )
    expiry = dict(
        session.execute(select(Lot.id, Lot.expires_at).where(Lot.id.in_(list(taken)))).all()
    )
    order = sorted(
        taken,
        key=lambda lot: (expiry[lot] is not None, expiry[lot] or datetime.min, lot),
        reverse=True,
    )
    result: list[tuple[uuid.UUID, int]] = []
    for lot_id in order:
        room = taken[lot_id] - (given_back.get(lot_id) or 0)
        n = min(room, points)
        if n > 0:
            result.append((lot_id, n))
            points -= n
    if points:
        raise LedgerImbalance("cannot give back more points than the original entry took")
    return result


class LotWriter:
    """Lot changes of a batch of entries: new lots are written in bulk; a debit or a give-back
    first writes what is pending, so that it reads the lots as the earlier entries left them."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.new_lots: list[dict[str, Any]] = []
        self.changes: dict[uuid.UUID, int] = defaultdict(int)
        self.movements: list[dict[str, Any]] = []

    def move(self, draft: EntryDraft, legs: Sequence[Leg], infos: Infos) -> tuple[uuid.UUID, ...]:
        """Create, take and give back the lots of one entry's member legs; the new lots' ids."""
        created: list[uuid.UUID] = []
        moved: dict[uuid.UUID, int] = defaultdict(int)
        for leg in legs:
            if not infos[leg.account_id].floor_zero or leg.amount == 0:
                continue
            if leg.lot is not None and leg.amount > 0:
                self.new_lots.append(new_lot(draft, leg) | {"remaining": leg.amount})
                created.append(self.new_lots[-1]["id"])
                # A new lot's creation is its `points`; movements record later changes.
                continue
            self.flush()
            if leg.amount < 0:
                found = take_lots(self.session, leg)
                sign = -1
            else:
                assert leg.restore_from is not None
                found = restorable(self.session, leg.account_id, leg.restore_from, leg.amount)
                sign = 1
            for lot_id, n in found:
                moved[lot_id] += sign * n
                self.changes[lot_id] += sign * n
        self.movements.extend(
            {"entry_id": draft.id, "lot_id": lot_id, "points": delta}
            for lot_id, delta in moved.items()
            if delta
        )
        if self.changes:
            self.flush()
        return tuple(created)

    def flush(self) -> None:
        """Write the pending new lots, lot changes and movements."""
        if self.new_lots:
            bulk_insert(self.session, LOTS, self.new_lots)
            self.new_lots = []
        if self.changes:
            _LOT_CHANGE.run_many(
                self.session, [{"lot_id": k, "delta": v} for k, v in self.changes.items() if v]
            )
            self.changes = defaultdict(int)
        if self.movements:
            bulk_insert(self.session, _LOT_MOVEMENTS, self.movements)
            self.movements = []

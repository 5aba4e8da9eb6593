"""Expiry: due lots leave their member's balance as entries to the program's `expired` account."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clearing.core.kinds import EntryKind
from clearing.core.ledger.model import EXPIRED, EntryDraft, Leg
from clearing.core.ledger.posting import Ledger
from clearing.core.models import Account, Balance, Lot


def expire_due_lots(session: Session, now: datetime, limit: int = 1000) -> int:
    """Post the expiry of lots due by `now`, one entry per member account; returns points expired.

    Points held by an open hold are not expired while held: the lot stays due and the next run
    expires it once the hold is released. Safe to run twice: expired lots have nothing left.
    """
    ledger = Ledger(session)
    due = session.execute(
        select(Lot.account_id, Lot.id)
        .where(Lot.expires_at <= now, Lot.remaining > 0)
        .order_by(Lot.account_id, Lot.expires_at, Lot.id)
        .limit(limit)
    ).all()
    by_account: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for account_id, lot_id in due:
        by_account[account_id].append(lot_id)
    total = 0
    for account_id, lot_ids in by_account.items():
        info = ledger.info([account_id])[account_id]
        row = session.execute(
            select(Balance.balance, Balance.held)
            .where(Balance.account_id == account_id, Balance.slot == 0)
            .with_for_update()
        ).one()
        due_points = session.execute(
            select(func.sum(Lot.remaining)).where(Lot.id.in_(lot_ids))
        ).scalar_one()
        points = min(int(due_points), row.balance - row.held)
        if points <= 0:
            continue
        expired_account = session.execute(
            select(Account.id).where(Account.asset == info.asset, Account.kind == EXPIRED)
        ).scalar_one()
        ledger.post(
            EntryDraft(
                kind=EntryKind.EXPIRY,
                org_id=info.org_id,
                booked_at=now,
                legs=[
                    Leg(account_id, -points, prefer_lots=tuple(lot_ids), only_lots=True),
                    Leg(expired_account, points),
                ],
            )
        )
        total += points
    return total

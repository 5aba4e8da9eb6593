"""Holds (two-phase spending): authorise reserves points (available = balance - held); a capture
closes the hold in its posting, a void or the time-to-live releases it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, insert, select, text, update
from sqlalchemy.orm import Session

from clearing.core.db import Sql, is_postgres
from clearing.core.errors import Conflict, InsufficientPoints
from clearing.core.ids import new_id
from clearing.core.kinds import HoldStatus
from clearing.core.ledger.engines import MEMBER_MOVE
from clearing.core.ledger.model import HoldClose, check_amount
from clearing.core.models import Balance, Hold
from clearing.core.timeutil import aware


class HoldNotOpen(Conflict):
    code = "hold_not_open"
    title = "Hold is not open"


class HoldExpired(Conflict):
    code = "hold_expired"
    title = "Hold has expired"


@dataclass(frozen=True, slots=True)
class HoldState:
    """A hold as read (and locked) by whoever captures or voids it."""

    id: uuid.UUID
    account_id: uuid.UUID
    points: int
    status: str
    expires_at: datetime

    def open_at(self, now: datetime) -> OpenHold:
        """The hold, if it can still be captured or voided at `now`."""
        if self.status != HoldStatus.AUTHORISED:
            raise HoldNotOpen(f"hold is {self.status}", hold_status=self.status)
        if aware(self.expires_at) <= now:
            raise HoldExpired(
                "hold expired; its points are released", expired_at=self.expires_at.isoformat()
            )
        return OpenHold(self.id, self.account_id, self.points)


@dataclass(frozen=True, slots=True)
class OpenHold:
    """A hold locked for capture or void."""

    id: uuid.UUID
    account_id: uuid.UUID
    points: int


_BALANCES = cast(Table, Balance.__table__)
_HOLDS = cast(Table, Hold.__table__)
_RELEASE = Sql(
    update(_BALANCES)
    .where(_BALANCES.c.account_id == bindparam("b_account"), _BALANCES.c.slot == 0)
    .values(held=_BALANCES.c.held - bindparam("points"))
)
_PLACE_HOLD = Sql(
    insert(_HOLDS),
    (
        "id",
        "account_id",
        "org_id",
        "points",
        "status",
        "captured_points",
        "created_at",
        "expires_at",
    ),
)
# On PostgreSQL the reservation and the hold row are one statement (one round trip).
_RESERVE_AND_HOLD = Sql(
    text(
        "WITH reserved AS (UPDATE balances SET held = held + :points"
        " WHERE account_id = :account_id AND slot = 0 AND balance >= held + :points"
        " RETURNING account_id)"
        " INSERT INTO holds (id, account_id, org_id, points, status, captured_points,"
        " created_at, expires_at)"
        " SELECT :id, account_id, :org_id, :points, :status, :captured_points, :created_at,"
        " :expires_at FROM reserved RETURNING id"
    )
)
_CLOSE_HOLD = Sql(
    update(_HOLDS)
    .where(_HOLDS.c.id == bindparam("hold_id"))
    .values(
        status=bindparam("b_status"),
        captured_points=bindparam("b_captured"),
        closed_at=bindparam("b_closed_at", type_=_HOLDS.c.closed_at.type),
    )
)


def place_hold(
    session: Session,
    account_id: uuid.UUID,
    points: int,
    org_id: uuid.UUID,
    now: datetime,
    expires_at: datetime,
) -> uuid.UUID:
    """Reserve points on a member account (available = balance - held)."""
    check_amount(points)
    hold = {
        "id": new_id(),
        "account_id": account_id,
        "org_id": org_id,
        "points": points,
        "status": HoldStatus.AUTHORISED.value,
        "captured_points": 0,
        "created_at": now,
        "expires_at": expires_at,
    }
    placed = _reserve(session, hold)
    # Expired holds are released lazily: only when they stand in the way.
    if not placed and release_expired_holds(session, now, account_id=account_id):
        placed = _reserve(session, hold)
    if not placed:
        raise InsufficientPoints("not enough available points", needed=points)
    return cast(uuid.UUID, hold["id"])


def _reserve(session: Session, hold: dict[str, Any]) -> bool:
    """Hold the points if they are available, and record the hold; False if they are not."""
    if is_postgres(session):
        return _RESERVE_AND_HOLD.first(session, hold) is not None
    move = {"b_account": hold["account_id"], "d_amount": 0, "d_held": hold["points"]}
    if MEMBER_MOVE.first(session, move) is None:
        return False
    _PLACE_HOLD.rows(session, hold)
    return True


def close_hold(session: Session, close: HoldClose, now: datetime) -> None:
    """Record how a hold ended (captured, voided), `now`."""
    _CLOSE_HOLD.rows(
        session,
        {
            "hold_id": close.hold_id,
            "b_status": close.status,
            "b_captured": close.captured,
            "b_closed_at": now,
        },
    )


def void_hold(session: Session, hold: OpenHold, now: datetime) -> None:
    """Release all points of an open hold and mark it voided."""
    _release(session, hold.account_id, hold.points)
    close_hold(session, HoldClose(hold.id, HoldStatus.VOIDED, 0), now)


def _release(session: Session, account_id: uuid.UUID, points: int) -> None:
    _RELEASE.rows(session, {"b_account": account_id, "points": points})


def release_expired_holds(
    session: Session, now: datetime, account_id: uuid.UUID | None = None, limit: int = 1000
) -> int:
    """Release holds whose time-to-live has passed; returns how many were released."""
    query = select(Hold.id, Hold.account_id, Hold.points).where(
        Hold.status == HoldStatus.AUTHORISED, Hold.expires_at <= now
    )
    if account_id is not None:
        query = query.where(Hold.account_id == account_id)
    rows = list(session.execute(query.order_by(Hold.account_id).limit(limit)))
    for row in rows:
        released = session.execute(
            update(Hold)
            .where(and_(Hold.id == row.id, Hold.status == HoldStatus.AUTHORISED))
            .values(status=HoldStatus.EXPIRED.value, closed_at=now)
        ).rowcount  # type: ignore[attr-defined]
        if released:
            _release(session, row.account_id, row.points)
    return len(rows)

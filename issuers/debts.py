"""Members' debts: a reversal of points the member already spent takes what is left; the rest
is owed to the program (recovered from the member's later accruals) or written off, as the
program's issuer chose (`Program.spent_reversal`).

The debt is a claim of the program on its member, not points anyone holds: the reversal gives
the program's issued account back only what it took, and each recovery later moves the repaid
points from the member back to the issued account, so every entry balances on its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from clearing.core.db import bulk_insert, is_postgres
from clearing.core.ids import new_id
from clearing.core.kinds import EntryKind
from clearing.core.ledger import EntryDraft, Leg
from clearing.web.context import Caller
from issuers.models import MemberDebt, MemberDebtMovement, Program
from issuers.programs import own_program
from issuers.schemas import ReturnPolicyOut, ReturnPolicySet

_DEBTS = cast(Table, MemberDebt.__table__)
_MOVEMENTS = cast(Table, MemberDebtMovement.__table__)


@dataclass(frozen=True, slots=True)
class Shortfall:
    """How a reversal of `points` splits when the member has only `available` left."""

    taken: int
    debt: int
    written_off: int

    @property
    def memo(self) -> dict[str, int]:
        """What the reversal's entry says of the part the member no longer had."""
        parts = {"debt_recorded": self.debt, "written_off": self.written_off}
        return {k: v for k, v in parts.items() if v}


def shortfall(points: int, available: int, spent_reversal: str) -> Shortfall:
    """Take what the member has (never held points); the rest is owed or written off."""
    taken = min(points, max(available, 0))
    rest = points - taken
    if spent_reversal == "debt":
        return Shortfall(taken, rest, 0)
    return Shortfall(taken, 0, rest)


def owe(session: Session, member_id: uuid.UUID, points: int, now: datetime) -> None:
    """Add `points` to a member's debt (one upsert: concurrent reversals both count)."""
    insert = pg_insert if is_postgres(session) else sqlite_insert
    statement = insert(_DEBTS).values(member_id=member_id, points=points, updated_at=now)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["member_id"],
            set_={"points": _DEBTS.c.points + statement.excluded.points, "updated_at": now},
        )
    )


def record(
    session: Session,
    member_id: uuid.UUID,
    entry_id: uuid.UUID,
    parts: Mapping[str, int],
    now: datetime,
) -> None:
    """The movements of a member's debt (or its write-off) the entry made, for the statement."""
    bulk_insert(
        session,
        _MOVEMENTS,
        [
            {
                "id": new_id(),
                "member_id": member_id,
                "entry_id": entry_id,
                "kind": kind,
                "points": points,
                "created_at": now,
            }
            for kind, points in parts.items()
            if points
        ],
    )


def debts_of(session: Session, member_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
    """What each of these members owes (only those who owe), their rows locked until commit,
    in one statement: recoveries and reversals of one member then wait for each other."""
    wanted = sorted(set(member_ids))
    if not wanted:
        return {}
    query = (
        select(MemberDebt.member_id, MemberDebt.points)
        .where(MemberDebt.member_id.in_(wanted), MemberDebt.points > 0)
        .order_by(MemberDebt.member_id)
    )
    if is_postgres(session):
        query = query.with_for_update()
    return {member_id: int(points) for member_id, points in session.execute(query)}


def debt_of(session: Session, member_id: uuid.UUID) -> int:
    """What a member owes now (no lock: for views)."""
    found = session.execute(
        select(MemberDebt.points).where(MemberDebt.member_id == member_id)
    ).scalar()
    return int(found or 0)


@dataclass(frozen=True, slots=True)
class Credit:
    """Points just credited to a member by an accrual: its account, its new lot, the program's
    issued account."""

    member_id: uuid.UUID
    account_id: uuid.UUID
    issued_account: uuid.UUID
    points: int
    lot_id: uuid.UUID


def recoveries(
    org_id: uuid.UUID, owed: Mapping[uuid.UUID, int], credits: Sequence[Credit], now: datetime
) -> list[tuple[uuid.UUID, EntryDraft]]:
    """The entries that repay debts from credits just posted, in file order, each with its
    member. Each takes from the credit's own lot, so it never needs points the member had
    before, and a line repays at most what it credited."""
    left = dict(owed)
    drafts: list[tuple[uuid.UUID, EntryDraft]] = []
    for credit in credits:
        due = left.get(credit.member_id, 0)
        n = min(due, credit.points)
        if n <= 0:
            continue
        left[credit.member_id] = due - n
        drafts.append(
            (
                credit.member_id,
                EntryDraft(
                    kind=EntryKind.DEBT_RECOVERY,
                    org_id=org_id,
                    booked_at=now,
                    legs=[
                        Leg(credit.account_id, -n, prefer_lots=(credit.lot_id,)),
                        Leg(credit.issued_account, n),
                    ],
                    memo={"debt_repaid": n},
                ),
            )
        )
    return drafts


def repay(session: Session, drafts: Sequence[tuple[uuid.UUID, EntryDraft]], now: datetime) -> None:
    """Write down the debts the recovery entries (posted) repaid."""
    repaid: dict[uuid.UUID, int] = {}
    for member_id, draft in drafts:
        repaid[member_id] = repaid.get(member_id, 0) + draft.memo["debt_repaid"]
    session.execute(
        update(_DEBTS)
        .where(_DEBTS.c.member_id == bindparam("m"))
        .values(points=_DEBTS.c.points - bindparam("n"), updated_at=now),
        [{"m": member_id, "n": n} for member_id, n in sorted(repaid.items())],
    )
    bulk_insert(
        session,
        _MOVEMENTS,
        [
            {
                "id": new_id(),
                "member_id": member_id,
                "entry_id": draft.id,
                "kind": "repaid",
                "points": draft.memo["debt_repaid"],
                "created_at": now,
            }
            for member_id, draft in drafts
        ],
    )


def set_return_policy(
    session: Session, caller: Caller, code: str, req: ReturnPolicySet
) -> ReturnPolicyOut:
    """The issuer chooses what a reversal of spent points does in its program."""
    program: Program = own_program(session, caller, code)
    program.spent_reversal = req.spent_reversal
    session.flush()
    return ReturnPolicyOut(program=program.code, spent_reversal=program.spent_reversal)


def return_policy(session: Session, caller: Caller, code: str) -> ReturnPolicyOut:
    """What a reversal of spent points does in one of the caller's programs."""
    program = own_program(session, caller, code)
    return ReturnPolicyOut(program=program.code, spent_reversal=program.spent_reversal)

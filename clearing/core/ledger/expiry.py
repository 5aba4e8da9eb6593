"""Expiry: due lots leave their member's balance as entries to the program's `expired` account."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, text, update
from sqlalchemy.orm import Session

from clearing.core.db import Sql, bulk_insert, is_postgres
from clearing.core.ids import new_id
from clearing.core.kinds import EntryKind
from clearing.core.ledger.model import EXPIRED, EntryDraft, Leg
from clearing.core.ledger.posting import Ledger
from clearing.core.models import Account, Balance, JournalEntry, Lot, LotMovement, Posting


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


# set-based expiry ------------------------------------------------------------------------------
#
# The same books as `expire_due_lots`, in a few statements per chunk of members: each member's
# due lots are taken earliest-expiring first (expires_at, then id), up to what is not held; one
# entry per ENTRY_MEMBERS members of a chunk and program debits each of them once and credits
# the program's `expired` account (on one of its balance slots) with the sum. `tests/clearing/test_bulk_expiry.py`
# runs both paths on twin databases and compares every ledger row that carries points.

_LOTS = cast(Table, Lot.__table__)
_BALANCES = cast(Table, Balance.__table__)
_ACCOUNTS = cast(Table, Account.__table__)
_JOURNAL = cast(Table, JournalEntry.__table__)
_POSTINGS = cast(Table, Posting.__table__)
_MOVEMENTS = cast(Table, LotMovement.__table__)
MAX_CHUNK = 30_000
"""Member accounts one chunk (one transaction) expires at most."""
ENTRY_MEMBERS = 64
"""Members per expiry entry. PostgreSQL checks that each entry sums to zero once per posting row
(a deferred row trigger summing the entry's postings), so an entry of n postings costs n^2 row
reads at commit: small entries keep that linear in the chunk; a SMALLINT leg bounds them too."""

_DUE_ACCOUNTS = (
    select(_LOTS.c.account_id)
    .where(
        _LOTS.c.expires_at <= bindparam("b_now", type_=_LOTS.c.expires_at.type),
        _LOTS.c.remaining > 0,
        _LOTS.c.account_id > bindparam("b_after", type_=_LOTS.c.account_id.type),
    )
    .group_by(_LOTS.c.account_id)
    .order_by(_LOTS.c.account_id)
    .limit(bindparam("b_size"))
)
# PostgreSQL: pick and lock the chunk in one statement, then take the lots and debit the members
# in a second one (a statement of its own, so that it reads what was committed before the locks).
_LOCK_DUE_PG = Sql(
    text(
        "SELECT b.account_id, a.asset FROM balances b JOIN accounts a ON a.id = b.account_id"
        " WHERE b.slot = 0 AND b.account_id IN (SELECT account_id FROM lots"
        " WHERE expires_at <= :now AND remaining > 0 AND account_id > :after"
        " GROUP BY account_id ORDER BY account_id LIMIT :size)"
        " ORDER BY b.account_id FOR UPDATE OF b"
    )
)
# What `_what_expires` computes, in SQL: each due lot, earliest-expiring first, gives what is
# left of the member's free points (balance - held) after the lots before it.
_TAKE_PG = Sql(
    text(
        "WITH due AS (SELECT l.id, l.account_id, l.remaining,"
        " CAST(sum(l.remaining) OVER (PARTITION BY l.account_id ORDER BY l.expires_at, l.id)"
        " AS bigint) - l.remaining AS before FROM lots l"
        " WHERE l.account_id = ANY(CAST(:ids AS uuid[])) AND l.expires_at <= :now"
        " AND l.remaining > 0),"
        " takes AS (SELECT d.id, d.account_id,"
        " LEAST(d.remaining, b.balance - b.held - d.before) AS n FROM due d"
        " JOIN balances b ON b.account_id = d.account_id AND b.slot = 0"
        " WHERE b.balance - b.held - d.before > 0),"
        " taken AS (UPDATE lots l SET remaining = l.remaining - t.n FROM takes t"
        " WHERE l.id = t.id RETURNING l.id, l.account_id, t.n),"
        " debited AS (UPDATE balances b SET balance = b.balance - s.n"
        " FROM (SELECT account_id, sum(n) AS n FROM taken GROUP BY account_id) s"
        " WHERE b.account_id = s.account_id AND b.slot = 0)"
        " SELECT account_id, id, n FROM taken ORDER BY account_id"
    )
)
_DEBIT_MEMBER = Sql(
    update(_BALANCES)
    .where(_BALANCES.c.account_id == bindparam("b_account"), _BALANCES.c.slot == 0)
    .values(balance=_BALANCES.c.balance - bindparam("b_points"))
)
_TAKE_LOT = Sql(
    update(_LOTS)
    .where(_LOTS.c.id == bindparam("b_lot"))
    .values(remaining=_LOTS.c.remaining - bindparam("b_points"))
)
_CREDIT_SLOT = Sql(
    update(_BALANCES)
    .where(
        _BALANCES.c.account_id == bindparam("b_account"), _BALANCES.c.slot == bindparam("b_slot")
    )
    .values(balance=_BALANCES.c.balance + bindparam("b_points"))
)
_EXPIRED_ACCOUNT = select(_ACCOUNTS.c.id, _ACCOUNTS.c.org_id, _ACCOUNTS.c.slots).where(
    _ACCOUNTS.c.asset == bindparam("b_asset"), _ACCOUNTS.c.kind == EXPIRED
)


@dataclass(frozen=True, slots=True)
class ExpiryChunk:
    """What one chunk of the set-based expiry did."""

    last_account: uuid.UUID
    """The cursor: the next chunk starts after this member account."""
    accounts: int
    """Member accounts with due lots this chunk read (a progress bar counts these)."""
    members: int
    """Member accounts whose points expired (members whose due points are all held: none)."""
    lots: int
    points: int


@dataclass(frozen=True, slots=True)
class _Member:
    account_id: uuid.UUID
    asset: str
    points: int
    takes: list[tuple[uuid.UUID, int]]


def expire_chunk(
    session: Session,
    now: datetime,
    after: uuid.UUID | None = None,
    size: int = 5000,
    entry_members: int = ENTRY_MEMBERS,
) -> ExpiryChunk | None:
    """Expire the due lots of up to `size` member accounts after `after` (in id order), set-based;
    None when no account after `after` has due lots. The caller commits each chunk."""
    if not 1 <= size <= MAX_CHUNK:
        raise ValueError(f"chunk size must be between 1 and {MAX_CHUNK}")
    if not 1 <= entry_members <= ENTRY_MEMBERS:
        raise ValueError(f"members per entry must be between 1 and {ENTRY_MEMBERS}")
    postgres = is_postgres(session)
    locked: Sequence[Any]
    if postgres:
        locked = _LOCK_DUE_PG.rows(
            session, {"now": now, "after": after or uuid.UUID(int=0), "size": size}
        )
        if not locked:
            return None
        accounts = [row.account_id for row in locked]
        taken = _TAKE_PG.rows(session, {"ids": accounts, "now": now})
        members = _taken(locked, taken)
    else:
        params = {"b_now": now, "b_after": after or uuid.UUID(int=0), "b_size": size}
        accounts = list(session.execute(_DUE_ACCOUNTS, params).scalars())
        if not accounts:
            return None
        # Lock the members' balances (account order, as postings do) before reading their
        # lots: lots of a member only change under the lock on its balance.
        locked = session.execute(
            select(_BALANCES.c.account_id, _BALANCES.c.balance, _BALANCES.c.held, _ACCOUNTS.c.asset)
            .join(_ACCOUNTS, _ACCOUNTS.c.id == _BALANCES.c.account_id)
            .where(_BALANCES.c.account_id.in_(accounts), _BALANCES.c.slot == 0)
            .order_by(_BALANCES.c.account_id)
        ).all()
        due = session.execute(
            select(_LOTS.c.account_id, _LOTS.c.id, _LOTS.c.remaining)
            .where(
                _LOTS.c.account_id.in_(accounts), _LOTS.c.expires_at <= now, _LOTS.c.remaining > 0
            )
            .order_by(_LOTS.c.account_id, _LOTS.c.expires_at, _LOTS.c.id)
        ).all()
        members = _what_expires(locked, due)
    by_asset: dict[str, list[_Member]] = defaultdict(list)
    for m in members:
        by_asset[m.asset].append(m)
    for asset, expiring in sorted(by_asset.items()):
        _post_chunk(session, now, asset, expiring, postgres, entry_members)
    return ExpiryChunk(
        last_account=accounts[-1],
        accounts=len(accounts),
        members=len(members),
        lots=sum(len(m.takes) for m in members),
        points=sum(m.points for m in members),
    )


def _taken(locked: Sequence[Any], taken: Sequence[Any]) -> list[_Member]:
    """The members of a chunk whose lots `_TAKE_PG` took, in account order."""
    takes: dict[uuid.UUID, list[tuple[uuid.UUID, int]]] = defaultdict(list)
    for account_id, lot_id, n in taken:
        takes[account_id].append((lot_id, int(n)))
    return [
        _Member(account_id, asset, sum(n for _, n in takes[account_id]), takes[account_id])
        for account_id, asset in locked
        if account_id in takes
    ]


def _what_expires(locked: Sequence[Any], due: Sequence[Any]) -> list[_Member]:
    """Per member: the points that expire (due, but never what is held) and the lots they
    come from, earliest-expiring first (`due` is in that order per account)."""
    lots: dict[uuid.UUID, list[tuple[uuid.UUID, int]]] = defaultdict(list)
    for account_id, lot_id, remaining in due:
        lots[account_id].append((lot_id, int(remaining)))
    members: list[_Member] = []
    for account_id, balance, held, asset in locked:
        account_lots = lots.get(account_id, [])
        points = min(sum(n for _, n in account_lots), int(balance) - int(held))
        if points <= 0:
            continue
        takes: list[tuple[uuid.UUID, int]] = []
        left = points
        for lot_id, remaining in account_lots:
            if left == 0:
                break
            n = min(left, remaining)
            takes.append((lot_id, n))
            left -= n
        members.append(_Member(account_id, asset, points, takes))
    return members


def _post_chunk(
    session: Session,
    now: datetime,
    asset: str,
    members: list[_Member],
    postgres: bool,
    entry_members: int,
) -> None:
    """Entries of up to ENTRY_MEMBERS members each: every member's debit, the program's `expired`
    credit; then balances, lots and lot movements, each in one statement for the chunk."""
    expired = session.execute(_EXPIRED_ACCOUNT, {"b_asset": asset}).one()
    journal: list[dict[str, Any]] = []
    postings: list[dict[str, Any]] = []
    movements: list[dict[str, Any]] = []
    for start in range(0, len(members), entry_members):
        group = members[start : start + entry_members]
        entry_id = new_id()
        journal.append(
            {
                "id": entry_id,
                "kind": EntryKind.EXPIRY.value,
                "org_id": expired.org_id,
                "booked_at": now,
                "reverses_id": None,
                "memo": {},
            }
        )
        postings.extend(
            {
                "entry_id": entry_id,
                "leg": n,
                "account_id": m.account_id,
                "asset": asset,
                "amount": -m.points,
            }
            for n, m in enumerate(group)
        )
        postings.append(
            {
                "entry_id": entry_id,
                "leg": len(group),
                "account_id": expired.id,
                "asset": asset,
                "amount": sum(m.points for m in group),
            }
        )
        movements.extend(
            {"entry_id": entry_id, "lot_id": lot, "points": -n} for m in group for lot, n in m.takes
        )
    bulk_insert(session, _JOURNAL, journal)
    bulk_insert(session, _POSTINGS, postings)
    takes = [take for m in members for take in m.takes]
    if not postgres:  # on PostgreSQL `_TAKE_PG` took the lots and debited the members
        _DEBIT_MEMBER.run_many(
            session, [{"b_account": m.account_id, "b_points": m.points} for m in members]
        )
        _TAKE_LOT.run_many(session, [{"b_lot": lot, "b_points": n} for lot, n in takes])
    # A hot system account: the credit lands on one of its slots, as a posting's would.
    slot = 0 if expired.slots == 1 else random.randrange(expired.slots)
    total = sum(m.points for m in members)
    _CREDIT_SLOT.rows(session, {"b_account": expired.id, "b_slot": slot, "b_points": total})
    bulk_insert(session, _MOVEMENTS, movements)


def due_accounts(session: Session, now: datetime) -> int:
    """How many member accounts have lots due by `now` (a progress bar's length)."""
    return int(
        session.execute(
            select(func.count(func.distinct(Lot.account_id))).where(
                Lot.expires_at <= now, Lot.remaining > 0
            )
        ).scalar_one()
    )

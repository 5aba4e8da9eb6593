"""The queries of the ledger reports: member postings grouped by program, business day and entry
kind, lots grouped by time to expiry. Every figure is summed in the database; only the groups
(programs x days x kinds) come back."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Table,
    and_,
    bindparam,
    case,
    cast,
    column,
    func,
    select,
    values,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from clearing.core.db import is_postgres
from clearing.core.ledger import MEMBER, points_asset
from clearing.core.models import Account, Balance, JournalEntry, Lot, Posting, UTCDateTime
from clearing.core.timeutil import aware
from issuers.models import Organisation, PointValue, Program

_POSTINGS: Table = Posting.__table__  # type: ignore[assignment]
_ENTRIES: Table = JournalEntry.__table__  # type: ignore[assignment]
_ACCOUNTS: Table = Account.__table__  # type: ignore[assignment]
_LOTS: Table = Lot.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class ProgramRow:
    """A program a report covers, with what its issuer's zone and currency say about it."""

    id: uuid.UUID
    code: str
    issuer_id: uuid.UUID
    issuer: str
    zone: str
    currency: str

    @property
    def asset(self) -> str:
        """The ledger asset of the program's points."""
        return points_asset(self.code)


@dataclass(frozen=True, slots=True)
class FlowRow:
    """Member postings of one program, one bucket and one entry kind: credits and debits apart.

    ``bucket`` is the first business date of the window, None for what came before the first
    window (the opening).
    """

    asset: str
    bucket: date | None
    kind: str
    credits: int
    debits: int
    """Zero or negative: the sum of the debit postings."""


def programs_seen(
    session: Session, org_id: uuid.UUID | None, program_code: str | None
) -> list[ProgramRow]:
    """The programs a party sees: all for the operator (None), else those it issues."""
    query = (
        select(
            Program.id,
            Program.code,
            Program.issuer_id,
            Organisation.name,
            Organisation.zone,
            Organisation.currency,
        )
        .join(Organisation, Organisation.id == Program.issuer_id)
        .order_by(Program.code)
    )
    if org_id is not None:
        query = query.where(Program.issuer_id == org_id)
    if program_code is not None:
        query = query.where(Program.code == program_code)
    return [ProgramRow(*row) for row in session.execute(query)]


def point_values(session: Session, program_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    """Every version of the programs' point values, oldest first (a few rows per program)."""
    found: dict[uuid.UUID, list[Any]] = {pid: [] for pid in program_ids}
    if not program_ids:
        return found
    rows = session.execute(
        select(
            PointValue.program_id, PointValue.version, PointValue.value, PointValue.effective_from
        )
        .where(PointValue.program_id.in_(program_ids))
        .order_by(PointValue.program_id, PointValue.version)
    )
    for program_id, version, value, effective_from in rows:
        found[program_id].append((version, Decimal(value), aware(effective_from)))
    return found


def _system_accounts(session: Session, assets: Sequence[str]) -> list[uuid.UUID]:
    # The few system accounts of the assets (issued, converted in/out, redeemed, expired): the
    # member postings are the asset's postings on any other account, which spares the scan a
    # join with the (million-row) accounts table.
    return list(
        session.execute(
            select(_ACCOUNTS.c.id).where(_ACCOUNTS.c.asset.in_(assets), _ACCOUNTS.c.kind != MEMBER)
        ).scalars()
    )


Window = tuple[date, datetime, datetime]
"""A bucket of business dates: its label (its first date) and its UTC instants [lo, hi)."""


def member_flows(
    session: Session, assets: Sequence[str], windows: Sequence[Window], *, opening: bool
) -> list[FlowRow]:
    """Member postings of `assets` by window and entry kind, credits and debits apart.

    `windows` are consecutive (each one's hi the next one's lo), computed in Python from the
    issuer's zone, so that both databases draw the same lines. A posting falls in the window
    of its entry's booking instant; with `opening`, one booked before the first window falls
    in bucket None (the opening balance), else it is not read. Nothing after the last is read.
    """
    if not assets or not windows:
        return []
    system = _system_accounts(session, assets)
    p, e = _POSTINGS, _ENTRIES
    booked = e.c.booked_at
    start, end = windows[0][1], windows[-1][2]
    where = [p.c.asset.in_(assets), booked < end]
    if not opening:
        where.append(booked >= start)
    if system:
        where.append(p.c.account_id.not_in(system))
    credits = func.sum(case((p.c.amount > 0, p.c.amount), else_=0))
    debits = func.sum(case((p.c.amount < 0, p.c.amount), else_=0))
    source = p.join(e, e.c.id == p.c.entry_id)
    if is_postgres(session):
        # One pass, a binary search per posting among the windows' bounds: bucket 0 is before
        # the first window (the opening), bucket n the n-th window.
        bounds = [lo for _, lo, _ in windows] + [end]
        bucket: Any = func.width_bucket(
            booked, bindparam("bounds", bounds, type_=postgresql.ARRAY(UTCDateTime))
        )
    else:
        # SQLite has no width_bucket: each posting joins the window it falls in; bucket 0 is
        # everything before the first.
        table = (
            values(
                column("idx", Integer),
                column("lo", UTCDateTime),
                column("hi", UTCDateTime),
                name="windows",
            )
            .data(
                [(0, datetime(1, 1, 1), start)]
                + [(n + 1, lo, hi) for n, (_, lo, hi) in enumerate(windows)]
            )
            .cte()
        )
        source = source.join(table, and_(booked >= table.c.lo, booked < table.c.hi))
        bucket = table.c.idx
    labelled = bucket.label("bucket")
    query = (
        select(p.c.asset, labelled, e.c.kind, credits, debits)
        .select_from(source)
        .where(*where)
        .group_by(p.c.asset, labelled, e.c.kind)
    )
    labels: list[date | None] = [None] + [label for label, _, _ in windows]
    return [
        FlowRow(asset, labels[n], kind, int(c or 0), int(d or 0))
        for asset, n, kind, c, d in session.execute(query)
    ]


def member_balances(session: Session, assets: Sequence[str]) -> dict[str, int]:
    """The sum of the member accounts' balances per asset, now (the ledger's own figure)."""
    if not assets:
        return {}
    rows = session.execute(
        select(_ACCOUNTS.c.asset, func.sum(cast(Balance.balance, BigInteger)))
        .join(Balance, Balance.account_id == _ACCOUNTS.c.id)
        .where(_ACCOUNTS.c.asset.in_(assets), _ACCOUNTS.c.kind == MEMBER)
        .group_by(_ACCOUNTS.c.asset)
    )
    return {asset: int(total or 0) for asset, total in rows}


def remaining_by_expiry(
    session: Session, assets: Sequence[str], bounds: Sequence[datetime]
) -> dict[str, list[int]]:
    """Points left in the member lots of `assets` now, by expiry: one figure per interval
    (-inf, bounds[0]), [bounds[0], bounds[1]), ..., [bounds[-1], +inf), then never (no expiry)."""
    if not assets:
        return {}
    lot, acc = _LOTS, _ACCOUNTS
    expires = lot.c.expires_at
    sums = []
    for n in range(len(bounds) + 1):
        when: list[ColumnElement[bool]] = [expires.is_not(None)]
        if n > 0:
            when.append(expires >= bounds[n - 1])
        if n < len(bounds):
            when.append(expires < bounds[n])
        sums.append(func.sum(case((and_(*when), lot.c.remaining), else_=0)))
    sums.append(func.sum(case((expires.is_(None), lot.c.remaining), else_=0)))
    rows = session.execute(
        select(acc.c.asset, *sums)
        .select_from(lot.join(acc, acc.c.id == lot.c.account_id))
        .where(acc.c.asset.in_(assets), acc.c.kind == MEMBER, lot.c.remaining > 0)
        .group_by(acc.c.asset)
    )
    return {row[0]: [int(v or 0) for v in row[1:]] for row in rows}

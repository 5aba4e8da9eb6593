"""Reports on the points themselves: liability roll-forward, breakage, redemption, ageing.

Every figure is a sum of member postings (the accounts of a program's points asset that belong
to its members), grouped in the database by program, business date in the issuer's zone and
entry kind. Each entry kind moves the liability through one named column (`FLOWS`), so that

    opening + issued - reversed + converted_in - converted_out - redeemed + returned - expired
            + adjusted + transferred - debt_recovered = closing

holds for every program and day, and the closing is the sum of the members' balances in the
ledger at that instant. The operator (``org_id`` None) sees every program; an issuer sees the
programs it issues; a merchant issues none and so sees no rows.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from sqlalchemy.orm import Session

from clearing.core.errors import ClearingError
from clearing.core.kinds import EntryKind
from clearing.core.money import share, value_owed_for_points
from clearing.core.timeutil import add_months, business_window
from reports.ledger_repository import (
    FlowRow,
    ProgramRow,
    member_flows,
    point_values,
    programs_seen,
    remaining_by_expiry,
)
from reports.query import Column, ColumnKind, ReportQuery, ReportSpec, ReportTable

MIDNIGHT = "00:00"
"""A report's business day is the issuer's calendar day: it closes at local midnight."""

# The movement columns and how each moves the liability: +1 adds its (positive) figure, -1
# takes it away. `adjusted` and `transferred` are signed nets and always add.
SIGNS: Mapping[str, int] = MappingProxyType(
    {
        "issued": +1,  # credited by accruals
        "reversed": -1,  # taken back by accrual reversals
        "converted_in": +1,  # credited by conversions into the program
        "converted_out": -1,  # debited by conversions out of it
        "redeemed": -1,  # spent at checkout captures and on points mall orders
        "returned": +1,  # given back by checkout refunds and mall returns
        "expired": -1,  # expired lots
        "adjusted": +1,  # manual adjustments, net (credits less debits)
        "transferred": +1,  # transfers between members, net: their fees leave the members
        "debt_recovered": -1,  # points of later accruals given back towards a member's debt
    }
)
FLOW_COLUMNS: tuple[str, ...] = tuple(SIGNS)

FLOWS: Mapping[EntryKind, tuple[str, str]] = MappingProxyType(
    {
        # kind: (the column its member credits go to, the column its member debits go to)
        EntryKind.ACCRUAL: ("issued", "issued"),
        EntryKind.ACCRUAL_REVERSAL: ("reversed", "reversed"),
        EntryKind.CONVERSION: ("converted_in", "converted_out"),
        EntryKind.CHECKOUT_CAPTURE: ("redeemed", "redeemed"),
        EntryKind.CHECKOUT_REFUND: ("returned", "returned"),
        EntryKind.EXPIRY: ("expired", "expired"),
        EntryKind.ADJUSTMENT: ("adjusted", "adjusted"),
        EntryKind.TRANSFER: ("transferred", "transferred"),
        EntryKind.DEBT_RECOVERY: ("debt_recovered", "debt_recovered"),
        EntryKind.MALL_REDEMPTION: ("redeemed", "redeemed"),
        EntryKind.MALL_RETURN: ("returned", "returned"),
    }
)
"""Where every entry kind's member postings go; tests/reports check that no kind is missing."""

_UNCLASSIFIED = set(EntryKind) - set(FLOWS)
if _UNCLASSIFIED:  # pragma: no cover - a new kind must be given a column before anything runs
    raise RuntimeError(f"entry kinds without a liability column: {sorted(_UNCLASSIFIED)}")


class UnclassifiedEntryKind(ClearingError):
    status = 500
    code = "unclassified_entry_kind"
    title = "Entry kind without a liability column"


def _classify(row: FlowRow, into: dict[str, int]) -> None:
    """Add one group's member postings to the movement columns (as signed ledger movements)."""
    try:
        credit_column, debit_column = FLOWS[EntryKind(row.kind)]
    except ValueError:
        # Never drop postings silently: the report would no longer tie to the ledger.
        raise UnclassifiedEntryKind(f"entry kind {row.kind!r} has no liability column") from None
    into[credit_column] += row.credits
    into[debit_column] += row.debits


def _days(date_from: date, date_to: date) -> list[date]:
    return [date_from + timedelta(days=n) for n in range((date_to - date_from).days + 1)]


def _windows(days: Sequence[date], zone: str) -> list[tuple[date, datetime, datetime]]:
    return [(day, *business_window(day, zone, MIDNIGHT)) for day in days]


def _by_zone(programs: Iterable[ProgramRow]) -> dict[str, list[ProgramRow]]:
    zones: dict[str, list[ProgramRow]] = defaultdict(list)
    for program in programs:
        zones[program.zone].append(program)
    return zones


@dataclass(frozen=True, slots=True)
class _Values:
    """A program's point value versions, to find the one in force at an instant."""

    starts: list[datetime]
    values: list[Decimal]

    @classmethod
    def of(cls, versions: Sequence[Any]) -> _Values:
        return cls([v[2] for v in versions], [v[1] for v in versions])

    def before(self, end: datetime) -> Decimal | None:
        """The value in force at the last instant before `end` (versions take effect in order);
        before the first took effect, the first (nothing can be outstanding then)."""
        n = bisect_left(self.starts, end)  # versions with effective_from < end
        if not self.values:
            return None
        return self.values[max(n - 1, 0)]


def _money(points: int, value: Decimal | None, currency: str) -> int | None:
    # The one rounding of points into money: up, as for the money a funder owes for creating
    # points (clearing.core.money): a liability is never understated.
    return None if value is None else value_owed_for_points(points, value, currency)


def _shown(movement: Mapping[str, int]) -> list[int]:
    """The movement columns as shown: each figure signed as its column's name reads."""
    return [SIGNS[name] * movement[name] for name in FLOW_COLUMNS]


_FLOW_COLS = tuple(Column(name, ColumnKind.POINTS) for name in FLOW_COLUMNS)
_PROGRAM_COLS = (
    Column("issuer", ColumnKind.TEXT),
    Column("program_code", ColumnKind.TEXT),
    Column("currency", ColumnKind.TEXT),
)
_CLOSING_COLS = (
    Column("closing", ColumnKind.POINTS),
    Column("point_value", ColumnKind.RATE),
    Column("closing_value", ColumnKind.MONEY),
)
LIABILITY_COLUMNS = (
    Column("business_date", ColumnKind.DATE),
    *_PROGRAM_COLS,
    Column("opening", ColumnKind.POINTS),
    *_FLOW_COLS,
    *_CLOSING_COLS,
)
SUMMARY_COLUMNS = (
    Column("date_from", ColumnKind.DATE),
    Column("date_to", ColumnKind.DATE),
    *_PROGRAM_COLS,
    Column("opening", ColumnKind.POINTS),
    *_FLOW_COLS,
    *_CLOSING_COLS,
)


def _zero() -> dict[str, int]:
    return dict.fromkeys(FLOW_COLUMNS, 0)


def liability(session: Session, query: ReportQuery) -> ReportTable:
    """Points liability roll-forward per program and business day: opening, flows, closing."""
    table = ReportTable("liability", LIABILITY_COLUMNS)
    programs = programs_seen(session, query.org_id, query.program_code)
    values = point_values(session, [p.id for p in programs])
    days = _days(query.date_from, query.date_to)
    for zone, group in _by_zone(programs).items():
        windows = _windows(days, zone)
        rows = member_flows(session, [p.asset for p in group], windows, opening=True)
        opening: dict[str, int] = defaultdict(int)
        moved: dict[tuple[str, date], dict[str, int]] = defaultdict(_zero)
        for row in rows:
            if row.bucket is None:
                opening[row.asset] += row.credits + row.debits
            else:
                _classify(row, moved[(row.asset, row.bucket)])
        for program in group:
            found = _Values.of(values[program.id])
            balance = opening[program.asset]
            for day, _, end in windows:
                movement = moved.get((program.asset, day)) or _zero()
                closing = balance + sum(movement.values())
                value = found.before(end)
                table.rows.append(
                    (
                        day,
                        program.issuer,
                        program.code,
                        program.currency,
                        balance,
                        *_shown(movement),
                        closing,
                        value,
                        _money(closing, value, program.currency),
                    )
                )
                balance = closing
    table.rows.sort(key=lambda r: (r[2], r[0]))
    return table


def liability_summary(session: Session, query: ReportQuery) -> ReportTable:
    """Points liability roll-forward per program for the whole range: one row each."""
    table = ReportTable("liability_summary", SUMMARY_COLUMNS)
    programs = programs_seen(session, query.org_id, query.program_code)
    values = point_values(session, [p.id for p in programs])
    for zone, group in _by_zone(programs).items():
        end = business_window(query.date_to, zone, MIDNIGHT)[1]
        # One window for the whole range, and the opening before it: one pass.
        window = (query.date_from, business_window(query.date_from, zone, MIDNIGHT)[0], end)
        opening: dict[str, int] = defaultdict(int)
        moved: dict[str, dict[str, int]] = defaultdict(_zero)
        for row in member_flows(session, [p.asset for p in group], [window], opening=True):
            if row.bucket is None:
                opening[row.asset] += row.credits + row.debits
            else:
                _classify(row, moved[row.asset])
        for program in group:
            movement = moved.get(program.asset) or _zero()
            closing = opening[program.asset] + sum(movement.values())
            value = _Values.of(values[program.id]).before(end)
            table.rows.append(
                (
                    query.date_from,
                    query.date_to,
                    program.issuer,
                    program.code,
                    program.currency,
                    opening[program.asset],
                    *_shown(movement),
                    closing,
                    value,
                    _money(closing, value, program.currency),
                )
            )
    table.rows.sort(key=lambda r: r[3])
    return table


def _range_movements(
    session: Session, group: Sequence[ProgramRow], zone: str, first: date, last: date
) -> dict[str, dict[str, int]]:
    """Each program's movement columns over business dates [first, last] (no opening read)."""
    window = (
        first,
        business_window(first, zone, MIDNIGHT)[0],
        business_window(last, zone, MIDNIGHT)[1],
    )
    moved: dict[str, dict[str, int]] = defaultdict(_zero)
    for row in member_flows(session, [p.asset for p in group], [window], opening=False):
        _classify(row, moved[row.asset])
    return moved


BREAKAGE_COLUMNS = (
    Column("window_from", ColumnKind.DATE),
    Column("window_to", ColumnKind.DATE),
    Column("issuer", ColumnKind.TEXT),
    Column("program_code", ColumnKind.TEXT),
    Column("issued", ColumnKind.POINTS),
    Column("converted_in", ColumnKind.POINTS),
    Column("expired", ColumnKind.POINTS),
    Column("breakage_rate", ColumnKind.RATE),
)


def trailing_year(date_to: date) -> date:
    """The first business date of the twelve months ending on `date_to` (inclusive)."""
    return add_months(datetime.combine(date_to, time()), -12).date() + timedelta(days=1)


def breakage(session: Session, query: ReportQuery) -> ReportTable:
    """Expired against created points per program over the trailing 12 months to date_to.

    Created points are those credited by accruals (`issued`, before any reversal) and by
    conversions into the program; ``breakage_rate`` = expired / (issued + converted_in),
    half-even to `clearing.core.money.SHARE_PLACES` places, None when nothing was created.
    ``date_from`` is not used: the window is always the twelve months ending on date_to.
    """
    table = ReportTable("breakage", BREAKAGE_COLUMNS)
    first = trailing_year(query.date_to)
    for zone, group in _by_zone(programs_seen(session, query.org_id, query.program_code)).items():
        moved = _range_movements(session, group, zone, first, query.date_to)
        for program in group:
            m = moved.get(program.asset) or _zero()
            issued, converted_in, expired = m["issued"], m["converted_in"], -m["expired"]
            table.rows.append(
                (
                    first,
                    query.date_to,
                    program.issuer,
                    program.code,
                    issued,
                    converted_in,
                    expired,
                    share(expired, issued + converted_in),
                )
            )
    table.rows.sort(key=lambda r: r[3])
    return table


REDEMPTION_COLUMNS = (
    Column("period_from", ColumnKind.DATE),
    Column("period_to", ColumnKind.DATE),
    Column("issuer", ColumnKind.TEXT),
    Column("program_code", ColumnKind.TEXT),
    Column("issued", ColumnKind.POINTS),
    Column("converted_in", ColumnKind.POINTS),
    Column("redeemed", ColumnKind.POINTS),
    Column("returned", ColumnKind.POINTS),
    Column("redemption_rate", ColumnKind.RATE),
)


def months_of(date_from: date, date_to: date) -> list[tuple[date, date]]:
    """The calendar months [date_from, date_to] touches, each clipped to the range."""
    periods: list[tuple[date, date]] = []
    first = date_from
    while first <= date_to:
        following = (first.replace(day=1) + timedelta(days=32)).replace(day=1)
        last = min(following - timedelta(days=1), date_to)
        periods.append((first, last))
        first = following
    return periods


def redemption_rate(session: Session, query: ReportQuery) -> ReportTable:
    """Points spent against points created, per program and calendar month of the range.

    One row per calendar month (in the issuer's zone) the range touches, clipped to the range
    (period_from, period_to). ``redeemed`` is points spent at checkout and on mall orders,
    ``returned`` what refunds and returns gave back; ``redemption_rate`` = (redeemed -
    returned) / (issued + converted_in), half-even to `clearing.core.money.SHARE_PLACES`
    places, None for a month that created no points.
    """
    table = ReportTable("redemption_rate", REDEMPTION_COLUMNS)
    periods = months_of(query.date_from, query.date_to)
    for zone, group in _by_zone(programs_seen(session, query.org_id, query.program_code)).items():
        windows = [
            (lo, business_window(lo, zone, MIDNIGHT)[0], business_window(hi, zone, MIDNIGHT)[1])
            for lo, hi in periods
        ]
        month_of = {lo: n for n, (lo, _) in enumerate(periods)}
        moved: dict[tuple[str, int], dict[str, int]] = defaultdict(_zero)
        for row in member_flows(session, [p.asset for p in group], windows, opening=False):
            assert row.bucket is not None
            _classify(row, moved[(row.asset, month_of[row.bucket])])
        for program in group:
            for n, (lo, hi) in enumerate(periods):
                m = moved.get((program.asset, n)) or _zero()
                created = m["issued"] + m["converted_in"]
                redeemed, returned = -m["redeemed"], m["returned"]
                table.rows.append(
                    (
                        lo,
                        hi,
                        program.issuer,
                        program.code,
                        m["issued"],
                        m["converted_in"],
                        redeemed,
                        returned,
                        share(redeemed - returned, created),
                    )
                )
    table.rows.sort(key=lambda r: (r[3], r[0]))
    return table


AGE_BUCKETS: tuple[tuple[str, int], ...] = (
    ("expiring_0_1m", 1),
    ("expiring_1_3m", 3),
    ("expiring_3_6m", 6),
    ("expiring_6_12m", 12),
)
"""Ageing columns and the months to expiry each ends at (exclusive); 12 months on is
`expiring_12m_plus`, lots without expiry `never_expiring`."""

AGEING_COLUMNS = (
    Column("as_of", ColumnKind.DATE),
    Column("issuer", ColumnKind.TEXT),
    Column("program_code", ColumnKind.TEXT),
    *(Column(name, ColumnKind.POINTS) for name, _ in AGE_BUCKETS),
    Column("expiring_12m_plus", ColumnKind.POINTS),
    Column("never_expiring", ColumnKind.POINTS),
    Column("outstanding", ColumnKind.POINTS),
)


def outstanding_by_age(session: Session, query: ReportQuery) -> ReportTable:
    """Points outstanding now per program, by months from the end of date_to to their expiry.

    Lots keep what is left in them now, not their history: the figures are the lots'
    remaining points at the moment the report runs, whatever the dates asked for. Only the
    reference instant the months are counted from is the end of business date ``date_to`` in
    the issuer's zone (ask for today to age from now). A lot due before one month from then
    is in ``expiring_0_1m``, including one past its expiry that the expiry job has not
    reached yet. ``outstanding`` is the sum of the row, which is the members' balances.
    """
    table = ReportTable("outstanding_by_age", AGEING_COLUMNS)
    for zone, group in _by_zone(programs_seen(session, query.org_id, query.program_code)).items():
        as_of = business_window(query.date_to, zone, MIDNIGHT)[1]
        bounds = [add_months(as_of, months) for _, months in AGE_BUCKETS]
        left = remaining_by_expiry(session, [p.asset for p in group], bounds)
        for program in group:
            figures = left.get(program.asset) or [0] * (len(AGE_BUCKETS) + 2)
            table.rows.append((query.date_to, program.issuer, program.code, *figures, sum(figures)))
    table.rows.sort(key=lambda r: r[2])
    return table


LEDGER_REPORTS: tuple[ReportSpec, ...] = (
    ReportSpec("liability", "Points liability per program and day", liability, per_program=True),
    ReportSpec(
        "liability_summary",
        "Points liability per program for the range",
        liability_summary,
        per_program=True,
    ),
    ReportSpec("breakage", "Breakage, trailing 12 months", breakage, per_program=True),
    ReportSpec(
        "redemption_rate",
        "Redemption rate per program and month",
        redemption_rate,
        per_program=True,
    ),
    ReportSpec(
        "outstanding_by_age",
        "Outstanding points by months to expiry",
        outstanding_by_age,
        per_program=True,
    ),
)

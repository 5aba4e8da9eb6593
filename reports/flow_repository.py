"""The queries of the flow reports: each one GROUP BY in the database, days in the viewer's zone.

A report's days are calendar days (midnight to midnight) in the zone of whoever looks: the party's
`Organisation.zone`, or the platform organisation's for the operator. An instant's day is computed
in SQL from the zone's UTC offsets over the asked range (`DayClock`), which Python's zoneinfo
works out once: one rule for both databases, DST included, and no row read into Python to find
its day.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Date,
    Select,
    and_,
    case,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from clearing.core.kinds import ObligationEvent, OrgKind
from clearing.core.models import Obligation
from clearing.core.policy import Verdict
from clearing.core.timeutil import day_end
from exchange.models import ConversionQuote
from issuers.models import Accrual, Member, Organisation, Program
from risk.models import RiskDecision
from settlement.models import SettlementBatch, SettlementPosition

DEFAULT_ZONE = "Asia/Shanghai"
"""The zone of an organisation that never set one (the column's default)."""

Instant = ColumnElement[datetime] | InstrumentedAttribute[datetime]
"""A UTC timestamp column."""

_STEP = timedelta(hours=6)
"""How far apart the offset is sampled; no zone changes its offset twice within six hours."""


@dataclass(frozen=True, slots=True)
class DayClock:
    """The UTC window of business dates [date_from, date_to] in `zone`, and the zone's offsets
    over it: `periods` holds (until, offset seconds), the last one running to `end`."""

    zone: str
    start: datetime
    end: datetime
    periods: tuple[tuple[datetime, int], ...]


def _offset(instant: datetime, zone: ZoneInfo) -> int:
    delta = instant.astimezone(zone).utcoffset()
    return 0 if delta is None else int(delta.total_seconds())


def day_clock(zone: str, date_from: date, date_to: date) -> DayClock:
    """The window and offsets of [date_from, date_to] in `zone` (midnight to midnight)."""
    tz = ZoneInfo(zone)
    start = day_end(date_from - timedelta(days=1), zone, "00:00")
    end = day_end(date_to, zone, "00:00")
    periods: list[tuple[datetime, int]] = []
    at, current = start, _offset(start, tz)
    while at < end:
        step_end = min(at + _STEP, end)
        if _offset(step_end, tz) != current:
            # Bisect to the second: the first instant with the new offset.
            low, high = at, step_end
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                if _offset(middle, tz) == current:
                    low = middle
                else:
                    high = middle
            periods.append((high, current))
            current = _offset(high, tz)
        at = step_end
    periods.append((end, current))
    return DayClock(zone, start, end, tuple(periods))


class _ShiftedDate(FunctionElement[date]):
    """The calendar date of a UTC timestamp moved by a whole number of seconds."""

    type = Date()
    name = "shifted_date"
    inherit_cache = True


@compiles(_ShiftedDate, "sqlite")
def _shifted_date_sqlite(element: _ShiftedDate, compiler: SQLCompiler, **kw: Any) -> str:
    moment, seconds = list(element.clauses)
    shift = int(str(seconds))  # our own integer literal, never a caller's text
    return f"date({compiler.process(moment, **kw)}, '{shift:+d} seconds')"


@compiles(_ShiftedDate, "postgresql")
def _shifted_date_postgresql(element: _ShiftedDate, compiler: SQLCompiler, **kw: Any) -> str:
    moment, seconds = list(element.clauses)
    shift = int(str(seconds))
    return (
        f"CAST(({compiler.process(moment, **kw)} AT TIME ZONE 'UTC')"
        f" + INTERVAL '{shift} seconds' AS DATE)"
    )


def local_day(moment: Instant, clock: DayClock) -> ColumnElement[date]:
    """The business date of a UTC timestamp column in the clock's zone (within its window)."""

    def shifted(seconds: int) -> ColumnElement[date]:
        return _ShiftedDate(moment, literal_column(str(seconds)))

    *earlier, (_, last) = clock.periods
    if not earlier:
        return shifted(last)
    return case(*((moment < until, shifted(off)) for until, off in earlier), else_=shifted(last))


def viewer_zone(session: Session, org_id: uuid.UUID | None) -> str:
    """The zone a report's days are in: the party's, or the platform's for the operator."""
    query = select(Organisation.zone)
    if org_id is None:
        query = query.where(Organisation.kind == OrgKind.PLATFORM)
    else:
        query = query.where(Organisation.id == org_id)
    return session.execute(query.limit(1)).scalar() or DEFAULT_ZONE


def _in_window(moment: Instant, clock: DayClock) -> ColumnElement[bool]:
    return and_(moment >= clock.start, moment < clock.end)


def _grouped(
    inner: Select[*tuple[Any, ...]], keys: Sequence[str], sums: Sequence[str]
) -> Select[*tuple[Any, ...]]:
    """GROUP BY `keys` over `inner` (as a subquery, so that the day's CASE is grouped by name
    rather than repeated with its own parameters), summing `sums` and counting rows."""
    sub = inner.subquery()
    return (
        select(
            *(sub.c[k] for k in keys),
            *(func.coalesce(func.sum(sub.c[s]), 0) for s in sums),
            func.count(),
        )
        .group_by(*(sub.c[k] for k in keys))
        .order_by(*(sub.c[k] for k in keys))
    )


def conversion_rows(
    session: Session, clock: DayClock, org_id: uuid.UUID | None, program: str | None
) -> Sequence[Any]:
    """Per day, source program, target program and currency: points out, points in, the money
    the source issuer owes the target issuer, and the count of conversions."""
    source_member, target_member = aliased(Member), aliased(Member)
    source, target = aliased(Program), aliased(Program)
    inner = (
        select(
            local_day(Obligation.booked_at, clock).label("business_date"),
            source.code.label("from_program"),
            target.code.label("to_program"),
            Obligation.currency.label("currency"),
            ConversionQuote.points_out.label("points_out"),
            ConversionQuote.points_in.label("points_in"),
            Obligation.amount.label("money"),
        )
        .select_from(Obligation)
        .join(ConversionQuote, ConversionQuote.entry_id == Obligation.entry_id)
        .join(source_member, source_member.id == ConversionQuote.source_member_id)
        .join(source, source.id == source_member.program_id)
        .join(target_member, target_member.id == ConversionQuote.target_member_id)
        .join(target, target.id == target_member.program_id)
        .where(
            Obligation.event_type == ObligationEvent.CONVERSION,
            _in_window(Obligation.booked_at, clock),
        )
    )
    if org_id is not None:
        inner = inner.where(
            or_(Obligation.payer_org_id == org_id, Obligation.payee_org_id == org_id)
        )
    if program is not None:
        inner = inner.where(or_(source.code == program, target.code == program))
    keys = ("business_date", "from_program", "to_program", "currency")
    return session.execute(_grouped(inner, keys, ("points_out", "points_in", "money"))).all()


def checkout_rows(
    session: Session, clock: DayClock, org_id: uuid.UUID | None, program: str | None
) -> Sequence[Any]:
    """Per day, merchant, program and currency: captures and refunds (points and money), the
    merchant's fee net of fee refunds, what it keeps (net), and the counts of captures and refunds."""
    fee = aliased(Obligation)
    fees = (
        select(
            fee.entry_id.label("entry_id"),
            func.sum(
                case((fee.event_type == ObligationEvent.FEE, fee.amount), else_=-fee.amount)
            ).label("fee"),
        )
        .where(
            fee.event_type.in_((ObligationEvent.FEE, ObligationEvent.FEE_REFUND)),
            _in_window(fee.booked_at, clock),
        )
        .group_by(fee.entry_id)
        .subquery()
    )
    o = Obligation
    refund = o.event_type == ObligationEvent.CHECKOUT_REFUND
    merchant_id = case((refund, o.payer_org_id), else_=o.payee_org_id)
    inner = (
        select(
            local_day(o.booked_at, clock).label("business_date"),
            merchant_id.label("merchant_id"),
            o.program_code.label("program"),
            o.currency.label("currency"),
            case((refund, 0), else_=1).label("captures"),
            case((refund, 1), else_=0).label("refunds"),
            case((refund, 0), else_=func.coalesce(o.points, 0)).label("captured_points"),
            case((refund, func.coalesce(o.points, 0)), else_=0).label("refunded_points"),
            case((refund, 0), else_=o.amount).label("captured_money"),
            case((refund, o.amount), else_=0).label("refunded_money"),
            func.coalesce(fees.c.fee, 0).label("fee"),
            (case((refund, -o.amount), else_=o.amount) - func.coalesce(fees.c.fee, 0)).label("net"),
        )
        .select_from(o)
        .outerjoin(fees, fees.c.entry_id == o.entry_id)
        .where(
            o.event_type.in_((ObligationEvent.CHECKOUT_CAPTURE, ObligationEvent.CHECKOUT_REFUND)),
            _in_window(o.booked_at, clock),
        )
    )
    if org_id is not None:
        inner = inner.where(or_(o.payer_org_id == org_id, o.payee_org_id == org_id))
    if program is not None:
        inner = inner.where(o.program_code == program)
    sub = inner.subquery()
    merchant = aliased(Organisation)
    keys = (sub.c.business_date, sub.c.merchant_id, merchant.name, sub.c.program, sub.c.currency)
    sums = (
        "captures",
        "refunds",
        "captured_points",
        "refunded_points",
        "captured_money",
        "refunded_money",
        "fee",
        "net",
    )
    query = (
        select(*keys, *(func.coalesce(func.sum(sub.c[s]), 0) for s in sums))
        .select_from(sub)
        .join(merchant, merchant.id == sub.c.merchant_id)
        .group_by(*keys)
        .order_by(sub.c.business_date, merchant.name, sub.c.program, sub.c.currency)
    )
    return session.execute(query).all()


def accrual_rows(
    session: Session, clock: DayClock, org_id: uuid.UUID | None, program: str | None
) -> Sequence[Any]:
    """Per day, program, funder and currency: accrued points and the money a merchant funder
    owes the issuer for them (nothing for the issuer's own), and the count of accruals."""
    funder, issuer = aliased(Organisation), aliased(Organisation)
    owed = aliased(Obligation)
    inner = (
        select(
            local_day(Accrual.created_at, clock).label("business_date"),
            Program.code.label("program"),
            funder.id.label("funder_id"),
            funder.name.label("funder"),
            funder.kind.label("funder_kind"),
            issuer.currency.label("currency"),
            Accrual.points.label("points"),
            func.coalesce(owed.amount, 0).label("money"),
        )
        .select_from(Accrual)
        .join(Member, Member.id == Accrual.member_id)
        .join(Program, Program.id == Member.program_id)
        .join(issuer, issuer.id == Program.issuer_id)
        .join(funder, funder.id == Accrual.funding_org_id)
        .outerjoin(
            owed,
            and_(
                owed.entry_id == Accrual.entry_id,
                owed.event_type == ObligationEvent.MERCHANT_FUNDED_ACCRUAL,
            ),
        )
        .where(_in_window(Accrual.created_at, clock))
    )
    if org_id is not None:
        inner = inner.where(or_(Accrual.funding_org_id == org_id, Program.issuer_id == org_id))
    if program is not None:
        inner = inner.where(Program.code == program)
    keys = ("business_date", "program", "funder_id", "funder", "funder_kind", "currency")
    return session.execute(_grouped(inner, keys, ("points", "money"))).all()


def position_rows(
    session: Session, date_from: date, date_to: date, org_id: uuid.UUID | None
) -> Sequence[Any]:
    """Per business date, currency and party: the net of its settlement positions (the batches'
    own business dates), and how many batches. A party sees only published batches."""
    b, p = SettlementBatch, SettlementPosition
    query = (
        select(
            b.business_date,
            b.currency,
            p.org_id,
            p.party_name,
            p.party_kind,
            func.sum(p.net),
            func.count(),
        )
        .select_from(p)
        .join(b, b.id == p.batch_id)
        .where(b.business_date >= date_from, b.business_date <= date_to)
        .group_by(b.business_date, b.currency, p.org_id, p.party_name, p.party_kind)
        .order_by(b.business_date, b.currency, p.party_name, p.org_id)
    )
    if org_id is not None:
        query = query.where(p.org_id == org_id, b.state == "published")
    return session.execute(query).all()


def decision_rows(
    session: Session, clock: DayClock, org_id: uuid.UUID | None, program: str | None
) -> Sequence[Any]:
    """Per day, rule (or, without one, the decision's code) and action: how many decisions
    allowed, refused and held for review."""
    d = RiskDecision
    inner = select(
        local_day(d.decided_at, clock).label("business_date"),
        func.coalesce(d.rule_id, d.code, "").label("rule"),
        d.action.label("action"),
        case((d.verdict == Verdict.ALLOW, 1), else_=0).label("allowed"),
        case((d.verdict == Verdict.DECLINE, 1), else_=0).label("refused"),
        case((d.verdict == Verdict.REVIEW, 1), else_=0).label("review"),
    ).where(_in_window(d.decided_at, clock))
    if org_id is not None:
        inner = inner.where(
            or_(d.caller_org_id == org_id, d.merchant_org_id == org_id, d.issuer_org_id == org_id)
        )
    if program is not None:
        inner = inner.where(d.program_code == program)
    keys = ("business_date", "rule", "action")
    return session.execute(_grouped(inner, keys, ("allowed", "refused", "review"))).all()

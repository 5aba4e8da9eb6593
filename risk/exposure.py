"""Settlement risk: each party's net debit cap over the open settlement window, and the
restriction of a party that has not paid a published batch by the deadline.

A party's open net debit in a currency is what it owes less what it is owed over the business
days whose settlement batch is not yet published. The rule keeps it as running counter rows
(`risk_exposure_positions`, per party, currency, business day and slot), moved while an
operation is screened, in the operation's own transaction: a declined or failed operation
rolls its counts back with everything else. A party without a cap is uncapped (the platform
sets none by default: a cap is a credit decision about one party, from its collateral or
standing, which no platform-wide figure could make well).

Concurrency: a capped party's increases all go to its slot 0, which the upsert locks, so two
operations that each fit only alone are serialised and the second sees the first's count; the
other slots (credits, and uncapped parties) are read from the statement's snapshot, which can
only miss credits still committing, so the check errs on the safe side. Rows are taken in
(party, currency, slot) order, before any balance row (the core's lock order).

On PostgreSQL the whole screen of an operation, or of a bulk file (whose debits are summed per
party first), is one statement: the upsert of its counter rows returning, per party, the cap in
force, the open net debit after it and any unpaid batch past its deadline.
"""

from __future__ import annotations

import random
import typing
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Date,
    Numeric,
    String,
    Table,
    Uuid,
    and_,
    cast,
    column,
    exists,
    func,
    insert,
    literal,
    not_,
    select,
    table,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from clearing.core.db import Sql
from clearing.core.errors import Conflict, NotFound
from clearing.core.models import UTCDateTime
from clearing.core.money import exponent
from clearing.core.policy import Decision, OperationContext, Verdict
from clearing.core.timeutil import BusinessCalendar, aware
from clearing.web.context import Caller
from issuers.models import Organisation
from risk.models import ExposureCap, ExposurePosition, SettlementPayment, SettlementRestriction
from risk.schemas import (
    CurrencyExposureOut,
    ExposureCapOut,
    ExposureCapSet,
    ExposureOut,
    PaymentOut,
    SettlementPaymentCreate,
    SettlementPaymentOut,
    SettlementRestrictionOut,
)

RULE = "exposure"
SLOTS = 8
"""Counter rows 1..SLOTS per party and day for what needs no lock (credits, uncapped parties)."""
CAPPED_SLOT = 0
SYSTEM = "system:payment-deadline"
EPOCH = date(1, 1, 1)

# Settlement's tables, read as plain columns: risk never imports settlement.
_BATCHES = table(
    "settlement_batches",
    column("id", String),
    column("currency", String),
    column("business_date", Date),
    column("state", String),
    column("published_at", UTCDateTime),
)
_POSITIONS = table(
    "settlement_positions",
    column("batch_id", String),
    column("org_id", Uuid),
    column("party_kind", String),
    column("net", String),
)
_CAPS = typing.cast(Table, ExposureCap.__table__)
_COUNTS = typing.cast(Table, ExposurePosition.__table__)
_RESTRICTIONS = typing.cast(Table, SettlementRestriction.__table__)
_PAYMENTS = typing.cast(Table, SettlementPayment.__table__)


class BatchNotPublished(Conflict):
    """A payment is recorded only against a published batch."""

    code = "batch_not_published"
    title = "Settlement batch not published"


class NothingDue(Conflict):
    """The party's net position in the batch is zero: nothing to pay or receive."""

    code = "nothing_due"
    title = "Nothing due"


class PaymentDirectionMismatch(Conflict):
    """The party's position says the other direction (a debit is paid, a credit received)."""

    code = "payment_direction_mismatch"
    title = "Payment direction does not match the position"


class PaymentAlreadyRecorded(Conflict):
    """A party's payment of a batch is recorded once."""

    code = "payment_already_recorded"
    title = "Payment already recorded"


# the rule --------------------------------------------------------------------------------

Key = tuple[uuid.UUID, str]
"""(party, currency)."""


@dataclass(frozen=True, slots=True)
class _Party:
    """What the counter statement answers for one party and currency."""

    cap: int | None
    version: int | None
    open_after: int | None
    """The open net debit after this screen's counts; only where the party's debit rises and it
    is capped."""
    overdue: str | None
    """An unpaid batch past its deadline (the party is restricted); only where its debit rises."""


def _moves(operation: OperationContext) -> dict[Key, int]:
    """How the operation moves each party's net debit: payers up, payees down."""
    moves: dict[Key, int] = {}
    for debit in operation.debits:
        if debit.org_id == debit.payee_org_id or debit.amount == 0:
            continue
        payer, payee = (debit.org_id, debit.currency), (debit.payee_org_id, debit.currency)
        moves[payer] = moves.get(payer, 0) + debit.amount
        moves[payee] = moves.get(payee, 0) - debit.amount
    return moves


class ExposureRule:
    """Declines an operation that would take a party's open net debit beyond its cap
    (`exposure_cap_exceeded`), or that raises the debit of a party restricted for not paying a
    batch (`settlement_overdue`); counts every allowed operation's debits."""

    name = RULE

    def __init__(self, zone: str, cutoff: str, slots: int = SLOTS) -> None:
        self.zone = zone
        self.cutoff = cutoff
        self.slots = slots
        self._random = random.Random()
        self._calendar = BusinessCalendar(zone, cutoff)

    def business_date(self, at: datetime) -> date:
        """The business day of `at`."""
        return self._calendar.date_of(at)

    def screen(
        self, session: Session, operations: Sequence[OperationContext]
    ) -> list[Decision | None]:
        """Count the operations' debits; decline the first that passes a cap or raises the
        debit of a restricted party."""
        answers: list[Decision | None] = [None] * len(operations)
        moves = [_moves(operation) for operation in operations]
        days: dict[date, list[int]] = {}
        for i, operation in enumerate(operations):
            if moves[i]:
                days.setdefault(self.business_date(operation.at), []).append(i)
        for day, indexes in days.items():
            totals: dict[Key, int] = {}
            rising: set[Key] = set()
            for i in indexes:
                for key, amount in moves[i].items():
                    totals[key] = totals.get(key, 0) + amount
                    if amount > 0:
                        rising.add(key)
            slots = {key: self._random.randint(1, self.slots) for key in totals}
            parties = count(session, day, totals, rising, slots)
            running = {
                key: party.open_after - totals[key]
                for key, party in parties.items()
                if party.open_after is not None
            }
            for i in indexes:
                for key, amount in sorted(moves[i].items(), key=_order):
                    party = parties[key]
                    before = running.get(key)
                    if before is not None:
                        running[key] = before + amount
                    if amount <= 0 or answers[i] is not None:
                        continue
                    if party.overdue is not None:
                        answers[i] = _overdue(key, party.overdue)
                    elif (
                        party.cap is not None and before is not None and before + amount > party.cap
                    ):
                        answers[i] = _over_cap(key, party, before, amount)
        return answers


def _order(item: tuple[Key, int]) -> tuple[str, str]:
    return str(item[0][0]), item[0][1]


def _over_cap(key: Key, party: _Party, before: int, amount: int) -> Decision:
    assert party.cap is not None
    org_id, currency = key
    return Decision(
        Verdict.DECLINE,
        code="exposure_cap_exceeded",
        rule_id=f"exposure_cap:{org_id}:{currency}",
        rule_version=party.version,
        reason=(
            f"the operation would take party {org_id}'s open net debit to {before + amount}"
            f" {currency}, beyond its cap of {party.cap}"
        ),
        detail={
            "party": str(org_id),
            "currency": currency,
            "cap": party.cap,
            "open_net_debit": before,
            "headroom": party.cap - before,
            "requested": amount,
        },
    )


def _overdue(key: Key, batch_id: str) -> Decision:
    org_id, _ = key
    return Decision(
        Verdict.DECLINE,
        code="settlement_overdue",
        rule_id=f"settlement_overdue:{batch_id}",
        reason=(
            f"party {org_id} has not paid its net debit of settlement batch {batch_id} by the"
            " deadline: nothing may raise its debit until it has"
        ),
        detail={"party": str(org_id), "batch_id": batch_id},
    )


# the counter statement ---------------------------------------------------------------------

_COUNT_TEMPLATE = """
WITH d AS (
    SELECT u.org_id, u.currency, u.delta, u.rising,
           CASE WHEN u.rising AND c.cap IS NOT NULL THEN 0 ELSE u.slot END AS slot,
           c.cap, c.version
    FROM (VALUES {rows}) AS u(org_id, currency, delta, rising, slot)
    LEFT JOIN LATERAL (
        SELECT x.cap, x.version FROM risk_exposure_caps x
        WHERE x.org_id = u.org_id AND x.currency = u.currency
        ORDER BY x.version DESC LIMIT 1
    ) c ON true
),
up AS (
    INSERT INTO risk_exposure_positions AS p (org_id, currency, business_date, slot, net)
    SELECT org_id, currency, CAST(:day AS date), slot, delta FROM d
    ORDER BY org_id, currency, slot
    ON CONFLICT (org_id, currency, business_date, slot) DO UPDATE SET net = p.net + EXCLUDED.net
    RETURNING p.org_id, p.currency, p.slot, p.net
)
SELECT d.org_id, d.currency, d.cap, d.version,
    CASE WHEN up.slot = 0 THEN up.net + COALESCE((
        SELECT sum(o.net) FROM risk_exposure_positions o
        WHERE o.org_id = d.org_id AND o.currency = d.currency
          AND o.business_date > COALESCE((
              SELECT max(b.business_date) FROM settlement_batches b
              WHERE b.currency = d.currency AND b.state = 'published'), DATE '0001-01-01')
          AND NOT (o.business_date = CAST(:day AS date) AND o.slot = 0)), 0)
    END AS open_after,
    CASE WHEN d.rising THEN (
        SELECT min(r.batch_id) FROM risk_settlement_restrictions r
        WHERE r.org_id = d.org_id AND r.lifted_at IS NULL)
    END AS overdue
FROM d JOIN up ON up.org_id = d.org_id AND up.currency = d.currency
"""


_CHUNK = 256
"""Parties per counter statement (a bulk file's parties are usually a handful)."""


@lru_cache(maxsize=64)
def _count_pg(parties: int) -> Sql:
    """The counter statement for `parties` rows: one prepared statement per size, whose rows
    are plain parameters, so that PostgreSQL settles on one generic plan (with arrays it keeps
    re-planning, since it cannot tell their length)."""
    rows = ", ".join(
        f"(CAST(:o{i} AS uuid), CAST(:c{i} AS varchar), CAST(:d{i} AS bigint),"
        f" CAST(:r{i} AS boolean), CAST(:s{i} AS smallint))"
        for i in range(parties)
    )
    return Sql(text(_COUNT_TEMPLATE.format(rows=rows)))


def count(
    session: Session,
    day: date,
    totals: dict[Key, int],
    rising: set[Key],
    slots: dict[Key, int],
) -> dict[Key, _Party]:
    """Add `totals` to the parties' counters of `day` (a capped party whose debit rises in
    slot 0, locked; the rest in `slots`), in key order; what each party's check needs."""
    if session.get_bind().dialect.name != "postgresql":
        return count_portable(session, day, totals, rising, slots)
    keys = sorted(totals, key=lambda k: (str(k[0]), k[1]))
    rows: list[Any] = []
    # Chunks in key order keep the lock order sorted, and the parameters within bounds.
    for start in range(0, len(keys), _CHUNK):
        params: dict[str, Any] = {"day": day}
        for i, key in enumerate(keys[start : start + _CHUNK]):
            params.update(
                {
                    f"o{i}": key[0],
                    f"c{i}": key[1],
                    f"d{i}": totals[key],
                    f"r{i}": key in rising,
                    f"s{i}": slots[key],
                }
            )
        rows.extend(_count_pg(min(_CHUNK, len(keys) - start)).rows(session, params))
    return {
        (row.org_id, row.currency): _Party(
            row.cap,
            row.version,
            None if row.open_after is None else int(row.open_after),
            row.overdue,
        )
        for row in rows
    }


def count_portable(
    session: Session,
    day: date,
    totals: dict[Key, int],
    rising: set[Key],
    slots: dict[Key, int],
) -> dict[Key, _Party]:
    """`count` in several plain statements (SQLite, and the twin the tests hold the one
    PostgreSQL statement to)."""
    keys = sorted(totals, key=lambda k: (str(k[0]), k[1]))
    caps = current_caps(session, {k[0] for k in keys})
    postgres = session.get_bind().dialect.name == "postgresql"
    upsert = pg_insert if postgres else sqlite_insert
    chosen: dict[Key, int] = {}
    for key in keys:
        capped = caps.get(key)
        slot = CAPPED_SLOT if key in rising and capped and capped[0] is not None else slots[key]
        chosen[key] = slot
    for key in sorted(keys, key=lambda k: (str(k[0]), k[1], chosen[k])):
        statement = upsert(_COUNTS).values(
            org_id=key[0], currency=key[1], business_date=day, slot=chosen[key], net=totals[key]
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["org_id", "currency", "business_date", "slot"],
                set_={"net": _COUNTS.c.net + statement.excluded.net},
            )
        )
    overdue = overdue_batches(session, {k[0] for k in rising})
    answers: dict[Key, _Party] = {}
    for key in keys:
        cap, version = caps.get(key, (None, None))
        open_after = None
        if chosen[key] == CAPPED_SLOT:
            open_after = open_net_debits(session, key[0]).get(key[1], 0)
        answers[key] = _Party(
            cap, version, open_after, overdue.get(key[0]) if key in rising else None
        )
    return answers


def current_caps(session: Session, orgs: Iterable[uuid.UUID]) -> dict[Key, tuple[int | None, int]]:
    """The cap in force (and its version) of each party and currency that has one."""
    latest = (
        select(_CAPS.c.org_id, _CAPS.c.currency, func.max(_CAPS.c.version).label("version"))
        .where(_CAPS.c.org_id.in_(list(orgs)))
        .group_by(_CAPS.c.org_id, _CAPS.c.currency)
        .subquery()
    )
    rows = session.execute(
        select(_CAPS.c.org_id, _CAPS.c.currency, _CAPS.c.cap, _CAPS.c.version).join(
            latest,
            and_(
                _CAPS.c.org_id == latest.c.org_id,
                _CAPS.c.currency == latest.c.currency,
                _CAPS.c.version == latest.c.version,
            ),
        )
    )
    return {(r.org_id, r.currency): (r.cap, r.version) for r in rows}


def _last_published(currency: Any) -> Any:
    return func.coalesce(
        select(func.max(_BATCHES.c.business_date))
        .where(_BATCHES.c.currency == currency, _BATCHES.c.state == "published")
        .scalar_subquery(),
        literal(EPOCH, Date),
    )


def open_net_debits(session: Session, org_id: uuid.UUID) -> dict[str, int]:
    """The party's open net debit per currency: its counters over unpublished business days."""
    rows = session.execute(
        select(_COUNTS.c.currency, func.sum(_COUNTS.c.net))
        .where(
            _COUNTS.c.org_id == org_id,
            _COUNTS.c.business_date > _last_published(_COUNTS.c.currency),
        )
        .group_by(_COUNTS.c.currency)
    )
    return {currency: int(total) for currency, total in rows}


def overdue_batches(session: Session, orgs: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    """For each restricted party among `orgs`, the first batch it has not paid in time."""
    wanted = list(orgs)
    if not wanted:
        return {}
    rows = session.execute(
        select(_RESTRICTIONS.c.org_id, func.min(_RESTRICTIONS.c.batch_id))
        .where(_RESTRICTIONS.c.org_id.in_(wanted), _RESTRICTIONS.c.lifted_at.is_(None))
        .group_by(_RESTRICTIONS.c.org_id)
    )
    return {org_id: batch_id for org_id, batch_id in rows}


# caps and headroom -------------------------------------------------------------------------


def _organisation(session: Session, org_id: uuid.UUID) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None:
        raise NotFound("unknown organisation")
    return org


def set_cap(session: Session, caller: Caller, req: ExposureCapSet, now: datetime) -> ExposureCapOut:
    """Record a new version of a party's cap in a currency (operator)."""
    exponent(req.currency)
    # The lock keeps two concurrent changes from claiming one version number.
    if session.get(Organisation, req.org_id, with_for_update=True) is None:
        raise NotFound("unknown organisation")
    last = session.execute(
        select(func.max(_CAPS.c.version)).where(
            _CAPS.c.org_id == req.org_id, _CAPS.c.currency == req.currency
        )
    ).scalar()
    cap: int | None
    multiple = None
    if req.limit is not None:
        cap = req.limit
    elif req.collateral is not None:
        multiple = req.multiple if req.multiple is not None else Decimal(1)
        # Floor: a fraction of a minor unit of credit is never granted.
        cap = int((req.collateral * multiple).to_integral_value(ROUND_FLOOR))
    else:
        cap = None
    row = ExposureCap(
        org_id=req.org_id,
        currency=req.currency,
        version=(last or 0) + 1,
        cap=cap,
        limit_amount=req.limit,
        collateral=req.collateral,
        multiple=multiple,
        reason=req.reason,
        set_by_org=caller.org_id,
        set_by_key=caller.key_id,
        set_at=now,
    )
    session.add(row)
    session.flush()
    return ExposureCapOut.model_validate(row)


def cap_history(
    session: Session, org_id: uuid.UUID, currency: str | None = None
) -> list[ExposureCapOut]:
    """Every version of a party's caps, newest first."""
    query = select(ExposureCap).where(ExposureCap.org_id == org_id)
    if currency is not None:
        query = query.where(ExposureCap.currency == currency)
    query = query.order_by(ExposureCap.currency, ExposureCap.version.desc())
    return [ExposureCapOut.model_validate(row) for row in session.execute(query).scalars()]


def exposure(session: Session, org_id: uuid.UUID, currency: str | None = None) -> ExposureOut:
    """A party's open net debit, cap and headroom per currency, and whether it is restricted."""
    _organisation(session, org_id)
    nets = open_net_debits(session, org_id)
    caps = current_caps(session, [org_id])
    currencies = sorted({c for c in nets} | {c for _, c in caps})
    if currency is not None:
        currencies = [currency]
    lines: list[CurrencyExposureOut] = []
    for code in currencies:
        net = nets.get(code, 0)
        cap, version = caps.get((org_id, code), (None, None))
        lines.append(
            CurrencyExposureOut(
                currency=code,
                open_net_debit=net,
                cap=cap,
                cap_version=version,
                headroom=None if cap is None else cap - net,
            )
        )
    overdue = session.execute(
        select(_RESTRICTIONS.c.batch_id)
        .where(_RESTRICTIONS.c.org_id == org_id, _RESTRICTIONS.c.lifted_at.is_(None))
        .order_by(_RESTRICTIONS.c.batch_id)
    ).scalars()
    batches = list(overdue)
    return ExposureOut(
        org_id=org_id, restricted=bool(batches), overdue_batches=batches, currencies=lines
    )


# payments and restrictions -----------------------------------------------------------------


def _net(value: object) -> int:
    """A settlement position's net as an integer (NUMERIC on PostgreSQL, text on SQLite)."""
    return int(str(value))


def record_payment(
    session: Session, caller: Caller, req: SettlementPaymentCreate, now: datetime
) -> SettlementPaymentOut:
    """Record that a party paid its debit (or received its credit) of a published batch; a
    restriction for that batch is lifted."""
    found = session.execute(
        select(_BATCHES.c.state, _POSITIONS.c.net)
        .select_from(_POSITIONS.join(_BATCHES, _BATCHES.c.id == _POSITIONS.c.batch_id))
        .where(_POSITIONS.c.batch_id == req.batch_id, _POSITIONS.c.org_id == req.org_id)
    ).first()
    if found is None:
        raise NotFound("the party has no position in this batch")
    if found.state != "published":
        raise BatchNotPublished(f"batch {req.batch_id} is {found.state}, not published")
    net = _net(found.net)
    if net == 0:
        raise NothingDue("the party's net position in this batch is zero")
    expected = "paid" if net < 0 else "received"
    if req.direction != expected:
        raise PaymentDirectionMismatch(
            f"the party's position in this batch is to be {expected}",
            expected=expected,
            field="direction",
        )
    upsert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    payments = _PAYMENTS
    added = session.execute(
        upsert(payments)
        .values(
            batch_id=req.batch_id,
            org_id=req.org_id,
            direction=req.direction,
            reference=req.reference,
            recorded_by_org=caller.org_id,
            recorded_by_key=caller.key_id,
            recorded_at=now,
        )
        .on_conflict_do_nothing()
        .returning(payments.c.batch_id)
    ).first()
    if added is None:
        raise PaymentAlreadyRecorded("this party's payment of this batch is already recorded")
    lifted = session.execute(
        update(_RESTRICTIONS)
        .where(
            _RESTRICTIONS.c.org_id == req.org_id,
            _RESTRICTIONS.c.batch_id == req.batch_id,
            _RESTRICTIONS.c.lifted_at.is_(None),
        )
        .values(lifted_at=now, lifted_by_org=caller.org_id, lifted_by_key=caller.key_id)
    )
    return SettlementPaymentOut(
        batch_id=req.batch_id,
        org_id=req.org_id,
        direction=req.direction,
        amount=abs(net),
        reference=req.reference,
        recorded_by_org=caller.org_id,
        recorded_by_key=caller.key_id,
        recorded_at=now,
        lifted_restriction=bool(getattr(lifted, "rowcount", 0)),
    )


def restrict_overdue(
    session: Session, now: datetime, deadline: timedelta
) -> list[SettlementRestrictionOut]:
    """Restrict every party (the platform aside) that owes a batch published more than
    `deadline` before `now` and has no payment recorded; returns the new restrictions."""
    payments = _PAYMENTS
    rows = session.execute(
        select(_POSITIONS.c.org_id, _BATCHES.c.id, _BATCHES.c.published_at)
        .select_from(_POSITIONS.join(_BATCHES, _BATCHES.c.id == _POSITIONS.c.batch_id))
        .where(
            _BATCHES.c.state == "published",
            _BATCHES.c.published_at < now - deadline,
            _POSITIONS.c.party_kind != "platform",
            cast(_POSITIONS.c.net, Numeric) < 0,
            not_(
                exists().where(
                    payments.c.batch_id == _POSITIONS.c.batch_id,
                    payments.c.org_id == _POSITIONS.c.org_id,
                )
            ),
            not_(
                exists().where(
                    _RESTRICTIONS.c.batch_id == _POSITIONS.c.batch_id,
                    _RESTRICTIONS.c.org_id == _POSITIONS.c.org_id,
                )
            ),
        )
        .order_by(_POSITIONS.c.org_id, _BATCHES.c.id)
    ).all()
    made = [
        SettlementRestrictionOut(
            org_id=org_id,
            batch_id=batch_id,
            due_at=aware(published_at) + deadline,
            restricted_at=now,
            restricted_by=SYSTEM,
            lifted_at=None,
            lifted_by_org=None,
            lifted_by_key=None,
        )
        for org_id, batch_id, published_at in rows
    ]
    if made:
        session.execute(insert(_RESTRICTIONS), [r.model_dump() for r in made])
    return made


def list_restrictions(
    session: Session, org_id: uuid.UUID | None = None, open_only: bool = False
) -> list[SettlementRestrictionOut]:
    """Restrictions, newest first, of a party or all; only those still in force if asked."""
    query = select(SettlementRestriction).order_by(
        SettlementRestriction.restricted_at.desc(), SettlementRestriction.org_id
    )
    if org_id is not None:
        query = query.where(SettlementRestriction.org_id == org_id)
    if open_only:
        query = query.where(SettlementRestriction.lifted_at.is_(None))
    return [
        SettlementRestrictionOut.model_validate(row, from_attributes=True)
        for row in session.execute(query).scalars()
    ]


def list_payments(
    session: Session, batch_id: str | None = None, org_id: uuid.UUID | None = None
) -> list[PaymentOut]:
    """Recorded payments of a batch and/or a party, newest first."""
    query = select(SettlementPayment).order_by(
        SettlementPayment.recorded_at.desc(), SettlementPayment.org_id
    )
    if batch_id is not None:
        query = query.where(SettlementPayment.batch_id == batch_id)
    if org_id is not None:
        query = query.where(SettlementPayment.org_id == org_id)
    return [PaymentOut.model_validate(row) for row in session.execute(query).scalars()]

"""The daily anomaly scan against the database: read a business day and its trailing month of
member activity from the ledger core, flag outliers (`risk.anomalies`), keep them as
`risk_anomalies` rows for an operator to clear.

It reads the core's tables (journal entries, postings, member accounts) and the issuers' members,
programs and organisations only; exchange and settlement are siblings it never imports.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import pandas as pd
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from clearing.core.ids import new_id
from clearing.core.kinds import EntryKind, OrgKind
from clearing.core.ledger.model import MEMBER
from clearing.core.models import Account, JournalEntry, Posting
from clearing.core.timeutil import business_window
from issuers.models import Member, Organisation, Program
from risk.anomalies import (
    LEG_COLUMNS,
    OPENING_COLUMNS,
    ORG_COLUMNS,
    TRAILING_DAYS,
    Activity,
    Flag,
    Thresholds,
    business_dates,
)
from risk.anomalies import scan as find_flags
from risk.models import ANOMALY_STATUSES, Anomaly

_CHUNK = 500
"""Members per `IN (...)` list when reading opening balances (SQLite allows 32,766 binds)."""
_SCORE = Decimal("0.000001")


class AnomalyNotFound(NotFound):
    code = "anomaly_not_found"
    title = "No such anomaly"


class DayNotClosed(Conflict):
    code = "day_not_closed"
    title = "The business day has not closed yet"


class AnomalyAlreadyCleared(Conflict):
    code = "anomaly_already_cleared"
    title = "The anomaly was already cleared"


@dataclass(frozen=True)
class ScanResult:
    """What a scan of one business day found: every flag of the day, and how many are new."""

    business_date: date
    anomalies: list[Anomaly]
    created: int


# reading the day ----------------------------------------------------------------------------


def read_activity(session: Session, day: date, zone: str, cutoff: str) -> Activity:
    """The member legs of `day` and the trailing month, opening balances and organisations."""
    since, _ = business_window(day - timedelta(days=TRAILING_DAYS), zone, cutoff)
    start, end = business_window(day, zone, cutoff)
    rows = session.execute(
        select(
            JournalEntry.id,
            JournalEntry.booked_at,
            JournalEntry.kind,
            JournalEntry.org_id,
            Member.id,
            Member.external_id,
            Program.code,
            Member.created_at,
            Posting.amount,
        )
        .join(JournalEntry, JournalEntry.id == Posting.entry_id)
        .join(Account, Account.id == Posting.account_id)
        .join(Member, Member.account_id == Account.id)
        .join(Program, Program.id == Member.program_id)
        .where(
            Account.kind == MEMBER,
            JournalEntry.booked_at >= since,
            JournalEntry.booked_at < end,
        )
    ).all()
    frame = pd.DataFrame(
        [
            (str(r[0]), r[1], None, str(r[2]), str(r[3]), str(r[4]), r[5], r[6], r[7], int(r[8]))
            for r in rows
        ],
        columns=list(LEG_COLUMNS),
    )
    frame["booked_at"] = pd.to_datetime(frame["booked_at"], utc=True)
    frame["member_created_at"] = pd.to_datetime(frame["member_created_at"], utc=True)
    frame["business_date"] = business_dates(
        frame["booked_at"], zone, cutoff, day - timedelta(days=TRAILING_DAYS), day
    )
    frame["points"] = frame["points"].astype("int64")
    today = frame[frame["booked_at"] >= pd.Timestamp(start)]
    spenders = sorted(set(today.loc[today["points"] < 0, "member_id"]))
    orgs = pd.DataFrame(
        [
            (str(o), name, kind)
            for o, name, kind in session.execute(
                select(Organisation.id, Organisation.name, Organisation.kind)
            )
        ],
        columns=list(ORG_COLUMNS),
    )
    return Activity(day, since, frame, _openings(session, spenders, start), orgs)


def _openings(session: Session, members: list[str], start: datetime) -> pd.DataFrame:
    """Balance of each member at `start`, and its last posting before it that was no expiry."""
    rows: list[tuple[str, int, datetime | None]] = []
    for at in range(0, len(members), _CHUNK):
        chunk = [uuid.UUID(m) for m in members[at : at + _CHUNK]]
        lively = func.max(JournalEntry.booked_at).filter(JournalEntry.kind != EntryKind.EXPIRY)
        found = session.execute(
            select(Member.id, func.coalesce(func.sum(Posting.amount), 0), lively)
            .join(Posting, Posting.account_id == Member.account_id)
            .join(JournalEntry, JournalEntry.id == Posting.entry_id)
            .where(Member.id.in_(chunk), JournalEntry.booked_at < start)
            .group_by(Member.id)
        ).all()
        seen = {str(member): (int(total), last) for member, total, last in found}
        rows += [(m, *seen.get(m, (0, None))) for m in members[at : at + _CHUNK]]
    frame = pd.DataFrame(rows, columns=list(OPENING_COLUMNS))
    frame["last_active_at"] = pd.to_datetime(frame["last_active_at"], utc=True)
    return frame


# writing the flags --------------------------------------------------------------------------


def scan(
    session: Session,
    day: date,
    zone: str,
    cutoff: str,
    now: datetime,
    limits: Thresholds | None = None,
) -> ScanResult:
    """Scan business day `day`; write each new flag once (a re-run adds only what is new)."""
    closes = business_window(day, zone, cutoff)[1]
    if now < closes:
        # Half a day's flags would be judged against whole days, and kept.
        raise DayNotClosed(
            f"business day {day} closes at {closes.isoformat()}", closes_at=closes.isoformat()
        )
    flags = find_flags(read_activity(session, day, zone, cutoff), limits)
    existing = {
        (a.subject_kind, a.subject_id, a.feature)
        for a in session.scalars(select(Anomaly).where(Anomaly.business_date == day))
    }
    fresh = [
        _row(day, flag, now)
        for flag in flags
        if (flag.subject_kind, uuid.UUID(flag.subject_id), flag.feature.value) not in existing
    ]
    session.add_all(fresh)
    session.flush()
    return ScanResult(day, list_anomalies(session, day), len(fresh))


def _number(value: float) -> Decimal:
    if value != value or value in (float("inf"), float("-inf")):
        return Decimal("999999999999999999")  # NaN or no baseline: as far out as it goes
    return Decimal(repr(value)).quantize(_SCORE, ROUND_HALF_EVEN)


def _row(day: date, flag: Flag, now: datetime) -> Anomaly:
    return Anomaly(
        id=new_id(),
        business_date=day,
        subject_kind=flag.subject_kind,
        subject_id=uuid.UUID(flag.subject_id),
        program_code=flag.program_code,
        feature=flag.feature.value,
        observed=_number(flag.observed),
        baseline=_number(flag.baseline),
        score=_number(flag.score),
        reason=flag.reason,
        status="open",
        created_at=now,
    )


def run_scan(engine: Engine, day: date, settings: Settings, now: datetime) -> ScanResult:
    """Scan `day` in a transaction of its own, in the platform's zone and cut-off."""
    with transaction(engine) as session:
        return scan(session, day, settings.zone, settings.cutoff, now)


# the review queue ---------------------------------------------------------------------------


def list_anomalies(
    session: Session, business_date: date | None = None, status: str | None = None
) -> list[Anomaly]:
    """Anomalies of a day (or all), of a status (or any), by day, feature and subject."""
    if status is not None and status not in ANOMALY_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(ANOMALY_STATUSES)}", field="status")
    query = select(Anomaly)
    if business_date is not None:
        query = query.where(Anomaly.business_date == business_date)
    if status is not None:
        query = query.where(Anomaly.status == status)
    query = query.order_by(
        Anomaly.business_date, Anomaly.feature, Anomaly.subject_kind, Anomaly.subject_id
    )
    return list(session.scalars(query))


def clear_anomaly(
    session: Session, anomaly_id: uuid.UUID, operator_org_id: uuid.UUID, now: datetime
) -> Anomaly:
    """An operator has looked at an anomaly and clears it, recorded with who and when."""
    operator = session.get(Organisation, operator_org_id)
    if operator is None or operator.kind != OrgKind.PLATFORM:
        raise Forbidden("only the platform's operator clears anomalies")
    anomaly = session.get(Anomaly, anomaly_id, with_for_update=True)
    if anomaly is None:
        raise AnomalyNotFound("no such anomaly", anomaly_id=str(anomaly_id))
    if anomaly.status == "cleared":
        raise AnomalyAlreadyCleared(
            "this anomaly was already cleared",
            cleared_by=str(anomaly.cleared_by),
            cleared_at=str(anomaly.cleared_at),
        )
    anomaly.status = "cleared"
    anomaly.cleared_by = operator_org_id
    anomaly.cleared_at = now
    session.flush()
    return anomaly


def summary(anomalies: Iterable[Anomaly]) -> list[str]:
    """One line per anomaly, for the command line and the job's log."""
    return [
        f"{a.business_date} {a.feature} {a.subject_kind} {a.subject_id} [{a.status}]: {a.reason}"
        for a in anomalies
    ]

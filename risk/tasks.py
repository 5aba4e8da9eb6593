"""Risk's scheduled jobs: the daily anomaly scan of the business day that just closed, and the
restriction of parties that have not paid a published batch by the deadline.

Both are safe to run twice or concurrently with themselves: a flag is one row per day, subject
and feature, a restriction one row per party and batch, each written once.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

from sqlalchemy import Engine

from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.tasks import ScheduledJob
from clearing.core.timeutil import business_date_of, parse_cutoff, utcnow
from risk.exposure import restrict_overdue
from risk.scan import run_scan, summary
from risk.schemas import SettlementRestrictionOut

log = logging.getLogger("risk.tasks")

GRACE = timedelta(minutes=20)
"""After the cut-off: late postings of the day have landed, and the daily settlement batch
(10 minutes after by default) has had its start."""


def scan_closed_day(settings: Settings, *, now: datetime | None = None) -> None:
    """The scheduled job: opens its own engine, scans the business day before the one holding
    `now` less the grace (re-running a day adds only new flags), logs every flag."""
    at = utcnow() if now is None else now
    day = business_date_of(at - GRACE, settings.zone, settings.cutoff) - timedelta(days=1)
    engine = settings.open_engine()
    try:
        result = run_scan(engine, day, settings, at)
    finally:
        engine.dispose()
    log.info("anomaly scan %s: %d flags, %d new", day, len(result.anomalies), result.created)
    for line in summary(result.anomalies):
        log.warning("anomaly: %s", line)


OVERDUE_EVERY = timedelta(minutes=5)
"""How often the payment deadline is checked: a party is restricted at most this late."""


def run_overdue(
    engine: Engine, settings: Settings, now: datetime
) -> list[SettlementRestrictionOut]:
    """Record the restrictions due as of `now`, in one transaction; returns them."""
    with transaction(engine) as session:
        return restrict_overdue(session, now, timedelta(hours=settings.payment_deadline_hours))


def restrict_due(settings: Settings, *, now: datetime | None = None) -> None:
    """The scheduled job: opens its own engine, restricts what is overdue (as of `now`), logs it."""
    engine = settings.open_engine()
    try:
        made = run_overdue(engine, settings, utcnow() if now is None else now)
    finally:
        engine.dispose()
    for restriction in made:
        log.warning(
            "restricted %s: batch %s unpaid since %s",
            restriction.org_id,
            restriction.batch_id,
            restriction.due_at.isoformat(),
        )


def jobs(settings: Settings, engine: Engine) -> list[ScheduledJob]:
    """Risk's jobs: the anomaly scan, daily shortly after the cut-off; the payment deadline
    check, every five minutes."""
    del engine  # each job opens its own
    cutoff = parse_cutoff(settings.cutoff)
    daily_at = (datetime.combine(date(2000, 1, 1), cutoff) + GRACE).time()
    return [
        ScheduledJob(
            "risk-anomaly-scan",
            "daily anomaly scan of the closed business day",
            scan_closed_day,
            (settings,),
            daily_at=daily_at,
        ),
        ScheduledJob(
            "risk-payment-deadline",
            "restrict parties past the settlement payment deadline",
            restrict_due,
            (settings,),
            every=OVERDUE_EVERY,
        ),
    ]

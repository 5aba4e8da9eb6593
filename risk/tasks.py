"""Scheduled risk jobs: the daily anomaly scan of the business day that just closed."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

from sqlalchemy import Engine

from clearing.core.config import Settings
from clearing.core.tasks import ScheduledJob
from clearing.core.timeutil import business_date_of, parse_cutoff, utcnow
from risk.scan import run_scan, summary

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


def jobs(settings: Settings, engine: Engine) -> list[ScheduledJob]:
    """Risk's jobs: the anomaly scan, daily shortly after the cut-off."""
    del engine  # the scan opens its own
    cutoff = parse_cutoff(settings.cutoff)
    daily_at = (datetime.combine(date(2000, 1, 1), cutoff) + GRACE).time()
    return [
        ScheduledJob(
            "risk-anomaly-scan",
            "daily anomaly scan of the closed business day",
            scan_closed_day,
            (settings,),
            daily_at=daily_at,
        )
    ]

"""Calendar arithmetic on aware UTC datetimes."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, aware, in UTC: the only clock call of the platform (at its edges)."""
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def add_months(value: datetime, months: int) -> datetime:
    """Same day and time `months` later, clamped to the month's last day (Jan 31 + 1 = Feb 28/29)."""
    index = value.month - 1 + months
    year, month = value.year + index // 12, index % 12 + 1
    day = min(value.day, calendar.monthrange(year, month)[1])
    return value.replace(year=year, month=month, day=day)

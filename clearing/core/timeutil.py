"""Calendar arithmetic on aware UTC datetimes."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

from clearing.core.errors import InvalidInput

EFFECTIVE_HORIZON = timedelta(days=366)
"""How far ahead a published value or rate may take effect: later ones would block every
version published in between (versions take effect in order)."""


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


def within_horizon(at: datetime, now: datetime, field: str = "effective_from") -> datetime:
    """`at`, if it is no later than EFFECTIVE_HORIZON after `now`; else InvalidInput."""
    if at > now + EFFECTIVE_HORIZON:
        raise InvalidInput(
            f"{field} may be at most {EFFECTIVE_HORIZON.days} days ahead", field=field
        )
    return at

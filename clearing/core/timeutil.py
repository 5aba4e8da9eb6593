"""Calendar arithmetic on aware UTC datetimes."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

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


# the business day: one definition for settlement's windows and risk's daily counters ------


def parse_cutoff(text: str) -> time:
    """The local cut-off time from HH:MM."""
    try:
        hours, minutes = (int(part) for part in text.split(":"))
        return time(hours, minutes)
    except ValueError:
        raise InvalidInput(f"cut-off must be HH:MM, not {text!r}", field="cutoff") from None


def day_end(day: date, zone: str, cutoff: str) -> datetime:
    """The instant (UTC) business day `day` closes: its cut-off, DST-correct in `zone`.

    A cut-off before noon closes the day on the next calendar morning (00:00 closes `day` at
    the midnight after it); from noon on it closes the day on `day` itself (22:00: evening).
    """
    at = parse_cutoff(cutoff)
    calendar_day = day + timedelta(days=1) if at < time(12, 0) else day
    # fold=0: a cut-off inside a DST gap or overlap resolves the same way every time, and the
    # end of one day is by construction the start of the next.
    return datetime.combine(calendar_day, at, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def business_window(day: date, zone: str, cutoff: str) -> tuple[datetime, datetime]:
    """The half-open window [end of day-1, end of day) of business day `day`, in UTC."""
    return day_end(day - timedelta(days=1), zone, cutoff), day_end(day, zone, cutoff)


def business_date_of(instant: datetime, zone: str, cutoff: str) -> date:
    """The business day whose window holds `instant`."""
    day = instant.astimezone(ZoneInfo(zone)).date()
    while instant >= day_end(day, zone, cutoff):
        day += timedelta(days=1)
    while instant < day_end(day - timedelta(days=1), zone, cutoff):
        day -= timedelta(days=1)
    return day


class BusinessCalendar:
    """The business days of one zone and cut-off, for code that asks for many instants: the
    last window found is kept, since nearly every instant asked for falls in it."""

    __slots__ = ("_window", "cutoff", "zone")

    def __init__(self, zone: str, cutoff: str) -> None:
        self.zone = zone
        self.cutoff = cutoff
        self._window: tuple[datetime, datetime, date] | None = None

    def date_of(self, instant: datetime) -> date:
        """The business day whose window holds `instant` (as `business_date_of`)."""
        window = self._window
        if window is not None and window[0] <= instant < window[1]:
            return window[2]
        day = business_date_of(instant, self.zone, self.cutoff)
        self._window = (
            day_end(day - timedelta(days=1), self.zone, self.cutoff),
            day_end(day, self.zone, self.cutoff),
            day,
        )
        return day

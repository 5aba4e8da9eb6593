"""The dashboard's figures, read from the report catalogue (the same numbers as the API, the CLI
and the exports): the points liability, and the day's accruals, conversions and checkouts."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from clearing.core.timeutil import aware
from reports.catalogue import REPORTS
from reports.query import ReportQuery

CHART_DAYS = 30
"""How far back the dashboard's charts look, today included."""
ACTIVITY = (
    ("accruals", "funded_accruals", "accruals", "points"),
    ("conversions", "conversion_matrix", "conversions", "points_out"),
    ("checkouts", "checkout_volume", "captures", "captured_points"),
)
"""Each kind of activity: its name, the report it is read from, its count and points columns."""


@dataclass(frozen=True, slots=True)
class Activity:
    """How many operations of a kind, and how many points they moved, on one day."""

    kind: str
    count: int
    points: int


def business_day(now: datetime, zone: str) -> date:
    """The calendar day `now` falls on in the party's zone."""
    return aware(now).astimezone(ZoneInfo(zone)).date()


def liability(session: Session, org_id: uuid.UUID | None, day: date) -> list[dict[str, Any]]:
    """Per program: the closing points and their money at the end of `day` (liability_summary)."""
    return REPORTS["liability_summary"].run(session, ReportQuery(day, day, org_id)).records()


def liability_by_day(
    session: Session, org_id: uuid.UUID | None, last: date
) -> dict[str, list[tuple[date, int]]]:
    """Per program: the closing points of each day of the chart's range (the liability report)."""
    first = last - timedelta(days=CHART_DAYS - 1)
    series: dict[str, list[tuple[date, int]]] = defaultdict(list)
    for row in REPORTS["liability"].run(session, ReportQuery(first, last, org_id)).records():
        series[str(row["program_code"])].append((row["business_date"], int(row["closing"])))
    return {code: sorted(days) for code, days in sorted(series.items())}


def activity_by_day(
    session: Session, org_id: uuid.UUID | None, first: date, last: date
) -> dict[str, dict[date, Activity]]:
    """Per kind of activity and day: its count and points, summed over programs and parties."""
    found: dict[str, dict[date, Activity]] = {}
    query = ReportQuery(first, last, org_id)
    for kind, report, count, points in ACTIVITY:
        days: dict[date, list[int]] = defaultdict(lambda: [0, 0])
        for row in REPORTS[report].run(session, query).records():
            day = days[row["business_date"]]
            day[0] += int(row[count] or 0)
            day[1] += int(row[points] or 0)
        found[kind] = {d: Activity(kind, c, p) for d, (c, p) in sorted(days.items())}
    return found


def activity_on(session: Session, org_id: uuid.UUID | None, day: date) -> list[Activity]:
    """Each kind of activity on one day, zero where nothing happened."""
    found = activity_by_day(session, org_id, day, day)
    return [found[kind].get(day, Activity(kind, 0, 0)) for kind, *_ in ACTIVITY]

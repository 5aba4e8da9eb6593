"""A program's expiry policy: rolling N months, or year-end clear-down; `lot_expiry` is the one
rule for when a lot expires. Every path that credits points with a lot (accruals, conversion into
a program, enrolment with an opening lot) asks it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from clearing.core.errors import InvalidInput
from clearing.core.models import Lot
from clearing.core.timeutil import add_months
from issuers.schemas import ExpiringSoon

ROLLING = "rolling"
YEAR_END = "year_end"
POLICIES = (ROLLING, YEAR_END)
SOON_WINDOWS = (30, 60, 90)
"""The member view's windows of points expiring soon, in days."""


def lot_expiry(policy: str, months: int | None, zone: str, earned_at: datetime) -> datetime | None:
    """When points earned at `earned_at` expire under a program's policy; None: never.

    rolling: `months` after earning (same day and time, clamped to the month's end), never if
    `months` is None. year_end: points earned in year Y, as the issuer's zone counts years,
    expire at the end of year Y+1 there (the first instant of 1 January Y+2, local time).
    """
    if policy == YEAR_END:
        local = ZoneInfo(zone)
        year = earned_at.astimezone(local).year
        return datetime(year + 2, 1, 1, tzinfo=local).astimezone(UTC)
    if policy != ROLLING:
        raise InvalidInput(f"unknown expiry policy {policy!r}", field="expiry_policy")
    return add_months(earned_at, months) if months else None


def check_policy(policy: str, months: int | None) -> None:
    """A policy and its months that make sense together."""
    if policy not in POLICIES:
        raise InvalidInput(f"unknown expiry policy {policy!r}", field="expiry_policy")
    if policy == YEAR_END and months is not None:
        raise InvalidInput(
            "expiry_months applies to the rolling policy only", field="expiry_months"
        )


def expiring_soon(session: Session, account_id: uuid.UUID, now: datetime) -> ExpiringSoon:
    """Points of a member account expiring within 30, 60 and 90 days of `now`."""
    sums = [
        func.coalesce(
            func.sum(case((Lot.expires_at <= now + timedelta(days=d), Lot.remaining), else_=0)),
            0,
        )
        for d in SOON_WINDOWS
    ]
    row = session.execute(
        select(*sums).where(
            Lot.account_id == account_id,
            Lot.remaining > 0,
            Lot.expires_at <= now + timedelta(days=max(SOON_WINDOWS)),
        )
    ).one()
    return ExpiringSoon(
        within_30_days=int(row[0]), within_60_days=int(row[1]), within_90_days=int(row[2])
    )

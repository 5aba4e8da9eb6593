"""Two business days booked through the real services, and settings for settlement tests."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from factories import (
    T0,
    World,
    accrue,
    authorise,
    build_world,
    capture,
    convert,
    key,
    link,
    member,
)
from sqlalchemy import Engine

from clearing.config import Settings
from clearing.db import transaction
from exchange import service as exchange
from exchange.schemas import RefundCreate

DAY1 = date(2026, 11, 20)
"""T0 is 2026-11-20 09:00 in Asia/Shanghai: business day DAY1 with the 00:00 cut-off."""
DAY2 = DAY1 + timedelta(days=1)
AFTER_DAY2 = datetime(2026, 11, 22, 0, 30, tzinfo=T0.tzinfo)
"""08:30 local on 2026-11-22: both days closed."""


def settlement_settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings on `db_url` with the platform key and settlement files under `tmp_path`."""
    return dataclasses.replace(
        Settings.from_env(),
        database_url=db_url,
        zone="Asia/Shanghai",
        cutoff="00:00",
        platform_key_path=tmp_path / "keys" / "platform.pem",
        settlement_dir=tmp_path / "settlement",
    )


@dataclass
class Days:
    world: World
    refund_of_day1: str
    """Entry id of the day-2 refund of a checkout captured on day 1."""


def book_two_days(engine: Engine) -> Days:
    """Day 1: merchant-funded accruals, a conversion, captures. Day 2: more of each, refunds,
    including a partial refund of a capture settled on day 1."""
    w = build_world(engine, T0 - timedelta(hours=1))
    for code, issuer in w.programs.items():
        for name in ("alice", "bob"):
            member(engine, issuer, code, f"{code}-{name}", T0 - timedelta(hours=1))
    t = T0
    accrue(engine, w.bank_a, "BANKA", "BANKA-alice", 200_000, t)
    accrue(engine, w.shop, "BANKA", "BANKA-alice", 30_000, t + timedelta(minutes=1))
    accrue(engine, w.cafe, "BANKB", "BANKB-bob", 7_777, t + timedelta(minutes=2))
    accrue(engine, w.carrier, "MOBILE", "MOBILE-alice", 50_000, t + timedelta(minutes=3))
    link(engine, w.bank_b, ("BANKA", "BANKA-alice"), ("BANKB", "BANKB-alice"), t)
    convert(
        engine,
        w.bank_a,
        ("BANKA", "BANKA-alice"),
        ("BANKB", "BANKB-alice"),
        10_000,
        t + timedelta(minutes=5),
    )
    first = authorise(engine, w.shop, "BANKA", "BANKA-alice", 5_000, t + timedelta(minutes=6))
    capture(engine, w.shop, first.id, now=t + timedelta(minutes=7))
    second = authorise(engine, w.cafe, "MOBILE", "MOBILE-alice", 3_000, t + timedelta(minutes=8))
    capture(engine, w.cafe, second.id, 2_500, t + timedelta(minutes=9))
    # day 2
    t2 = T0 + timedelta(days=1)
    with transaction(engine) as session:
        refund, _ = exchange.refund(
            session, w.shop, first.id, RefundCreate(amount=1_234), t2, key()
        )
    accrue(engine, w.shop, "BANKB", "BANKB-alice", 12_345, t2 + timedelta(minutes=1))
    link(engine, w.bank_a, ("BANKB", "BANKB-alice"), ("BANKA", "BANKA-bob"), t2)
    convert(
        engine,
        w.bank_b,
        ("BANKB", "BANKB-alice"),
        ("BANKA", "BANKA-bob"),
        1_000,
        t2 + timedelta(minutes=2),
    )
    third = authorise(engine, w.cafe, "BANKB", "BANKB-bob", 4_000, t2 + timedelta(minutes=3))
    capture(engine, w.cafe, third.id, now=t2 + timedelta(minutes=4))
    with transaction(engine) as session:
        exchange.refund(
            session, w.cafe, third.id, RefundCreate(amount=4_000), t2 + timedelta(minutes=5), key()
        )
    return Days(w, str(refund.entry_id))

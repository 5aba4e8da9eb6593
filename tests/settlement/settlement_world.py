"""Two business days booked through the real services, and settings for settlement tests."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine

from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.kinds import EntryKind, ObligationEvent
from clearing.core.ledger import POSITION, EntryDraft, Ledger, ObligationDraft, money_asset
from clearing.core.money import MAX_AMOUNT
from exchange import service as exchange
from exchange.schemas import RefundCreate
from settlement.repository import position_accounts
from tests.factories import (
    T0,
    World,
    accrue,
    agree_all,
    authorise,
    build_world,
    capture,
    convert,
    key,
    link,
    member,
    org,
)

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
    agree_all(engine, w, T0 - timedelta(hours=1))
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


@dataclass
class LargeDay:
    """What `book_large_day` booked in one currency, summed exactly in Python."""

    currency: str
    platform: uuid.UUID
    parties: list[uuid.UUID]
    line_count: int
    amount_total: int
    points_total: int
    fee_income: int
    positions: dict[uuid.UUID, int]
    """Received less paid, fees included (the platform's is its fee income)."""
    paid: dict[uuid.UUID, int]
    """Gross of the non-fee obligations each party pays."""
    received: dict[uuid.UUID, int]
    fees_paid: dict[uuid.UUID, int]


LARGE_EVENTS = (
    ObligationEvent.MERCHANT_FUNDED_ACCRUAL,
    ObligationEvent.CONVERSION,
    ObligationEvent.CHECKOUT_CAPTURE,
)


def book_large_day(
    engine: Engine,
    currency: str,
    platform: uuid.UUID,
    *,
    lines: int = 28_000,
    skew: int = 400,
    fee_every: int = 32,
    at: datetime = T0,
    skew_to: tuple[int, ...] = (2,),
) -> LargeDay:
    """One business day of `currency` where every obligation carries the largest amount one
    operation may (MAX_AMOUNT minor units and points), among three parties and the platform.

    The parties pay each other round a triangle, so each one's gross passes 2^63 while its
    position stays far inside the ledger's balance bounds; `skew` extra payments from the
    first party to the third (to the parties numbered in `skew_to`, in turn) give the nets
    some size, and every `fee_every`-th payment
    carries a fee (1% of MAX_AMOUNT) owed to the platform, in the same entry. Posted through
    the ledger directly: the API would take hours for this many maximal operations.
    """
    names = ("issuer", "merchant", "issuer")
    parties = [
        org(engine, kind, f"Large {currency} {i}", currency, at - timedelta(hours=1)).org_id
        for i, kind in enumerate(names)
    ]
    with transaction(engine) as session:
        if not position_accounts(session, currency, {platform}):
            Ledger(session).open_account(
                money_asset(currency), POSITION, platform, platform, at - timedelta(hours=1)
            )
    fee = MAX_AMOUNT // 100
    drafts: list[EntryDraft] = []
    day = LargeDay(currency, platform, parties, 0, 0, 0, 0, {}, {}, {}, {})
    for who in [*parties, platform]:
        day.positions[who] = day.paid[who] = day.received[who] = day.fees_paid[who] = 0
    for k in range(lines + skew):
        if k < lines:
            a = k % 3
            payer, payee, event = parties[a], parties[(a + 1) % 3], LARGE_EVENTS[a]
            amount = MAX_AMOUNT - a
        else:
            payee = parties[skew_to[(k - lines) % len(skew_to)]]
            payer, event, amount = parties[0], LARGE_EVENTS[2], MAX_AMOUNT
        obligations = [
            ObligationDraft(
                event,
                payer,
                payee,
                currency,
                amount,
                program_code="LARGE",
                points=MAX_AMOUNT,
                point_value=Decimal("0.01"),
                point_value_version=1,
            )
        ]
        day.paid[payer] += amount
        day.received[payee] += amount
        day.positions[payer] -= amount
        day.positions[payee] += amount
        day.amount_total += amount
        day.points_total += MAX_AMOUNT
        if k % fee_every == 0:
            obligations.append(ObligationDraft(ObligationEvent.FEE, payer, platform, currency, fee))
            day.fees_paid[payer] += fee
            day.positions[payer] -= fee
            day.positions[platform] += fee
            day.fee_income += fee
            day.amount_total += fee
        day.line_count += len(obligations)
        drafts.append(
            EntryDraft(
                kind=EntryKind.ACCRUAL,
                org_id=payer,
                booked_at=at + timedelta(milliseconds=k),
                legs=(),
                obligations=obligations,
            )
        )
    # A posting moves each account's balance on one slot, drawn at random from its 8, and a
    # slot holds at most BALANCE_LIMIT (10^18). Postings of 50 entries (at most 5.05 x 10^16 a
    # slot) need 20 of them on one slot to pass it: for the 1,800 one-sided payments the tests
    # book (36 postings) that is a chance of about 10^-8. Postings of 900 entries (up to
    # 9.1 x 10^17 each) failed whenever two of them drew the same slot: one run in eight.
    for start in range(0, len(drafts), 50):
        with transaction(engine) as session:
            Ledger(session).post_many(drafts[start : start + 50])
    return day

"""Business dates at the issuer's midnight, breakage, redemption rate and ageing computed from the
operations a test made, and tenancy: a party sees only the programs it issues."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from clearing.core.db import transaction
from clearing.core.money import share
from clearing.core.tasks import run_expiry
from clearing.core.timeutil import add_months
from clearing.web.context import Caller
from exchange import service as exchange
from exchange.schemas import RefundCreate
from issuers import organisations
from issuers.schemas import OrganisationCreate
from reports.catalogue import REPORTS
from reports.liability import AGE_BUCKETS, LEDGER_REPORTS, trailing_year
from reports.query import ReportQuery
from tests.factories import (
    accrue,
    authorise,
    balance,
    build_world,
    capture,
    key,
    member,
    program,
)


def test_a_share_rounds_half_even_to_six_places() -> None:
    assert share(1, 3) == Decimal("0.333333")
    assert share(2, 3) == Decimal("0.666667")
    assert share(1, 2_000_000) == Decimal("0.000000")  # exactly half: to the even digit
    assert share(3, 2_000_000) == Decimal("0.000002")
    assert share(-1, 3) == Decimal("-0.333333")
    assert share(5, 0) is None


def test_business_dates_turn_at_the_issuers_midnight_across_a_dst_edge(engine: Engine) -> None:
    # New York leaves summer time on 2026-11-01: that day lasts 25 hours.
    zone = ZoneInfo("America/New_York")
    start = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)
    build_world(engine, now=start)
    with transaction(engine) as session:
        made = organisations.create_organisation(
            session,
            OrganisationCreate(kind="issuer", name="NY Bank", currency="USD", zone=zone.key),
            start,
        )
    ny = Caller(made.id, made.kind)
    program(engine, ny, "NYP", "0.01", now=start)
    member(engine, ny, "NYP", "ann")
    midnight_1 = datetime(2026, 11, 1, tzinfo=zone)  # 04:00 UTC (EDT)
    midnight_2 = datetime(2026, 11, 2, tzinfo=zone)  # 05:00 UTC (EST)
    instants = {
        midnight_1 - timedelta(microseconds=1): 1,
        midnight_1: 10,
        midnight_2 - timedelta(microseconds=1): 100,
        midnight_2: 1000,
    }
    for at, points in instants.items():
        accrue(engine, ny, "NYP", "ann", points, now=at.astimezone(UTC))
    expected: dict[date, int] = {}
    for at, points in instants.items():
        day = at.astimezone(zone).date()
        expected[day] = expected.get(day, 0) + points
    with transaction(engine) as session:
        rows = (
            REPORTS["liability"]
            .run(session, ReportQuery(date(2026, 10, 31), date(2026, 11, 2), ny.org_id, None))
            .records()
        )
    assert {r["business_date"]: r["issued"] for r in rows} == expected
    assert [r["business_date"] for r in rows] == sorted(expected)
    assert rows[0]["opening"] == 0
    assert rows[-1]["closing"] == sum(instants.values())


def test_a_party_sees_only_the_programs_it_issues(engine: Engine) -> None:
    w = build_world(engine)
    for code, issuer in w.programs.items():
        member(engine, issuer, code, "alice")
        accrue(engine, issuer, code, "alice", 100)
    day = datetime(2026, 11, 20).date()
    with transaction(engine) as session:
        for spec in LEDGER_REPORTS:

            def seen(org: Caller | None, code: str | None = None) -> set[str]:
                query = ReportQuery(day, day, None if org is None else org.org_id, code)
                return {r["program_code"] for r in spec.run(session, query).records()}  # noqa: B023

            assert seen(None) == set(w.programs), spec.name  # the operator sees every program
            assert seen(w.bank_b) == {"BANKB"}, spec.name
            assert seen(w.carrier) == {"MOBILE"}, spec.name
            assert seen(w.bank_b, "BANKA") == set(), spec.name  # another's program: nothing
            assert seen(w.shop) == set(), spec.name  # a merchant issues no program
            assert seen(None, "BANKA") == {"BANKA"}, spec.name


@dataclass(frozen=True)
class Credit:
    code: str
    external_id: str
    points: int
    at: datetime
    expires_at: datetime | None


SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(at: datetime) -> date:
    return at.astimezone(SHANGHAI).date()


def test_breakage_redemption_and_ageing_follow_the_operations(engine: Engine) -> None:
    w0 = datetime(2025, 11, 1, 1, 0, tzinfo=UTC)
    w = build_world(engine, now=w0)
    plan = [
        ("BANKA", "alice", 1000, w0),
        ("BANKA", "bob", 400, datetime(2025, 12, 10, 2, 0, tzinfo=UTC)),
        ("BANKA", "eve", 300, datetime(2026, 1, 20, 2, 0, tzinfo=UTC)),
        ("BANKA", "frank", 200, datetime(2026, 4, 1, 2, 0, tzinfo=UTC)),
        ("BANKA", "carol", 700, datetime(2026, 6, 15, 2, 0, tzinfo=UTC)),
        ("BANKB", "gina", 600, datetime(2026, 6, 1, 2, 0, tzinfo=UTC)),
        ("MOBILE", "dave", 250, datetime(2026, 1, 5, 2, 0, tzinfo=UTC)),
    ]
    credits = []
    for code, external_id, points, at in plan:
        issuer = w.programs[code]
        member(engine, issuer, code, external_id, now=w0)
        out = accrue(engine, issuer, code, external_id, points, now=at)
        credits.append(Credit(code, external_id, points, at, out.expires_at))
    # alice spends at the shop in December, and gets part of it back
    spent_at = datetime(2025, 12, 12, 3, 0, tzinfo=UTC)
    checkout = capture(
        engine,
        w.shop,
        authorise(engine, w.shop, "BANKA", "alice", 200, now=spent_at).id,
        None,
        now=spent_at,
    )
    refund_at = datetime(2025, 12, 20, 3, 0, tzinfo=UTC)
    with transaction(engine) as session:
        refunded, _ = exchange.refund(
            session, w.shop, checkout.id, RefundCreate(amount=100), refund_at, key()
        )
    # alice's lot expires after twelve months
    expire_at = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
    before = balance(engine, w.bank_a, "BANKA", "alice", expire_at)[0]
    assert run_expiry(engine, expire_at)[1] == before
    expired = before - balance(engine, w.bank_a, "BANKA", "alice", expire_at)[0]
    assert expired > 0

    date_to = date(2026, 11, 20)
    with transaction(engine) as session:
        breakage = {
            r["program_code"]: r
            for r in REPORTS["breakage"].run(session, ReportQuery(date_to, date_to, None)).records()
        }
        rates = (
            REPORTS["redemption_rate"]
            .run(session, ReportQuery(date(2025, 11, 1), date(2026, 1, 31), None, "BANKA"))
            .records()
        )
        ageing = {
            r["program_code"]: r
            for r in REPORTS["outstanding_by_age"]
            .run(session, ReportQuery(date_to, date_to, None))
            .records()
        }

    # breakage: the twelve months ending date_to
    first = trailing_year(date_to)
    assert first == date(2025, 11, 21)
    issued = sum(c.points for c in credits if c.code == "BANKA" and first <= local(c.at) <= date_to)
    assert breakage["BANKA"]["window_from"] == first
    assert (breakage["BANKA"]["issued"], breakage["BANKA"]["expired"]) == (issued, expired)
    assert breakage["BANKA"]["breakage_rate"] == share(expired, issued)
    assert breakage["MOBILE"]["expired"] == 0

    # redemption: per calendar month of the range
    assert [(r["period_from"], r["period_to"]) for r in rates] == [
        (date(2025, 11, 1), date(2025, 11, 30)),
        (date(2025, 12, 1), date(2025, 12, 31)),
        (date(2026, 1, 1), date(2026, 1, 31)),
    ]
    for row in rates:
        created = sum(
            c.points
            for c in credits
            if c.code == "BANKA" and row["period_from"] <= local(c.at) <= row["period_to"]
        )
        spent = (
            checkout.captured_points
            if row["period_from"] <= local(spent_at) <= row["period_to"]
            else 0
        )
        back = refunded.points if row["period_from"] <= local(refund_at) <= row["period_to"] else 0
        assert (row["issued"], row["redeemed"], row["returned"]) == (created, spent, back)
        assert row["redemption_rate"] == share(spent - back, created)

    # ageing: what is left now, by months from the end of date_to to each lot's expiry
    as_of = datetime(2026, 11, 21, tzinfo=SHANGHAI)
    bounds = [add_months(as_of, months) for _, months in AGE_BUCKETS]
    names = [name for name, _ in AGE_BUCKETS]
    for code, issuer in w.programs.items():
        expected = dict.fromkeys([*names, "expiring_12m_plus", "never_expiring"], 0)
        for c in credits:
            if c.code != code or (c.code, c.external_id) == ("BANKA", "alice"):
                continue  # alice's only lot has expired or been spent
            if c.expires_at is None:
                expected["never_expiring"] += c.points
            else:
                later = [n for n, bound in zip(names, bounds, strict=True) if c.expires_at < bound]
                expected[later[0] if later else "expiring_12m_plus"] += c.points
        row = ageing[code]
        assert {name: row[name] for name in expected} == expected, code
        held = sum(
            balance(engine, issuer, code, c.external_id, expire_at)[0]
            for c in credits
            if c.code == code
        )
        assert row["outstanding"] == held == sum(expected.values())
    # every bucket of the report is reached by one lot or another
    assert all(any(ageing[code][name] for code in ageing) for name in expected)

"""The flow reports give back, per day and party, exactly what the operations booked; a party
sees only the rows it is a party to; days follow the viewer's zone, DST included."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import DateTime, Engine, literal, select

from clearing.core.db import transaction
from clearing.core.errors import InvalidInput
from clearing.core.policy import Declined, PendingReview, bind_policy
from clearing.web.context import Caller
from issuers.organisations import create_organisation
from issuers.schemas import OrganisationCreate
from reports.catalogue import REPORTS
from reports.flow_repository import day_clock, local_day
from reports.query import ReportQuery, ReportTable
from risk.limits import LimitRule
from risk.policy import RiskPolicy
from settlement.service import run_batch
from tests.factories import T0, accrue, member, program
from tests.reports.flow_world import DAY1, DAY2, Flows, book_flows
from tests.settlement.settlement_world import settlement_settings

NAMES = {"Shop", "Cafe", "Bank A", "Bank B", "Carrier", "Platform"}


def run(engine: Engine, name: str, org: uuid.UUID | None = None, **kw: Any) -> ReportTable:
    """A report over both days (and the days around them), as `org` (None: the operator)."""
    query = ReportQuery(DAY1 - timedelta(days=1), DAY2 + timedelta(days=1), org, **kw)
    with transaction(engine) as session:
        return REPORTS[name].run(session, query)


def issuer_of(flows: Flows, program: str) -> str:
    return str(flows.world.programs[program].org_id)


def expected_conversions(flows: Flows, org: str | None = None) -> list[tuple[Any, ...]]:
    sums: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for day, done in flows.conversions.items():
        for source, target, out in done:
            if org not in (None, issuer_of(flows, source), issuer_of(flows, target)):
                continue
            row = sums[(day, source, target, out.currency)]
            for i, value in enumerate((out.points_out, out.points_in, out.settlement_amount, 1)):
                row[i] += value
    return [(*k, *v) for k, v in sorted(sums.items())]


def expected_checkouts(flows: Flows, org: str | None = None) -> list[tuple[Any, ...]]:
    names = {str(flows.world.shop.org_id): "Shop", str(flows.world.cafe.org_id): "Cafe"}
    sums: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * 8)
    for day, captured in flows.captures.items():
        for merchant, c in captured:
            if org not in (None, merchant, issuer_of(flows, c.program)):
                continue
            row = sums[(day, merchant, names[merchant], c.program, c.currency)]
            net = c.captured_amount - c.fee_amount
            for i, v in enumerate(
                (1, 0, c.captured_points, 0, c.captured_amount, 0, c.fee_amount, net)
            ):
                row[i] += v
    for day, refunded in flows.refunds.items():
        for merchant, code, r in refunded:
            if org not in (None, merchant, issuer_of(flows, code)):
                continue
            row = sums[(day, merchant, names[merchant], code, "CNY")]
            net = -r.amount + r.fee_returned
            for i, v in enumerate((0, 1, 0, r.points, 0, r.amount, -r.fee_returned, net)):
                row[i] += v
    return [(*k, *v) for k, v in sorted(sums.items(), key=lambda kv: (kv[0][0], kv[0][2:]))]


def expected_accruals(flows: Flows, org: str | None = None) -> list[tuple[Any, ...]]:
    w = flows.world
    parties = {
        str(w.bank_a.org_id): ("Bank A", "issuer"),
        str(w.bank_b.org_id): ("Bank B", "issuer"),
        str(w.carrier.org_id): ("Carrier", "issuer"),
        str(w.shop.org_id): ("Shop", "merchant"),
        str(w.cafe.org_id): ("Cafe", "merchant"),
    }
    sums: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0])
    for day, accrued in flows.accruals.items():
        for a in accrued:
            funder = str(a.funding_org_id)
            if org not in (None, funder, issuer_of(flows, a.program)):
                continue
            row = sums[(day, a.program, funder, *parties[funder], a.currency)]
            for i, v in enumerate((a.points, a.amount_owed, 1)):
                row[i] += v
    return [(*k, *v) for k, v in sorted(sums.items())]


def test_flow_reports_tie_to_the_operations_for_the_operator_and_each_party(
    engine: Engine,
) -> None:
    flows = book_flows(engine)
    w = flows.world
    assert run(engine, "conversion_matrix").rows == expected_conversions(flows)
    assert run(engine, "checkout_volume").rows == expected_checkouts(flows)
    assert run(engine, "funded_accruals").rows == expected_accruals(flows)
    # the figures are not all zero: each report says something
    assert all(r[4] > 0 and r[6] > 0 for r in run(engine, "conversion_matrix").rows)
    assert any(r[-2] > 0 for r in run(engine, "funded_accruals").rows)
    for party in (w.shop, w.cafe, w.bank_a, w.bank_b, w.carrier, w.platform):
        org = str(party.org_id)
        assert run(engine, "conversion_matrix", party.org_id).rows == expected_conversions(
            flows, org
        )
        assert run(engine, "checkout_volume", party.org_id).rows == expected_checkouts(flows, org)
        assert run(engine, "funded_accruals", party.org_id).rows == expected_accruals(flows, org)
    # a merchant sees its own checkouts and nobody else's; an issuer its program's only
    shop_rows = run(engine, "checkout_volume", w.shop.org_id).rows
    assert shop_rows
    assert {r[1] for r in shop_rows} == {str(w.shop.org_id)}
    carrier_rows = run(engine, "checkout_volume", w.carrier.org_id).rows
    assert carrier_rows
    assert {r[3] for r in carrier_rows} == {"MOBILE"}
    # a program narrows to the rows of that program
    only = run(engine, "checkout_volume", program_code="BANKB").rows
    assert only == [r for r in expected_checkouts(flows) if r[3] == "BANKB"]
    both_ways = run(engine, "conversion_matrix", program_code="BANKA").rows
    assert len(both_ways) == 2
    assert run(engine, "conversion_matrix", program_code="MOBILE").rows == []


def test_days_follow_the_viewers_zone(engine: Engine) -> None:
    book_flows(engine)
    with transaction(engine) as session:
        far = create_organisation(
            session,
            OrganisationCreate(
                kind="issuer", name="Far Bank", currency="CNY", zone="America/New_York"
            ),
            T0,
        )
    issuer = Caller(far.id, "issuer")
    program(engine, issuer, "FAR", "0.01")
    member(engine, issuer, "FAR", "erin")
    # T0 is 09:00 on DAY1 in Shanghai (the platform's zone) and 20:00 the day before in New York
    accrue(engine, issuer, "FAR", "erin", 4_321, T0)
    own = run(engine, "funded_accruals", far.id).rows
    assert [(r[0], r[1], r[6]) for r in own] == [(DAY1 - timedelta(days=1), "FAR", 4_321)]
    seen = run(engine, "funded_accruals", program_code="FAR").rows
    assert [(r[0], r[1], r[6]) for r in seen] == [(DAY1, "FAR", 4_321)]
    # a one-day range is that day's window in the viewer's zone, not the operator's
    with transaction(engine) as session:
        mine = REPORTS["funded_accruals"].run(session, ReportQuery(DAY1, DAY1, far.id))
        ops = REPORTS["funded_accruals"].run(session, ReportQuery(DAY1, DAY1, None, "FAR"))
    assert mine.rows == []
    assert len(ops.rows) == 1


@pytest.mark.parametrize(
    ("zone", "edge"),
    [
        ("Europe/London", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        ("Europe/London", datetime(2026, 10, 25, 1, 0, tzinfo=UTC)),
        ("America/New_York", datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
        ("Asia/Kolkata", datetime(2026, 6, 1, 0, 0, tzinfo=UTC)),
    ],
)
def test_an_instants_day_in_sql_is_zoneinfos_across_dst(
    engine: Engine, zone: str, edge: datetime
) -> None:
    """Every half hour across a day either side of a DST change, and at the edge itself."""
    from zoneinfo import ZoneInfo

    local = edge.astimezone(ZoneInfo(zone)).date()
    clock = day_clock(zone, local - timedelta(days=2), local + timedelta(days=2))
    instants = [edge + timedelta(minutes=30 * n) for n in range(-48, 49)]
    instants += [edge - timedelta(seconds=1), edge + timedelta(seconds=1)]
    with transaction(engine) as session:
        for instant in instants:
            moment = literal(instant, DateTime(timezone=True))
            got = session.execute(select(local_day(moment, clock))).scalar_one()
            assert got == instant.astimezone(ZoneInfo(zone)).date(), instant


def test_settlement_positions_are_the_batches_and_a_party_sees_its_own(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    flows = book_flows(engine)
    settings = settlement_settings(db_url, tmp_path)
    after = datetime(2026, 11, 22, 0, 30, tzinfo=UTC)
    batches = [run_batch(engine, day, "CNY", after, settings) for day in (DAY1, DAY2)]
    expected = sorted(
        (
            (b.business_date, "CNY", str(p.org_id), p.party_name, p.party_kind, p.net, 1)
            for b in batches
            for p in b.positions
        ),
        key=lambda r: (r[0], r[3], r[2]),
    )
    table = run(engine, "settlement_positions")
    assert table.rows == expected
    assert {r[3] for r in table.rows} <= NAMES
    assert sum(r[5] for r in table.rows) == 0
    shop = str(flows.world.shop.org_id)
    own = run(engine, "settlement_positions", flows.world.shop.org_id).rows
    assert own == [r for r in expected if r[2] == shop]
    assert own


def test_risk_decisions_per_rule_and_day(engine: Engine) -> None:
    flows = book_flows(engine)
    w = flows.world
    bind_policy(engine, RiskPolicy(rules=[LimitRule("UTC")]))
    member(engine, w.bank_b, "BANKB", "dave")
    with pytest.raises(PendingReview):
        accrue(engine, w.bank_a, "BANKA", "BANKA-bob", 1_000_001, T0 + timedelta(hours=1))
    with pytest.raises(Declined):
        accrue(engine, w.bank_a, "BANKA", "BANKA-bob", 10_000_001, T0 + timedelta(hours=2))
    with pytest.raises(Declined):
        accrue(engine, w.bank_b, "BANKB", "dave", 10_000_001, T0 + timedelta(days=1))
    table = run(engine, "risk_decisions")
    by_day: dict[date, tuple[int, int, int, int]] = {}
    for row in table.rows:
        assert row[1]  # a rule or a code names every row
        assert row[2] == "accrual"
        assert row[3] + row[4] + row[5] == row[6]
        allowed, refused, review, total = by_day.get(row[0], (0, 0, 0, 0))
        by_day[row[0]] = (allowed + row[3], refused + row[4], review + row[5], total + row[6])
    assert by_day == {DAY1: (0, 1, 1, 2), DAY2: (0, 1, 0, 1)}
    # an issuer sees the decisions on its own operations only
    bank_b = run(engine, "risk_decisions", w.bank_b.org_id).rows
    assert [(r[0], r[4]) for r in bank_b] == [(DAY2, 1)]
    assert run(engine, "risk_decisions", w.shop.org_id).rows == []
    assert run(engine, "risk_decisions", program_code="BANKB").rows == bank_b


def test_a_query_out_of_order_or_too_wide_is_refused() -> None:
    with pytest.raises(InvalidInput):
        ReportQuery(DAY2, DAY1, None)
    with pytest.raises(InvalidInput):
        ReportQuery(DAY1, DAY1 + timedelta(days=4000), None)

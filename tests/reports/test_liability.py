"""The liability roll-forward ties to the ledger: on generated days of real operations (accruals,
reversals, conversions, checkouts and refunds, expiry, adjustments, transfers, debt recovery),
each day's opening plus its flows is its closing, each opening the day before's closing, the last
closing the members' balances, and every flow what the operations said they did."""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from clearing.core.check import check_ledger
from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.kinds import EntryKind
from clearing.core.ledger.expiry import expire_due_lots
from clearing.core.money import value_owed_for_points
from clearing.web.context import Caller
from exchange import service as exchange
from exchange.schemas import RefundCreate
from issuers import accruals, adjustments, debts, programs, transfers
from issuers.schemas import (
    AccrualReversalCreate,
    AdjustmentCreate,
    PointValueCreate,
    ReturnPolicySet,
    TransferCreate,
    TransferRuleSet,
)
from reports.catalogue import REPORTS
from reports.liability import FLOW_COLUMNS, FLOWS, SIGNS, liability, liability_summary
from reports.query import ReportQuery
from tests.factories import (
    T0,
    World,
    accrue,
    authorise,
    balance,
    build_world,
    capture,
    convert,
    key,
    link,
    member,
    program,
)

ZONE = ZoneInfo("Asia/Shanghai")  # the factories' issuers keep the default zone
DAYS = (0, 1, 3, 33, 34)
"""Day offsets from T0 the operations fall on; the program's points expire after a month, so the
last two days can expire points of the first ones."""
MEMBERS = ("m0", "m1", "m2")
TRANSFER_FEE = 2

OPERATIONS = (
    "accrue",
    "reverse",
    "checkout",
    "refund",
    "convert",
    "credit",
    "debit",
    "transfer",
    "expire",
    "value",
)


EVERY_OPERATION = [
    (0, "checkout", 0, 0, 100),  # m0 spends 200 of its 300 points
    (0, "reverse", 0, 0, 153),  # 154 of m0's accrual reversed: 100 taken, 54 spent, so owed
    (1, "accrue", 0, 0, 100),  # ... and recovered from the next accrual
    (1, "refund", 0, 0, 49),  # 50 fen of the checkout refunded
    (1, "convert", 1, 0, 100),
    (1, "transfer", 2, 1, 50),
    (2, "credit", 2, 0, 30),
    (2, "debit", 1, 0, 10),
    (2, "value", 0, 0, 70),
    (3, "expire", 0, 0, 1),  # a month on: what is left of the first day's lots expires
]
"""One example with every kind of operation, debt recovery among them, each one accepted."""


def test_every_entry_kind_has_a_liability_column() -> None:
    assert set(FLOWS) == set(EntryKind)
    assert {column for pair in FLOWS.values() for column in pair} == set(FLOW_COLUMNS)
    assert set(SIGNS) == set(FLOW_COLUMNS)


def test_the_ledger_reports_are_in_the_catalogue() -> None:
    for name in ("liability", "liability_summary", "breakage", "redemption_rate"):
        assert REPORTS[name].per_program
    assert REPORTS["outstanding_by_age"].run is not None


@dataclass
class Model:
    """What the operations said they did, per program, business date and column."""

    flows: dict[tuple[str, date], dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: dict.fromkeys(FLOW_COLUMNS, 0))
    )
    values: dict[str, list[tuple[datetime, Decimal]]] = field(default_factory=dict)

    def add(self, code: str, at: datetime, column: str, points: int) -> None:
        self.flows[(code, at.astimezone(ZONE).date())][column] += points

    def value_before(self, code: str, end: datetime) -> Decimal:
        # before the first version took effect (nothing outstanding yet) the report shows it
        in_force = [value for start, value in self.values[code] if start < end]
        return in_force[-1] if in_force else self.values[code][0][1]


class Book:
    """One example: a fresh program of Bank A (points expire after a month, spent points
    reversed become a debt) and a fresh target program of Bank B, three members in each."""

    serial = itertools.count()

    def __init__(self, engine: Engine, world: World) -> None:
        n = next(self.serial)
        self.engine, self.w = engine, world
        self.code, self.target = f"LIA{n}", f"LIB{n}"
        program(engine, world.bank_a, self.code, "0.005", expiry_months=1)
        program(engine, world.bank_b, self.target, "0.01")
        self.model = Model()
        self.model.values = {
            self.code: [(T0, Decimal("0.005"))],
            self.target: [(T0, Decimal("0.01"))],
        }
        with transaction(engine) as session:
            debts.set_return_policy(
                session, world.bank_a, self.code, ReturnPolicySet(spent_reversal="debt")
            )
            transfers.set_rules(
                session,
                world.bank_a,
                self.code,
                TransferRuleSet(allowed=True, fee_points=TRANSFER_FEE),
                T0,
            )
        for external_id in MEMBERS:
            member(engine, world.bank_a, self.code, external_id)
            member(engine, world.bank_b, self.target, external_id)
            link(engine, world.bank_b, (self.code, external_id), (self.target, external_id))
        self.accruals: list[tuple[uuid.UUID, str, int]] = []
        self.checkouts: list[tuple[uuid.UUID, int]] = []
        self.debt: dict[str, int] = defaultdict(int)
        self.refused: list[str] = []

    def run(self, op: str, who: int, other: int, points: int, at: datetime) -> None:
        """One operation; one the rules refuse (not enough points, say) changes nothing."""
        try:
            getattr(self, op)(MEMBERS[who], MEMBERS[other], points, at)
        except ClearingError as refused:
            self.refused.append(f"{op}: {refused.code}")

    def accrue(self, m: str, _: str, points: int, at: datetime) -> None:
        out = accrue(self.engine, self.w.bank_a, self.code, m, points, now=at)
        self.accruals.append((out.id, m, points))
        self.model.add(self.code, at, "issued", points)
        recovered = min(self.debt[m], points)  # a debt is repaid from the next credit
        self.debt[m] -= recovered
        self.model.add(self.code, at, "debt_recovered", recovered)

    def reverse(self, _m: str, _o: str, points: int, at: datetime) -> None:
        if not self.accruals:
            return
        accrual_id, m, credited = self.accruals[points % len(self.accruals)]
        with transaction(self.engine) as session:
            out, _ = accruals.reverse_accrual(
                session,
                self.w.bank_a,
                accrual_id,
                AccrualReversalCreate(points=1 + points % credited),
                at,
                key(),
            )
        self.debt[m] += out.debt_recorded
        self.model.add(self.code, at, "reversed", out.points_taken)

    def checkout(self, m: str, _: str, points: int, at: datetime) -> None:
        auth = authorise(self.engine, self.w.shop, self.code, m, points, now=at)
        out = capture(self.engine, self.w.shop, auth.id, now=at)
        self.checkouts.append((out.id, out.captured_amount))
        self.model.add(self.code, at, "redeemed", out.captured_points)

    def refund(self, _m: str, _o: str, points: int, at: datetime) -> None:
        if not self.checkouts:
            return
        checkout_id, amount = self.checkouts[points % len(self.checkouts)]
        with transaction(self.engine) as session:
            out, _ = exchange.refund(
                session,
                self.w.shop,
                checkout_id,
                RefundCreate(amount=1 + points % amount),
                at,
                key(),
            )
        self.model.add(self.code, at, "returned", out.points)

    def convert(self, m: str, _: str, points: int, at: datetime) -> None:
        out = convert(self.engine, self.w.bank_a, (self.code, m), (self.target, m), points, at)
        self.model.add(self.code, at, "converted_out", out.points_out)
        self.model.add(self.target, at, "converted_in", out.points_in)

    def _adjust(self, m: str, direction: str, points: int, at: datetime) -> None:
        maker = Caller(self.w.bank_a.org_id, self.w.bank_a.kind, "key-maker")
        checker = Caller(self.w.bank_a.org_id, self.w.bank_a.kind, "key-checker")
        req = AdjustmentCreate(
            external_id=m, direction=direction, points=points, reason_code="goodwill"
        )
        with transaction(self.engine) as session:
            proposed, _ = adjustments.propose(session, maker, self.code, req, at, key())
        with transaction(self.engine) as session:
            adjustments.decide(session, checker, self.code, proposed.id, True, at, key())
        self.model.add(self.code, at, "adjusted", points if direction == "credit" else -points)

    def credit(self, m: str, _: str, points: int, at: datetime) -> None:
        self._adjust(m, "credit", points, at)

    def debit(self, m: str, _: str, points: int, at: datetime) -> None:
        self._adjust(m, "debit", points, at)

    def transfer(self, m: str, other: str, points: int, at: datetime) -> None:
        if m == other:
            return
        with transaction(self.engine) as session:
            transfers.transfer(
                session,
                self.w.bank_a,
                self.code,
                TransferCreate(from_external_id=m, to_external_id=other, points=points),
                at,
                key(),
            )
        self.model.add(self.code, at, "transferred", -TRANSFER_FEE)

    def expire(self, _m: str, _o: str, _p: int, at: datetime) -> None:
        before = self.members_total(at)
        with transaction(self.engine) as session:
            expire_due_lots(session, at)
        self.model.add(self.code, at, "expired", before - self.members_total(at))

    def value(self, _m: str, _o: str, points: int, at: datetime) -> None:
        value = Decimal(points) / 10000
        with transaction(self.engine) as session:
            programs.add_point_value(
                session, self.w.bank_a, self.code, PointValueCreate(value=value), at
            )
        self.model.values[self.code].append((at, value))

    def members_total(self, at: datetime, issuer: Caller | None = None, code: str = "") -> int:
        """What the members of a program hold now, by the members' own statements."""
        issuer, code = issuer or self.w.bank_a, code or self.code
        return sum(balance(self.engine, issuer, code, m, at)[0] for m in MEMBERS)


def check_roll_forward(book: Book, rows: list[dict[str, Any]], code: str) -> None:
    """Opening + flows = closing each day, opening = the day before's closing, flows as done,
    the money figure the closing at the value in force at the day's end, rounded the one way."""
    assert rows[0]["opening"] == 0  # a fresh program
    previous = 0
    for row in rows:
        day = row["business_date"]
        assert row["opening"] == previous
        flows = {c: row[c] for c in FLOW_COLUMNS}
        moved = sum(SIGNS[c] * flows[c] for c in FLOW_COLUMNS)
        assert row["opening"] + moved == row["closing"]
        expected = book.model.flows.get((code, day)) or dict.fromkeys(FLOW_COLUMNS, 0)
        assert flows == expected, day
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=ZONE)
        value = book.model.value_before(code, end)
        assert row["point_value"] == value
        assert row["closing_value"] == value_owed_for_points(row["closing"], value, "CNY")
        previous = row["closing"]


def test_liability_rolls_forward_and_ties_to_the_ledger(engine: Engine) -> None:
    world = build_world(engine)

    @settings(
        max_examples=4,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )
    @example(EVERY_OPERATION)
    @given(
        st.lists(
            st.tuples(
                st.integers(0, len(DAYS) - 1),
                st.sampled_from(OPERATIONS),
                st.integers(0, len(MEMBERS) - 1),
                st.integers(0, len(MEMBERS) - 1),
                st.integers(1, 400),
            ),
            min_size=6,
            max_size=24,
        )
    )
    def check(operations: list[tuple[int, str, int, int, int]]) -> None:
        book = Book(engine, world)
        # Every member starts with points, so that spending operations have something to spend.
        for n, m in enumerate(MEMBERS):
            book.accrue(m, m, 300, T0 + timedelta(seconds=n))
        ordered = sorted(enumerate(operations), key=lambda item: (item[1][0], item[0]))
        for n, (day, op, who, other, points) in ordered:
            book.run(op, who, other, points, T0 + timedelta(days=DAYS[day], minutes=1 + n))
        last = T0 + timedelta(days=DAYS[-1], minutes=len(operations) + 1)
        book.expire("", "", 0, last)  # and a last expiry, so every example has one
        if operations == EVERY_OPERATION:
            assert book.refused == []
            assert all(any(f[c] for f in book.model.flows.values()) for c in FLOW_COLUMNS)
        check_report(book, world, last)

    check()


def check_report(book: Book, world: World, last: datetime) -> None:
    """The daily and the range report of both programs against the operations and the ledger."""
    first_day, last_day = T0.astimezone(ZONE).date(), last.astimezone(ZONE).date()
    held = {
        book.code: book.members_total(last),
        book.target: book.members_total(last, world.bank_b, book.target),
    }
    with transaction(book.engine) as session:
        assert check_ledger(session) == []
        for code, issuer in ((book.code, world.bank_a), (book.target, world.bank_b)):
            query = ReportQuery(first_day - timedelta(days=1), last_day, issuer.org_id, code)
            rows = liability(session, query).records()
            assert [r["business_date"] for r in rows] == [
                first_day - timedelta(days=1 - n) for n in range(len(rows))
            ]
            check_roll_forward(book, rows, code)
            # the last closing is what the members hold in the ledger now
            assert rows[-1]["closing"] == held[code]
            # the range in one row: the same opening, sums and closing
            summary = liability_summary(session, query).records()
            assert len(summary) == 1
            assert summary[0]["opening"] == rows[0]["opening"]
            assert summary[0]["closing"] == rows[-1]["closing"]
            assert summary[0]["closing_value"] == rows[-1]["closing_value"]
            for column in FLOW_COLUMNS:
                assert summary[0][column] == sum(r[column] for r in rows)
            # a later range opens where the earlier one closed
            later = ReportQuery(last_day, last_day, None, code)
            assert liability(session, later).records()[0]["opening"] == rows[-2]["closing"]

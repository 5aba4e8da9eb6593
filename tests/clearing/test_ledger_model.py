"""Model-based check: random operations on the real ledger and on a plain in-memory model of it,
compared after every step."""

from __future__ import annotations

import calendar
import itertools
import shutil
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url

from clearing.core import money
from clearing.core.check import check_ledger
from clearing.core.db import make_engine, transaction
from clearing.core.errors import ClearingError
from clearing.core.ledger import (
    POSITION,
    Ledger,
    LedgerOptions,
    bind_ledger_options,
    expire_due_lots,
    money_asset,
)
from clearing.core.models import Lot
from clearing.core.timeutil import aware
from exchange import service as exchange
from exchange.schemas import CaptureCreate, CheckoutCreate, RefundCreate
from issuers import accruals, members
from issuers.models import Member, Organisation
from issuers.schemas import AccrualCreate
from tests.factories import T0, build_world, member, payment_token

MEMBERS = ("m0", "m1", "m2")
VALUE = Decimal("0.005")  # BANKA's point value: 2 points per fen
FEE = Decimal("0.006")  # the shop's fee rate


def a_year_later(at: datetime) -> datetime:
    """The model's expiry of BANKA's points (12 months): the same day and time next year, or the
    last day of that month when next year's month is shorter (29 February -> 28 February)."""
    last_day = calendar.monthrange(at.year + 1, at.month)[1]
    return at.replace(year=at.year + 1, day=min(at.day, last_day))


@dataclass
class ModelCheckout:
    id: uuid.UUID
    member: str
    points: int
    amount: int
    captured_amount: int = 0
    captured_points: int = 0
    fee: int = 0
    refunded: int = 0
    refunded_points: int = 0
    refunded_fee: int = 0
    epoch: int = 0
    taken: dict[int, int] = field(default_factory=dict)
    given: dict[int, int] = field(default_factory=dict)


class LedgerMachine(RuleBasedStateMachine):
    """The model: balances, held points, lots with expiry, money positions of the parties."""

    checkouts = Bundle("checkouts")
    captured = Bundle("captured")

    def __init__(self) -> None:
        super().__init__()
        url, self.drop = FRESH_DATABASE[0]()
        self.engine: Engine = bind_ledger_options(make_engine(url), OPTIONS[0])
        self.world = build_world(self.engine)
        for m in MEMBERS:
            member(self.engine, self.world.bank_a, "BANKA", m)
        self.now = T0
        self.keys = (f"k{n}" for n in itertools.count())
        # model state
        self.lots: dict[str, list[list[object]]] = defaultdict(
            list
        )  # member -> [[expires_at, remaining]]
        self.held: dict[str, int] = defaultdict(int)
        self.epoch = 0  # bumped when time passes: holds of earlier epochs have expired
        self.position: dict[str, int] = defaultdict(int)  # 'issuer', 'shop', 'platform'

    def teardown(self) -> None:
        self.engine.dispose()
        self.drop()

    def balance(self, m: str) -> int:
        return sum(int(lot[1]) for lot in self.lots[m])  # type: ignore[call-overload]

    def take(self, m: str, points: int) -> dict[int, int]:
        """Take points from the earliest-expiring lots; returns how many from each lot."""
        taken: dict[int, int] = {}
        for index in sorted(range(len(self.lots[m])), key=lambda i: self.lots[m][i][0]):  # type: ignore[arg-type, return-value]
            lot = self.lots[m][index]
            n = min(points, int(lot[1]))  # type: ignore[call-overload]
            if n:
                lot[1] = int(lot[1]) - n  # type: ignore[call-overload]
                taken[index] = n
            points -= n
        assert points == 0
        return taken

    def give_back(self, m: str, taken: dict[int, int], given: dict[int, int], points: int) -> None:
        """Return points to the lots a capture took, latest-expiring first."""
        for index in sorted(taken, key=lambda i: self.lots[m][i][0], reverse=True):  # type: ignore[arg-type, return-value]
            n = min(points, taken[index] - given.get(index, 0))
            if n > 0:
                self.lots[m][index][1] = int(self.lots[m][index][1]) + n  # type: ignore[call-overload]
                given[index] = given.get(index, 0) + n
                points -= n
        assert points == 0

    @rule(m=st.sampled_from(MEMBERS), points=st.integers(1, 5000), funded=st.booleans())
    def accrue(self, m: str, points: int, funded: bool) -> None:
        caller = self.world.shop if funded else self.world.bank_a
        with transaction(self.engine) as session:
            accruals.accrue(
                session,
                caller,
                AccrualCreate(program="BANKA", external_id=m, points=points),
                self.now,
                next(self.keys),
            )
        self.lots[m].append([a_year_later(self.now), points])
        if funded:
            owed = money.value_owed_for_points(points, VALUE, "CNY")
            self.position["shop"] -= owed
            self.position["issuer"] += owed

    @rule(target=checkouts, m=st.sampled_from(MEMBERS), amount=st.integers(1, 3000))
    def authorise(self, m: str, amount: int) -> object:
        points = money.points_for_amount(amount, VALUE, "CNY")
        token = payment_token(self.engine, self.world.bank_a, "BANKA", m, self.now)
        try:
            with transaction(self.engine) as session:
                out, _ = exchange.authorise(
                    session,
                    self.world.shop,
                    CheckoutCreate(
                        program="BANKA",
                        external_id=m,
                        order_total=amount,
                        points_amount=amount,
                        payment_token=token,
                    ),
                    self.now,
                    next(self.keys),
                )
        except ClearingError as error:
            assert error.code == "insufficient_points"
            assert self.balance(m) - self.held[m] < points
            return None
        assert self.balance(m) - self.held[m] >= points
        self.held[m] += points
        return ModelCheckout(out.id, m, points, amount, epoch=self.epoch)

    @rule(target=captured, c=consumes(checkouts), share=st.integers(1, 100))
    def capture(self, c: ModelCheckout | None, share: int) -> object:
        if c is None:
            return None
        amount = max(1, c.amount * share // 100)
        try:
            with transaction(self.engine) as session:
                exchange.capture(
                    session,
                    self.world.shop,
                    c.id,
                    CaptureCreate(amount=amount),
                    self.now,
                    next(self.keys),
                )
        except ClearingError as error:
            assert c.epoch != self.epoch
            assert error.code in ("hold_expired", "hold_not_open")
            return None
        assert c.epoch == self.epoch
        points = c.points if amount == c.amount else money.points_for_amount(amount, VALUE, "CNY")
        self.held[c.member] -= c.points
        c.taken = self.take(c.member, points)
        fee = money.fee(amount, FEE)
        self.position["issuer"] -= amount
        self.position["shop"] += amount - fee
        self.position["platform"] += fee
        c.captured_amount, c.captured_points, c.fee = amount, points, fee
        return c

    @rule(c=consumes(checkouts))
    def void(self, c: ModelCheckout | None) -> None:
        if c is None:
            return
        try:
            with transaction(self.engine) as session:
                exchange.void(session, self.world.shop, c.id, self.now, next(self.keys))
        except ClearingError as error:
            assert c.epoch != self.epoch
            assert error.code in ("hold_expired", "hold_not_open")
            return
        assert c.epoch == self.epoch
        self.held[c.member] -= c.points

    @rule(c=captured, amount=st.integers(1, 3000))
    def refund(self, c: ModelCheckout | None, amount: int) -> None:
        if c is None:
            return
        try:
            with transaction(self.engine) as session:
                exchange.refund(
                    session,
                    self.world.shop,
                    c.id,
                    RefundCreate(amount=amount),
                    self.now,
                    next(self.keys),
                )
        except ClearingError as error:
            assert error.code == "refund_exceeds_capture"
            assert c.refunded + amount > c.captured_amount
            return
        total = c.refunded + amount
        points = (
            money.cumulative_share(c.captured_points, total, c.captured_amount) - c.refunded_points
        )
        fee_back = money.cumulative_share(c.fee, total, c.captured_amount) - c.refunded_fee
        c.refunded, c.refunded_points, c.refunded_fee = (
            total,
            c.refunded_points + points,
            c.refunded_fee + fee_back,
        )
        self.give_back(c.member, c.taken, c.given, points)
        self.position["issuer"] += amount
        self.position["shop"] -= amount - fee_back
        self.position["platform"] -= fee_back

    @rule(days=st.integers(1, 200))
    def time_passes(self, days: int) -> None:
        self.now += timedelta(days=days)
        with transaction(self.engine) as session:
            Ledger(session).release_expired_holds(self.now)
        # holds have a 15-minute life: every earlier hold is now released
        self.held.clear()
        self.epoch += 1
        with transaction(self.engine) as session:
            expire_due_lots(session, self.now)
        for m in MEMBERS:
            for lot in self.lots[m]:
                if lot[0] <= self.now:  # type: ignore[operator]
                    lot[1] = 0

    @invariant()
    def balances_match(self) -> None:
        with transaction(self.engine) as session:
            for m in MEMBERS:
                view = members.member_view(session, self.world.bank_a, "BANKA", m, self.now)
                assert (view.balance, view.held) == (self.balance(m), self.held[m]), m
            ledger = Ledger(session)
            orgs = {o.name: o.id for o in session.execute(select(Organisation)).scalars()}
            for party, name in (("issuer", "Bank A"), ("shop", "Shop"), ("platform", "Platform")):
                account = ledger.account_id(money_asset("CNY"), POSITION, orgs[name])
                assert ledger.balance(account) == self.position[party], party
            assert check_ledger(session) == []


# How the machine gets a fresh, migrated database for each example: set by the test below.
FRESH_DATABASE: list[Callable[[], tuple[str, Callable[[], None]]]] = []
# Which ledger engine posts on PostgreSQL: set by the test below.
OPTIONS: list[LedgerOptions] = [LedgerOptions()]


def _fresh_sqlite(template: Path) -> tuple[str, Callable[[], None]]:
    folder = Path(tempfile.mkdtemp())
    shutil.copyfile(template, folder / "db.sqlite")
    return f"sqlite:///{folder / 'db.sqlite'}", lambda: shutil.rmtree(folder, ignore_errors=True)


def _fresh_postgres(admin_url: str, template: str) -> tuple[str, Callable[[], None]]:
    name = f"clearing_model_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        make_url(admin_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


def _use_backend(request: pytest.FixtureRequest, backend: str) -> None:
    """Point the machine at fresh databases of `backend`, posting with its ledger engine."""
    OPTIONS[:] = [LedgerOptions(engine="python" if backend.endswith("python") else "server")]
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        FRESH_DATABASE[:] = [lambda: _fresh_sqlite(template)]
    else:
        admin_url: str = request.getfixturevalue("pg_admin_url")
        pg_template: str = request.getfixturevalue("pg_template")
        FRESH_DATABASE[:] = [lambda: _fresh_postgres(admin_url, pg_template)]


# The Python engine on PostgreSQL gets fewer examples: SQLite's 40 already run that engine, and
# tests/clearing/test_ledger_differential.py compares it with the server's row by row.
@pytest.mark.parametrize(
    ("backend", "examples"),
    [("sqlite", 40), ("postgresql", 12), ("postgresql-python", 4)],
)
def test_ledger_matches_model(request: pytest.FixtureRequest, backend: str, examples: int) -> None:
    _use_backend(request, backend)
    LedgerMachine.TestCase.settings = settings(
        max_examples=examples,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    LedgerMachine.TestCase().runTest()


# Explicit examples the random runs may miss: lots earned at month and year ends and on
# 29 February, whose expiry a year later falls on a shorter month's last day. In time order.
EDGE_DAYS = [
    datetime(2027, 2, 28, 23, 0, tzinfo=UTC),  # expires 2028-02-28 23:00, the eve of a leap day
    datetime(2027, 12, 31, 23, 59, tzinfo=UTC),  # a year end: expires 2028-12-31 23:59
    datetime(2028, 1, 31, 1, 0, tzinfo=UTC),  # a 31-day month end: expires 2029-01-31 01:00
    datetime(2028, 2, 29, 1, 0, tzinfo=UTC),  # a leap day: expires 2029-02-28 01:00
]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "postgresql-python"])
def test_ledger_matches_model_at_month_ends_and_leap_days(
    request: pytest.FixtureRequest, backend: str
) -> None:
    _use_backend(request, backend)
    machine = LedgerMachine()
    try:
        for day in EDGE_DAYS:
            machine.time_passes((day - machine.now).days)
            machine.now = day  # to the minute, for the model and the ledger alike
            machine.accrue("m0", 100, funded=True)
            machine.balances_match()
        with transaction(machine.engine) as session:
            expiries = session.execute(
                select(Lot.expires_at)
                .join(Member, Member.account_id == Lot.account_id)
                .where(Member.external_id == "m0")
                .order_by(Lot.earned_at)
            ).scalars()
            assert [at and aware(at) for at in expiries] == [lot[0] for lot in machine.lots["m0"]]
        # On the leap day the first lot (2028-02-28 23:00) has just expired.
        assert machine.balance("m0") == 300
        machine.time_passes(364)  # 2029-02-27 01:00: the year-end and January lots are gone
        assert machine.balance("m0") == 100
        machine.balances_match()
        machine.time_passes(1)  # 2029-02-28 01:00: the leap day's lot expires to the minute
        assert machine.balance("m0") == 0
        machine.balances_match()
    finally:
        machine.teardown()

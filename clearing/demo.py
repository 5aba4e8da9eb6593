"""`clearing demo`: one business day of the platform, end to end, on the configured database."""

from __future__ import annotations

import dataclasses
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import clearing.tables  # noqa: F401
from clearing.check import check_ledger
from clearing.config import Settings
from clearing.context import Caller
from clearing.db import make_engine, transaction
from clearing.errors import ClearingError
from clearing.ledger import Ledger
from clearing.migrate import upgrade
from clearing.models import Obligation
from clearing.timeutil import utcnow
from exchange import service as exchange
from exchange.schemas import (
    BilateralRateCreate,
    CaptureCreate,
    CheckoutCreate,
    ConversionCreate,
    QuoteCreate,
    RefundCreate,
)
from issuers import service as issuers
from issuers.models import Member, Organisation, Program
from issuers.schemas import (
    AccrualCreate,
    MemberCreate,
    MemberLinkCreate,
    MerchantTermSet,
    OrganisationCreate,
    ProgramCreate,
)

T = TypeVar("T")
DEMO_DB = "demo.db"


@dataclass
class Parties:
    platform: Caller
    bank_a: Caller
    bank_b: Caller
    carrier: Caller
    market: Caller
    coffee: Caller


def demo_database(settings: Settings) -> str:
    """The demo's database: the configured one, or a fresh SQLite file of its own by default."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        path = Path(url.database).parent / DEMO_DB
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"
    return settings.database_url


def run_demo(settings: Settings, console: Console | None = None) -> int:
    """Run the demo day; returns the process exit code."""
    console = console or Console()
    url = demo_database(settings)
    engine = make_engine(url)
    upgrade(engine)
    zone = ZoneInfo(settings.zone)
    day = (utcnow().astimezone(zone) - timedelta(days=1)).date()
    opening = datetime.combine(day, time(8, 0), zone)
    with transaction(engine) as session:
        if session.execute(select(func.count()).select_from(Organisation)).scalar_one():
            console.print(
                "[red]The demo needs an empty database; point CLEARING_DATABASE_URL at a new one.[/red]"
            )
            return 2
    console.print(
        f"[bold]Points clearing demo[/bold]: business day {day} ({settings.zone}) on {engine.url.render_as_string()}"
    )
    clock = _Clock(opening)
    parties = _onboard(engine, clock)
    _business_day(engine, parties, clock)
    _report(engine, console, clock.now)
    with transaction(engine) as session:
        errors = check_ledger(session)
    if errors:
        for error in errors:
            console.print(f"[red]{error}[/red]")
        return 1
    console.print("ledger check: [green]clean[/green] (every balance recomputed from the postings)")
    code = _settle(engine, dataclasses.replace(settings, database_url=url), day, console)
    engine.dispose()
    return code


def _settle(engine: Engine, settings: Settings, day: date, console: Console) -> int:
    """Settle the demo's business day and say where the files are."""
    from settlement.service import run_batch

    try:
        batch = run_batch(engine, day, "CNY", utcnow(), settings)
    except ClearingError as error:
        console.print(f"[red]settlement of {day}: {error.code}: {error}[/red]")
        return 1
    console.print(
        f"settlement batch [bold]{batch.id}[/bold] {batch.state}: {batch.line_count} obligations,"
        f" {len(batch.positions)} parties, positions sum to"
        f" {sum(p.net for p in batch.positions)}"
    )
    console.print(f"settlement files: {batch.directory}")
    console.print(f"verify them with: clearing settlement verify {batch.directory}")
    return 0


class _Clock:
    """The demo's business-day clock: services take `now`, so the day can be replayed."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def tick(self, minutes: int = 7) -> datetime:
        self.now += timedelta(minutes=minutes)
        return self.now


def _do(engine: Engine, action: Callable[[Session], T]) -> T:
    with transaction(engine) as session:
        return action(session)


def _key() -> str:
    return uuid.uuid4().hex


def _onboard(engine: Engine, clock: _Clock) -> Parties:
    now = clock.now

    def org(kind: str, name: str, **rates: Decimal) -> Caller:
        created = _do(
            engine,
            lambda s: issuers.create_organisation(
                s,
                OrganisationCreate(kind=kind, name=name, currency="CNY", **rates),
                now,
            ),
        )
        return Caller(created.id, created.kind)

    p = Parties(
        platform=org("platform", "Points Clearing Platform", conversion_fee_rate=Decimal("0.01")),
        bank_a=org("issuer", "Huaxia Card Bank"),
        bank_b=org("issuer", "Jiangnan Merchants Bank"),
        carrier=org("issuer", "Pearl River Mobile"),
        market=org("merchant", "Lotus Supermarket", default_fee_rate=Decimal("0.006")),
        coffee=org("merchant", "Harbour Coffee", default_fee_rate=Decimal("0.008")),
    )
    programs = (
        (p.bank_a, "HXCARD", "Huaxia Card Rewards", "0.005", 12),
        (p.bank_b, "JNBONUS", "Jiangnan Bonus Points", "0.01", 24),
        (p.carrier, "PRMPTS", "Pearl River Mobile Points", "0.002", 12),
    )
    with transaction(engine) as session:
        for issuer, code, name, value, months in programs:
            issuers.create_program(
                session,
                issuer,
                ProgramCreate(
                    code=code, name=name, point_value=Decimal(value), expiry_months=months
                ),
                now,
            )
    _do(
        engine,
        lambda s: issuers.set_merchant_term(
            s, p.coffee.org_id, MerchantTermSet(program="JNBONUS", fee_rate=Decimal("0.01"))
        ),
    )
    members = {
        (p.bank_a, "HXCARD"): ["HX-0001", "HX-0002", "HX-0003"],
        (p.bank_b, "JNBONUS"): ["JN-7001", "JN-7002"],
        (p.carrier, "PRMPTS"): ["13800138000", "13900139000"],
    }
    with transaction(engine) as session:
        for (issuer, code), externals in members.items():
            for external in externals:
                issuers.create_member(
                    session, issuer, code, MemberCreate(external_id=external), now
                )
    return p


def _business_day(engine: Engine, p: Parties, clock: _Clock) -> None:
    def accrue(caller: Caller, code: str, external: str, points: int) -> None:
        _do(
            engine,
            lambda s: issuers.accrue(
                s,
                caller,
                AccrualCreate(program=code, external_id=external, points=points),
                clock.tick(),
                _key(),
            ),
        )

    # Card spend and phone bills earn points; the supermarket funds points for its shoppers.
    accrue(p.bank_a, "HXCARD", "HX-0001", 120_000)
    accrue(p.bank_a, "HXCARD", "HX-0002", 45_000)
    accrue(p.bank_a, "HXCARD", "HX-0003", 8_000)
    accrue(p.bank_b, "JNBONUS", "JN-7001", 30_000)
    accrue(p.carrier, "PRMPTS", "13800138000", 60_000)
    accrue(p.carrier, "PRMPTS", "13900139000", 25_000)
    accrue(p.market, "HXCARD", "HX-0002", 3_000)
    accrue(p.market, "JNBONUS", "JN-7002", 1_250)

    # Conversions: bank card points into mobile points (value-based), mobile into bank (block rate).
    def link(target: Caller, source: tuple[str, str], dest: tuple[str, str]) -> None:
        _do(
            engine,
            lambda s: issuers.link_members(
                s,
                target,
                MemberLinkCreate(
                    source_program=source[0],
                    source_external_id=source[1],
                    target_program=dest[0],
                    target_external_id=dest[1],
                ),
                clock.tick(1),
            ),
        )

    def convert(
        issuer: Caller, source: tuple[str, str], dest: tuple[str, str], points: int
    ) -> None:
        def run(s: Session) -> None:
            quote = exchange.quote_conversion(
                s,
                issuer,
                QuoteCreate(
                    source_program=source[0],
                    source_external_id=source[1],
                    target_program=dest[0],
                    target_external_id=dest[1],
                    points=points,
                ),
                clock.tick(),
            )
            exchange.convert(s, issuer, ConversionCreate(quote_id=quote.id), clock.now, _key())

        _do(engine, run)

    link(p.carrier, ("HXCARD", "HX-0001"), ("PRMPTS", "13800138000"))
    convert(p.bank_a, ("HXCARD", "HX-0001"), ("PRMPTS", "13800138000"), 40_000)
    link(p.bank_b, ("PRMPTS", "13900139000"), ("JNBONUS", "JN-7001"))
    _do(
        engine,
        lambda s: exchange.set_bilateral_rate(
            s,
            p.carrier,
            BilateralRateCreate(
                source_program="PRMPTS",
                target_program="JNBONUS",
                source_block=5_000,
                target_block=900,
                min_source_points=10_000,
            ),
            clock.tick(),
        ),
    )
    convert(p.carrier, ("PRMPTS", "13900139000"), ("JNBONUS", "JN-7001"), 20_000)

    # Checkouts: full capture, points plus cash with partial capture, a void, a refund.
    def authorise(
        merchant: Caller, code: str, external: str, total: int, with_points: int
    ) -> uuid.UUID:
        out, _ = _do(
            engine,
            lambda s: exchange.authorise(
                s,
                merchant,
                CheckoutCreate(
                    program=code, external_id=external, order_total=total, points_amount=with_points
                ),
                clock.tick(),
                _key(),
            ),
        )
        return out.id

    def capture(merchant: Caller, checkout: uuid.UUID, amount: int | None = None) -> None:
        _do(
            engine,
            lambda s: exchange.capture(
                s, merchant, checkout, CaptureCreate(amount=amount), clock.tick(2), _key()
            ),
        )

    groceries = authorise(p.market, "HXCARD", "HX-0001", 25_800, 25_800)
    capture(p.market, groceries)
    coffee = authorise(p.coffee, "JNBONUS", "JN-7001", 3_600, 2_000)
    capture(p.coffee, coffee, 1_800)
    cancelled = authorise(p.market, "PRMPTS", "13800138000", 9_900, 9_900)
    _do(engine, lambda s: exchange.void(s, p.market, cancelled, clock.tick(), _key()))
    phone = authorise(p.market, "PRMPTS", "13800138000", 15_000, 12_000)
    capture(p.market, phone)
    _do(
        engine,
        lambda s: exchange.refund(
            s, p.market, phone, RefundCreate(amount=4_000), clock.tick(30), _key()
        ),
    )
    latte = authorise(p.coffee, "HXCARD", "HX-0002", 3_200, 3_200)
    capture(p.coffee, latte)


def _report(engine: Engine, console: Console, now: datetime) -> None:
    with transaction(engine) as session:
        names = {o.id: o.name for o in session.execute(select(Organisation)).scalars()}
        members = session.execute(
            select(Program.code, Member.external_id, Member.account_id)
            .join(Program, Program.id == Member.program_id)
            .order_by(Program.code, Member.external_id)
        ).all()
        ledger = Ledger(session)
        balances = Table(title="Member points at end of day")
        for column in ("program", "member", "balance", "held", "available"):
            balances.add_column(
                column, justify="right" if column in ("balance", "held", "available") else "left"
            )
        for code, external, account_id in members:
            balance, held = ledger.member_balance(account_id, now)
            balances.add_row(code, external, f"{balance:,}", f"{held:,}", f"{balance - held:,}")
        console.print(balances)

        pairs: dict[tuple[uuid.UUID, uuid.UUID, str], int] = defaultdict(int)
        net: dict[uuid.UUID, int] = defaultdict(int)
        for ob in session.execute(select(Obligation)).scalars():
            pairs[(ob.payer_org_id, ob.payee_org_id, ob.event_type)] += ob.amount
            net[ob.payer_org_id] -= ob.amount
            net[ob.payee_org_id] += ob.amount
        gross = Table(title="Obligations between parties (CNY)")
        for column in ("payer", "payee", "event", "amount"):
            gross.add_column(column, justify="right" if column == "amount" else "left")
        for (payer, payee, event), amount in sorted(
            pairs.items(), key=lambda kv: (names[kv[0][0]], names[kv[0][1]], kv[0][2])
        ):
            gross.add_row(names[payer], names[payee], event, _money(amount))
        console.print(gross)
        positions = Table(title="Net position per party (+: the platform pays the party)")
        positions.add_column("party")
        positions.add_column("net CNY", justify="right")
        for org_id, amount in sorted(net.items(), key=lambda kv: names[kv[0]]):
            positions.add_row(names[org_id], _money(amount))
        positions.add_row("[bold]sum[/bold]", f"[bold]{_money(sum(net.values()))}[/bold]")
        console.print(positions)


def _money(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100:,}.{abs(minor) % 100:02d}"

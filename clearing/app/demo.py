"""`clearing demo`: one business day of the platform, end to end, on the configured database."""

from __future__ import annotations

import csv
import shlex
import shutil
import uuid
from collections import defaultdict
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

import clearing.app.tables  # noqa: F401
from clearing.app.factory import create_app
from clearing.app.migrate import current_revision, ensure_current, upgrade
from clearing.app.policy import open_engine
from clearing.core.check import check_ledger
from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.errors import Conflict
from clearing.core.ledger import Ledger
from clearing.core.models import Obligation
from clearing.core.timeutil import business_date_of, day_end, utcnow
from clearing.sdk.client import ApiError, PartnerClient
from issuers import organisations
from issuers.keys import ApiKeyCreate, add_key
from issuers.models import Member, Organisation, Program
from issuers.schemas import OrganisationCreate

DEMO_FOLDER = "demo"


class DatabaseNotEmpty(Conflict):
    code = "database_not_empty"


def prepare_demo(environ: Mapping[str, str], program: str = "clearing") -> tuple[Settings, str]:
    """The demo's settings, and the command line that points the other commands at what it makes.

    With CLEARING_DATABASE_URL set, the demo runs there (it must be empty) with every other
    setting as configured, and the other commands find it through the same environment.
    Otherwise it runs in a folder of its own, `<CLEARING_VAR_DIR>/demo` (database, settlement
    files, platform key), emptied here at every run, so that it never mixes its made-up parties
    with the operator's `var/clearing.db`; `CLEARING_VAR_DIR=var/demo` then shows it to any
    command. `program` is how the user ran `clearing`, so the printed commands paste back as is.
    """
    if environ.get("CLEARING_DATABASE_URL"):
        return Settings.from_env(environ), program
    folder = Path(environ.get("CLEARING_VAR_DIR", "var")) / DEMO_FOLDER
    settings = Settings.from_env({**environ, "CLEARING_VAR_DIR": str(folder)})
    database = make_url(settings.database_url).database
    assert database is not None
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    # Only the demo's own files: a CLEARING_SETTLEMENT_DIR set elsewhere is left alone.
    if settings.settlement_dir.resolve().is_relative_to(folder.resolve()):
        shutil.rmtree(settings.settlement_dir, ignore_errors=True)
    return settings, f"CLEARING_VAR_DIR={shlex.quote(str(folder))} {program}"


def run_demo(settings: Settings, console: Console | None = None, command: str = "clearing") -> int:
    """Run the demo day through the signed API on an empty database; returns the exit code.

    `command` prefixes the commands it prints for exploring the result (see `prepare_demo`).
    """
    console = console or Console(soft_wrap=True, highlight=False)
    engine = open_engine(settings)
    try:
        _prepare_database(engine)
        return _run(engine, settings, console, command)
    finally:
        engine.dispose()


def _prepare_database(engine: Engine) -> None:
    """Migrate a database that was never migrated; refuse one that holds anything already."""
    if current_revision(engine) is None:
        upgrade(engine)
    else:
        ensure_current(engine)
    with transaction(engine) as session:
        if session.execute(select(func.count()).select_from(Organisation)).scalar_one():
            raise DatabaseNotEmpty(
                f"the demo needs an empty database and {engine.url.render_as_string()} is not;"
                " unset CLEARING_DATABASE_URL (the demo then uses a folder of its own) or point"
                " it at a new database"
            )


def _run(engine: Engine, settings: Settings, console: Console, command: str) -> int:
    first_day = business_date_of(utcnow(), settings.zone, settings.cutoff)
    console.print(
        f"[bold]Points clearing demo[/bold]: business day {first_day} ({settings.zone}),"
        f" database {escape(engine.url.render_as_string())}, every call signed through the"
        " partner API"
    )
    app = create_app(settings)
    try:
        with _Parties(app, engine) as parties:
            _onboard(parties)
            _tiers(parties)
            _business_day(parties)
            _earning(parties, console)
            _mall(parties, console)
            _risk_controls(parties, console)
    finally:
        app.state.engine.dispose()
    last_day = business_date_of(utcnow(), settings.zone, settings.cutoff)
    _report(engine, console, utcnow())
    with transaction(engine) as session:
        errors = check_ledger(session)
    if errors:
        for error in errors:
            typer.echo(error, err=True)
        return 1
    console.print("ledger check: [green]clean[/green] (every balance recomputed from the postings)")
    day = first_day
    while day <= last_day:
        _settle(engine, settings, day, console)
        day += timedelta(days=1)
    _supplier_lines(engine, settings, first_day, last_day, console)
    console.print("Explore what the demo made (its database, settlement files and keys):")
    for args in (
        "ledger check",
        "settlement status",
        f"settlement verify {shlex.quote(str(settings.settlement_dir))}",
        "serve",
    ):
        console.print(f"  {command} {args}", markup=False)
    return 0


def _settle(engine: Engine, settings: Settings, day: date, console: Console) -> None:
    """Settle a business day as if its cut-off had just passed, and say where the files are."""
    from settlement.service import run_batch

    end_of_day = day_end(day, settings.zone, settings.cutoff) + timedelta(seconds=1)
    batch = run_batch(engine, day, "CNY", end_of_day, settings)
    console.print(
        f"settlement batch [bold]{batch.id}[/bold] {batch.state} on the"
        f" {settings.settlement_engine} engine (end of day simulated):"
        f" {batch.line_count} obligations, {len(batch.positions)} parties, positions sum to"
        f" {sum(p.net for p in batch.positions)}"
    )
    console.print(f"settlement files: {batch.directory}", markup=False)


class _Parties:
    """One signed-API client per organisation, each with its own Ed25519 key, over the app."""

    def __init__(self, app: FastAPI, engine: Engine) -> None:
        self.app = app
        self.engine = engine
        self.clients: dict[str, PartnerClient] = {}
        self.ids: dict[str, str] = {}

    def __enter__(self) -> _Parties:
        # The operator's own organisation and first key come from the command line's path
        # (`clearing org create`, `clearing key add`); everything after goes through the API.
        with transaction(self.engine) as session:
            org = organisations.create_organisation(
                session,
                OrganisationCreate(
                    kind="platform",
                    name="Points Clearing Platform",
                    currency="CNY",
                    conversion_fee_rate=Decimal("0.01"),
                ),
                utcnow(),
            )
            private = Ed25519PrivateKey.generate()
            key = add_key(session, org.id, ApiKeyCreate(public_key=_public_pem(private)), utcnow())
        self.ids["platform"] = str(org.id)
        self.clients["platform"] = self._client(key.keyid, private)
        return self

    def __exit__(self, *_exc: object) -> None:
        for client in self.clients.values():
            client.close()

    def _client(self, keyid: str, private: Ed25519PrivateKey) -> PartnerClient:
        transport = httpx.ASGITransport(app=self.app)
        return PartnerClient("http://clearing.demo", keyid, private, transport=transport)

    def register(self, name: str, kind: str, display: str, **rates: str) -> PartnerClient:
        """The operator registers an organisation and its public key; it keeps its private key."""
        operator = self.clients["platform"]
        org = operator.request(
            "POST", "/v1/organizations", {"kind": kind, "name": display, "currency": "CNY", **rates}
        )
        private = Ed25519PrivateKey.generate()
        key = operator.request(
            "POST", f"/v1/organizations/{org['id']}/keys", {"public_key": _public_pem(private)}
        )
        self.ids[name] = org["id"]
        self.clients[name] = self._client(key["keyid"], private)
        return self.clients[name]

    def __getitem__(self, name: str) -> PartnerClient:
        return self.clients[name]


def _public_pem(private: Ed25519PrivateKey) -> str:
    return (
        private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    )


def _onboard(p: _Parties) -> None:
    bank_a = p.register("bank_a", "issuer", "Huaxia Card Bank")
    bank_b = p.register("bank_b", "issuer", "Jiangnan Merchants Bank")
    carrier = p.register("carrier", "issuer", "Pearl River Mobile")
    p.register("market", "merchant", "Lotus Supermarket", default_fee_rate="0.006")
    p.register("coffee", "merchant", "Harbour Coffee", default_fee_rate="0.008")
    for client, code, name, value, months in (
        (bank_a, "HXCARD", "Huaxia Card Rewards", "0.005", 12),
        (bank_b, "JNBONUS", "Jiangnan Bonus Points", "0.01", 24),
        (carrier, "PRMPTS", "Pearl River Mobile Points", "0.002", 12),
    ):
        client.request(
            "POST",
            "/v1/programs",
            {"code": code, "name": name, "point_value": value, "expiry_months": months},
        )
    p["platform"].request(
        "PATCH",
        f"/v1/organizations/{p.ids['coffee']}",
        {"terms": [{"program": "JNBONUS", "fee_rate": "0.01"}]},
    )
    _agree(p)
    for client, code, externals in (
        (bank_a, "HXCARD", ["HX-0001", "HX-0002", "HX-0003"]),
        (bank_b, "JNBONUS", ["JN-7001", "JN-7002"]),
        (carrier, "PRMPTS", ["13800138000", "13900139000"]),
    ):
        for external in externals:
            client.request("POST", f"/v1/programs/{code}/members", {"external_id": external})


def _agree(p: _Parties) -> None:
    """The agreements the risk controls ask for: the supermarket takes and funds every
    program's points, the coffee shop takes the two banks' (not the carrier's); the banks
    exchange points with the carrier, the carrier with the second bank."""
    for issuer, code, merchants in (
        ("bank_a", "HXCARD", ("market", "coffee")),
        ("bank_b", "JNBONUS", ("market", "coffee")),
        ("carrier", "PRMPTS", ("market",)),
    ):
        for merchant in merchants:
            proposal = p[merchant].request(
                "POST", "/v1/agreements", {"program": code, "accept": True, "fund": True}
            )
            p[issuer].request("POST", f"/v1/agreements/{proposal['id']}/approve", {})
    for one, other in (("bank_a", "carrier"), ("carrier", "bank_b")):
        for issuer, counterparty in ((one, other), (other, one)):
            p[issuer].request("PUT", f"/v1/interchange/{p.ids[counterparty]}", {"enabled": True})


def _business_day(p: _Parties) -> None:
    # Card spend and phone bills earn points; the supermarket funds points for its shoppers.
    p["bank_a"].accrue("HXCARD", "HX-0001", 120_000, reference="card-spend")
    p["bank_a"].accrue("HXCARD", "HX-0002", 45_000)
    p["bank_a"].accrue("HXCARD", "HX-0003", 8_000)
    p["bank_b"].accrue("JNBONUS", "JN-7001", 30_000)
    p["carrier"].accrue("PRMPTS", "13800138000", 60_000, reference="phone-bill")
    p["carrier"].accrue("PRMPTS", "13900139000", 25_000)
    p["market"].accrue("HXCARD", "HX-0002", 3_000, reference="basket-8841")
    p["market"].accrue("JNBONUS", "JN-7002", 1_250)

    # Conversions: bank card points into mobile points (value-based), mobile into bank (block rate).
    def link(
        target: str, source_issuer: str, source: tuple[str, str], dest: tuple[str, str]
    ) -> None:
        # The member's consent: the source issuer mints a link code, the target issuer uses it.
        token = p[source_issuer].link_token(source[0], source[1])["token"]
        p[target].link(source[0], source[1], dest[0], dest[1], token)

    def convert(issuer: str, source: tuple[str, str], dest: tuple[str, str], points: int) -> None:
        quote = p[issuer].quote(source[0], source[1], dest[0], dest[1], points)
        p[issuer].convert(quote["id"])

    link("carrier", "bank_a", ("HXCARD", "HX-0001"), ("PRMPTS", "13800138000"))
    convert("bank_a", ("HXCARD", "HX-0001"), ("PRMPTS", "13800138000"), 40_000)
    link("bank_b", "carrier", ("PRMPTS", "13900139000"), ("JNBONUS", "JN-7001"))
    p["carrier"].request(
        "POST",
        "/v1/bilateral-rates",
        {
            "source_program": "PRMPTS",
            "target_program": "JNBONUS",
            "source_block": 5_000,
            "target_block": 900,
            "min_source_points": 10_000,
        },
    )
    convert("carrier", ("PRMPTS", "13900139000"), ("JNBONUS", "JN-7001"), 20_000)

    # Checkouts: full capture, points plus cash with partial capture, a void, a refund. Each
    # is paid with a one-time payment code the member's issuer mints (shown in its app).
    issuer_of = {"HXCARD": "bank_a", "JNBONUS": "bank_b", "PRMPTS": "carrier"}

    def pay(merchant: str, program: str, member: str, total: int, points: int) -> str:
        token = p[issuer_of[program]].payment_token(program, member)["token"]
        out = p[merchant].authorise(program, member, total, points, payment_token=token)
        return str(out["id"])

    market, coffee = p["market"], p["coffee"]
    market.capture(pay("market", "HXCARD", "HX-0001", 25_800, 25_800))
    coffee.capture(pay("coffee", "JNBONUS", "JN-7001", 3_600, 2_000), 1_800)
    market.void(pay("market", "PRMPTS", "13800138000", 9_900, 9_900))
    phone = pay("market", "PRMPTS", "13800138000", 15_000, 12_000)
    market.capture(phone)
    market.refund(phone, 4_000)
    coffee.capture(pay("coffee", "HXCARD", "HX-0002", 3_200, 3_200))


def _tiers(p: _Parties) -> None:
    """The card bank's tiers: a member whose 12-month points reach 100,000 is gold at once."""
    for tier in (
        {"code": "standard", "name": "Standard", "rank": 0},
        {
            "code": "gold",
            "name": "Gold",
            "rank": 1,
            "multiplier": "2",
            "qualify_points": 100_000,
            "privileges": ["airport lounge"],
        },
    ):
        p["bank_a"].request("POST", "/v1/programs/HXCARD/tiers", tier)


def _earning(p: _Parties, console: Console) -> None:
    """Points earned by rules: the bank publishes its earning rules and a member-day campaign,
    then posts a card purchase; the platform works out the points and says how."""
    bank = p["bank_a"]
    bank.request(
        "POST",
        "/v1/programs/HXCARD/earning-rules",
        {
            "spend_rules": [
                {"code": "card-spend", "rate": "1"},
                {"code": "travel", "rate": "2", "product_line": "travel"},
            ],
            "behaviours": [{"event": "sign_up", "points": 100, "frequency": "once"}],
            "month_cap": 200_000,
        },
    )
    # Member day is today in the bank's zone (and tomorrow, so that a demo run across
    # midnight still meets it).
    today = datetime.now(ZoneInfo("Asia/Shanghai"))
    bank.request(
        "POST",
        "/v1/programs/HXCARD/campaigns",
        {
            "code": "member-day",
            "name": "Member day: double points",
            "kind": "multiplier",
            "starts_at": (today - timedelta(days=1)).isoformat(),
            "days_of_month": sorted({today.day, (today + timedelta(days=1)).day}),
            "multiplier": "2",
            "budget": 5_000_000,
        },
    )
    event = bank.request(
        "POST",
        "/v1/programs/HXCARD/events",
        {
            "external_id": "HX-0001",
            "kind": "purchase",
            "spend": 58_800,
            "currency": "CNY",
            "product_line": "travel",
            "reference": "card-txn-5521",
        },
    )
    steps = "; ".join(
        f"{step['step']} {step['ref'] or ''} {step['points']:+,}".replace("  ", " ")
        for step in event["earnings"][0]["explanation"]
    )
    tier = bank.member("HXCARD", "HX-0001")["tier"]["code"]
    console.print(
        f"earning: HX-0001 ({tier}) spent 588.00 CNY on travel on member day:"
        f" [bold]{event['points']:,} points[/bold] ({escape(steps)})"
    )


def _mall(p: _Parties, console: Console) -> None:
    """The carrier's points mall sells a coffee voucher the coffee shop supplies: the carrier
    agreed to pay it 80% of the voucher's value; a member redeems one and the shop takes the
    code at its till."""
    coffee, carrier = p["coffee"], p["carrier"]
    proposal = coffee.request(
        "POST",
        "/v1/agreements",
        {
            "program": "PRMPTS",
            "accept": False,
            "fund": False,
            "supply": True,
            "wholesale_rate": "0.8",
        },
    )
    carrier.request("POST", f"/v1/agreements/{proposal['id']}/approve", {})
    item = coffee.request(
        "POST",
        "/v1/mall/items",
        {
            "sku": "LATTE-G",
            "title": "Harbour Coffee grande latte",
            "fulfilment": "voucher",
            "value_amount": 3_200,
            "stock": 500,
            "member_limit": 2,
            "limit_period": "month",
        },
    )
    coffee.request(
        "POST", f"/v1/mall/items/{item['id']}/offers", {"program": "PRMPTS", "points": 12_000}
    )
    coffee.request("PATCH", f"/v1/mall/items/{item['id']}", {"status": "on_sale"})
    mall = carrier.request(
        "GET", "/v1/programs/PRMPTS/mall/items", params={"external_id": "13800138000"}
    )
    chosen = next(i for i in mall["items"] if i["id"] == item["id"])
    order = carrier.request(
        "POST",
        "/v1/programs/PRMPTS/mall/orders",
        {
            "external_id": "13800138000",
            "item_id": chosen["id"],
            "expected_points": chosen["points"],
        },
    )
    code = order["vouchers"][0]["code"]
    redeemed = coffee.request("POST", "/v1/mall/vouchers/redeem", {"code": code})
    console.print(
        f"mall: 13800138000 redeemed a {escape(chosen['title'])} for"
        f" [bold]{order['points']:,} PRMPTS points[/bold]; voucher {redeemed['code_hint']} taken"
        f" at the till; Pearl River Mobile owes Harbour Coffee {_money(order['wholesale_amount'])}"
        " CNY (mall_redemption)"
    )


def _supplier_lines(
    engine: Engine, settings: Settings, first: date, last: date, console: Console
) -> None:
    """The supplier's own statement of the settled days shows what the mall owes it."""
    with transaction(engine) as session:
        coffee = session.execute(
            select(Organisation.id).where(Organisation.name == "Harbour Coffee")
        ).scalar_one()
    day = first
    while day <= last:
        statement = (
            settings.settlement_dir / "CNY" / day.isoformat() / str(coffee) / "statement.csv"
        )
        text = statement.read_text() if statement.exists() else ""
        for fields in csv.reader(text.splitlines()):
            # a detail line (settlement/FILES.md): D, no, reference, original, event type,
            # counterparty, program, points, point value, version, gross, ...
            if fields[0] == "D" and fields[4] == "mall_redemption":
                console.print(
                    f"settlement {day}: Harbour Coffee's statement.csv has a mall_redemption"
                    f" line: {int(fields[7]):,} {fields[6]} points, gross {fields[10]} CNY",
                    markup=False,
                )
        day += timedelta(days=1)


def _risk_controls(p: _Parties, console: Console) -> None:
    """The risk controls at work: a checkout without an agreement is declined, an accrual above
    the review threshold waits for the operator, who approves it, and a rate that would let
    conversions create points is refused."""
    token = p["carrier"].payment_token("PRMPTS", "13900139000")["token"]
    try:
        p["coffee"].authorise("PRMPTS", "13900139000", 2_000, 2_000, payment_token=token)
    except ApiError as declined:
        console.print(
            f"risk: declined [bold]{declined.code}[/bold] (Harbour Coffee has no agreement with"
            f" Pearl River Mobile): {escape(str(declined.problem.get('detail', '')))}"
        )
    # A year-end bonus above the default review threshold (1,000,000 points) waits; the bank's
    # retry of the same request gets the result once the operator has approved it.
    bonus = {"program": "HXCARD", "external_id": "HX-0003", "points": 1_500_000}
    pending = p["bank_a"].request("POST", "/v1/accruals", bonus, idempotency_key="bonus-2026")
    console.print(
        f"risk: accrual of 1,500,000 points [bold]{pending['status']}[/bold]"
        f" ({escape(str(pending['reason']))})"
    )
    p["platform"].request("POST", f"/v1/risk/reviews/{pending['review_id']}/approve", {})
    done = p["bank_a"].request("POST", "/v1/accruals", bonus, idempotency_key="bonus-2026")
    console.print(
        f"risk: review approved by the operator; the bank's retry gets the accrual:"
        f" {done['points']:,} points to {done['external_id']}"
    )
    p["bank_b"].request("PUT", f"/v1/interchange/{p.ids['bank_a']}", {"enabled": True})
    try:
        p["bank_a"].request(
            "POST",
            "/v1/bilateral-rates",
            {
                "source_program": "HXCARD",
                "target_program": "JNBONUS",
                "source_block": 1_000,
                "target_block": 1_000,
                "min_source_points": 1_000,
            },
        )
    except ApiError as refused:
        console.print(
            f"risk: rate refused [bold]{refused.code}[/bold]:"
            f" {escape(str(refused.problem.get('detail', '')))}"
        )


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

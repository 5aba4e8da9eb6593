"""Plain factory functions for tests: a small world of parties, programs and members."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine

from clearing.core.db import transaction
from clearing.web.context import Caller
from exchange import service as exchange
from exchange.schemas import (
    CaptureCreate,
    CheckoutCreate,
    CheckoutOut,
    ConversionCreate,
    ConversionOut,
    QuoteCreate,
)
from issuers import accruals, agreements, members, organisations, programs, tokens
from issuers.schemas import (
    AccrualCreate,
    AccrualOut,
    AgreementCreate,
    InterchangeSet,
    LinkTokenCreate,
    MemberCreate,
    MemberLinkCreate,
    MerchantTermSet,
    MerchantTrustSet,
    OrganisationCreate,
    PaymentTokenCreate,
    ProgramCreate,
)

T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
TOKEN_SECRET = b"tests: the secret member tokens are derived under"
MINT = "mint"
"""`authorise(..., token=MINT)`: the program's issuer mints a payment token for the checkout."""


def key() -> str:
    """A fresh idempotency key."""
    return uuid.uuid4().hex


@dataclass
class World:
    """Parties of a test: the platform, three issuers with a program each, two merchants."""

    platform: Caller
    bank_a: Caller
    bank_b: Caller
    carrier: Caller
    shop: Caller
    cafe: Caller
    programs: dict[str, Caller] = field(default_factory=dict)


def org(
    engine: Engine,
    kind: str,
    name: str,
    currency: str = "CNY",
    now: datetime = T0,
    **rates: Decimal,
) -> Caller:
    """Register an organisation."""
    with transaction(engine) as session:
        created = organisations.create_organisation(
            session,
            OrganisationCreate(kind=kind, name=name, currency=currency, **rates),
            now,
        )
        return Caller(created.id, created.kind)


def program(
    engine: Engine,
    issuer: Caller,
    code: str,
    value: str,
    expiry_months: int | None = None,
    now: datetime = T0,
) -> str:
    """Register a program of `issuer`."""
    with transaction(engine) as session:
        programs.create_program(
            session,
            issuer,
            ProgramCreate(
                code=code, name=code, point_value=Decimal(value), expiry_months=expiry_months
            ),
            now,
        )
    return code


def member(engine: Engine, issuer: Caller, code: str, external_id: str, now: datetime = T0) -> str:
    """Enrol a member."""
    with transaction(engine) as session:
        members.create_member(session, issuer, code, MemberCreate(external_id=external_id), now)
    return external_id


def accrue(
    engine: Engine,
    caller: Caller,
    code: str,
    external_id: str,
    points: int,
    now: datetime = T0,
    idem: str | None = None,
) -> AccrualOut:
    """Credit points."""
    with transaction(engine) as session:
        out, _ = accruals.accrue(
            session,
            caller,
            AccrualCreate(program=code, external_id=external_id, points=points),
            now,
            idem or key(),
        )
        return out


def balance(
    engine: Engine, issuer: Caller, code: str, external_id: str, now: datetime = T0
) -> tuple[int, int]:
    """Balance and available points of a member."""
    with transaction(engine) as session:
        view = members.member_view(session, issuer, code, external_id, now)
        return view.balance, view.available


def authorise(
    engine: Engine,
    merchant: Caller,
    code: str,
    external_id: str,
    amount: int,
    now: datetime = T0,
    total: int | None = None,
    token: str | None = MINT,
) -> CheckoutOut:
    """Authorise a checkout paying `amount` minor units with points, by default with a payment
    token the program's issuer mints for the member just before."""
    if token == MINT:
        token = payment_token(engine, issuer_of(engine, code), code, external_id, now)
    with transaction(engine) as session:
        out, _ = exchange.authorise(
            session,
            merchant,
            CheckoutCreate(
                program=code,
                external_id=external_id,
                order_total=total or amount,
                points_amount=amount,
                payment_token=token,
            ),
            now,
            key(),
        )
        return out


def issuer_of(engine: Engine, code: str) -> Caller:
    """The issuer of a program."""
    with transaction(engine) as session:
        return Caller(programs.program_by_code(session, code).issuer_id, "issuer")


def payment_token(
    engine: Engine,
    issuer: Caller,
    code: str,
    external_id: str,
    now: datetime = T0,
    ttl_seconds: int | None = None,
    max_amount: int | None = None,
) -> str:
    """The issuer mints a payment token for its member."""
    with transaction(engine) as session:
        out, _ = tokens.mint_payment_token(
            session,
            issuer,
            code,
            external_id,
            PaymentTokenCreate(ttl_seconds=ttl_seconds, max_amount=max_amount),
            now,
            key(),
            TOKEN_SECRET,
        )
        return out.token


def link_token(
    engine: Engine, issuer: Caller, code: str, external_id: str, now: datetime = T0
) -> str:
    """The source issuer mints a link token for its member."""
    with transaction(engine) as session:
        out, _ = tokens.mint_link_token(
            session, issuer, code, external_id, LinkTokenCreate(), now, key(), TOKEN_SECRET
        )
        return out.token


def trust(
    engine: Engine, issuer: Caller, code: str, merchant: Caller, trusted: bool = True
) -> None:
    """The issuer lets a merchant check out its program's points without a payment token."""
    with transaction(engine) as session:
        tokens.set_merchant_trust(
            session, issuer, code, merchant.org_id, MerchantTrustSet(checkout_without_token=trusted)
        )


def capture(
    engine: Engine,
    merchant: Caller,
    checkout: uuid.UUID,
    amount: int | None = None,
    now: datetime = T0,
) -> CheckoutOut:
    """Capture a checkout."""
    with transaction(engine) as session:
        out, _ = exchange.capture(
            session, merchant, checkout, CaptureCreate(amount=amount), now, key()
        )
        return out


def link(
    engine: Engine,
    target_issuer: Caller,
    source: tuple[str, str],
    target: tuple[str, str],
    now: datetime = T0,
) -> None:
    """The target issuer links its member to a source member, with a link token the source
    program's issuer mints for it."""
    token = link_token(engine, issuer_of(engine, source[0]), source[0], source[1], now)
    with transaction(engine) as session:
        tokens.link_members(
            session,
            target_issuer,
            MemberLinkCreate(
                source_program=source[0],
                source_external_id=source[1],
                target_program=target[0],
                target_external_id=target[1],
                link_token=token,
            ),
            now,
        )


def convert(
    engine: Engine,
    issuer: Caller,
    source: tuple[str, str],
    target: tuple[str, str],
    points: int,
    now: datetime = T0,
) -> ConversionOut:
    """Quote and execute a conversion."""
    with transaction(engine) as session:
        quote = exchange.quote_conversion(
            session,
            issuer,
            QuoteCreate(
                source_program=source[0],
                source_external_id=source[1],
                target_program=target[0],
                target_external_id=target[1],
                points=points,
            ),
            now,
        )
        out, _ = exchange.convert(session, issuer, ConversionCreate(quote_id=quote.id), now, key())
        return out


def build_world(engine: Engine, now: datetime = T0) -> World:
    """Platform (1% conversion fee), BANKA (0.005), BANKB (0.01), MOBILE (0.002), shop (0.6%), cafe."""
    platform = org(engine, "platform", "Platform", now=now, conversion_fee_rate=Decimal("0.01"))
    bank_a = org(engine, "issuer", "Bank A", now=now)
    bank_b = org(engine, "issuer", "Bank B", now=now)
    carrier = org(engine, "issuer", "Carrier", now=now)
    shop = org(engine, "merchant", "Shop", now=now, default_fee_rate=Decimal("0.006"))
    cafe = org(engine, "merchant", "Cafe", now=now, default_fee_rate=Decimal("0.008"))
    program(engine, bank_a, "BANKA", "0.005", expiry_months=12, now=now)
    program(engine, bank_b, "BANKB", "0.01", expiry_months=24, now=now)
    program(engine, carrier, "MOBILE", "0.002", now=now)
    with transaction(engine) as session:
        programs.set_merchant_term(
            session, cafe.org_id, MerchantTermSet(program="BANKB", fee_rate=Decimal("0.01"))
        )
    world = World(platform, bank_a, bank_b, carrier, shop, cafe)
    world.programs = {"BANKA": bank_a, "BANKB": bank_b, "MOBILE": carrier}
    return world


def agree_all(engine: Engine, world: World, now: datetime = T0) -> None:
    """What the risk controls ask of the parties before they act: each merchant proposes to
    accept and fund every program's points and its issuer approves; every two issuers consent
    to interchange with each other."""
    with transaction(engine) as session:
        for code, issuer in world.programs.items():
            for merchant in (world.shop, world.cafe):
                proposal = agreements.propose(
                    session, merchant, AgreementCreate(program=code, accept=True, fund=True), now
                )
                agreements.approve(session, issuer, proposal.id, now)
        issuers = list(world.programs.values())
        for one in issuers:
            for other in issuers:
                if one != other:
                    agreements.set_interchange(
                        session, one, other.org_id, InterchangeSet(enabled=True), now
                    )

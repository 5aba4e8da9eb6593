"""Rules of conversion between programs and of points checkout at merchants (no HTTP here)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from clearing.core import money
from clearing.core.db import Sql, row_to
from clearing.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from clearing.core.idempotency import FirstRead, Operation, Outcome, run_once
from clearing.core.ids import new_id
from clearing.core.kinds import EntryKind, HoldStatus, LotSource, ObligationEvent, OrgKind
from clearing.core.ledger import (
    CONVERTED_IN,
    CONVERTED_OUT,
    REDEEMED,
    EntryDraft,
    HoldClose,
    HoldState,
    Ledger,
    Leg,
    LotSpec,
    ObligationDraft,
    points_asset,
)
from clearing.core.models import Hold
from clearing.core.policy import Action, OperationContext, debits_of, screen
from clearing.core.timeutil import aware, within_horizon
from clearing.web.context import Caller
from exchange.models import BilateralRate, Checkout, ConversionQuote
from exchange.schemas import (
    BilateralRateCreate,
    BilateralRateOut,
    CaptureCreate,
    CheckoutCreate,
    CheckoutOut,
    ConversionCreate,
    ConversionOut,
    QuoteCreate,
    QuoteOut,
    RefundCreate,
    RefundOut,
)
from issuers.contexts import checkout_context_of
from issuers.expiry import lot_expiry
from issuers.members import active_member
from issuers.models import Member, MemberLink, Organisation, Program
from issuers.organisations import CurrencyMismatch, platform
from issuers.programs import active_program, own_program, point_value_at, program_by_code
from issuers.repository import MemberRef, Party, ProgramRef, checkout_context_read
from issuers.tokens import checkout_member, token_hash


@dataclass(frozen=True, slots=True)
class CheckoutState:
    """A checkout row as the rules read and change it (the columns of `Checkout`, in order)."""

    id: uuid.UUID
    merchant_id: uuid.UUID
    member_id: uuid.UUID
    hold_id: uuid.UUID
    currency: str
    order_total: int
    points_amount: int
    points: int
    point_value: Decimal
    point_value_version: int
    fee_rate: Decimal
    status: str
    captured_amount: int
    captured_points: int
    fee_amount: int
    refunded_amount: int
    refunded_points: int
    refunded_fee: int
    capture_entry_id: uuid.UUID | None
    reference: str | None
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class CheckoutParties:
    """Who a checkout involves, read with it."""

    external_id: str
    member_account_id: uuid.UUID
    member_status: str
    program_id: uuid.UUID
    program_code: str
    issuer_id: uuid.UUID
    platform_id: uuid.UUID | None
    hold: HoldState


_CHECKOUTS = cast(Table, Checkout.__table__)
_HOLDS = cast(Table, Hold.__table__)
_ORGS = cast(Table, Organisation.__table__)
_MEMBERS = cast(Table, Member.__table__)
_PROGRAMS = cast(Table, Program.__table__)
_CHANGING = (
    "status",
    "captured_amount",
    "captured_points",
    "fee_amount",
    "refunded_amount",
    "refunded_points",
    "refunded_fee",
    "capture_entry_id",
)
_CHECKOUT_NAMES = tuple(f.name for f in fields(CheckoutState))
_NEW_CHECKOUT = Sql(insert(_CHECKOUTS), _CHECKOUT_NAMES)
_SAVE_CHECKOUT = Sql(
    update(_CHECKOUTS)
    .where(_CHECKOUTS.c.id == bindparam("b_id"))
    .values({c: bindparam(f"b_{c}", type_=_CHECKOUTS.c[c].type) for c in _CHANGING})
)
_OWN_CHECKOUT_QUERY = (
    select(
        *[_CHECKOUTS.c[f.name] for f in fields(CheckoutState)],
        _MEMBERS.c.external_id.label("member_external_id"),
        _MEMBERS.c.account_id.label("member_account_id"),
        _MEMBERS.c.status.label("member_status"),
        _PROGRAMS.c.id.label("program_ref_id"),
        _PROGRAMS.c.code.label("program_code"),
        _PROGRAMS.c.issuer_id.label("program_issuer_id"),
        select(_ORGS.c.id)
        .where(_ORGS.c.kind == OrgKind.PLATFORM)
        .limit(1)
        .scalar_subquery()
        .label("platform_id"),
        *[_HOLDS.c[f.name].label(f"h_{f.name}") for f in fields(HoldState)],
    )
    .join(_MEMBERS, _MEMBERS.c.id == _CHECKOUTS.c.member_id)
    .join(_PROGRAMS, _PROGRAMS.c.id == _MEMBERS.c.program_id)
    .join(_HOLDS, _HOLDS.c.id == _CHECKOUTS.c.hold_id)
    .where(_CHECKOUTS.c.id == bindparam("b_id"))
    .where(_CHECKOUTS.c.merchant_id == bindparam("b_merchant"))
)
_OWN_CHECKOUT = Sql(_OWN_CHECKOUT_QUERY)
# The hold is locked with its checkout: capture and void change both.
_LOCK_OWN_CHECKOUT = Sql(_OWN_CHECKOUT_QUERY.with_for_update(of=[_CHECKOUTS, _HOLDS]))

QUOTE_TTL = timedelta(seconds=120)
DEFAULT_HOLD_TTL = timedelta(minutes=15)


class QuoteExpired(Conflict):
    code = "quote_expired"
    title = "Quote has expired"


class QuoteUsed(Conflict):
    code = "quote_used"
    title = "Quote was already executed"


class MemberNotLinked(Conflict):
    code = "member_not_linked"
    title = "Target member is not linked to the source member"


class NotWholeBlocks(Conflict):
    code = "not_whole_blocks"
    title = "Points do not fill whole blocks of the bilateral rate"


class ConversionTooSmall(Conflict):
    code = "conversion_too_small"
    title = "Conversion gives no points"


class RateHistory(Conflict):
    code = "rate_history"
    title = "Rate history cannot change"


class CaptureExceedsHold(Conflict):
    code = "capture_exceeds_hold"
    title = "Capture exceeds the authorised amount"


class RefundExceedsCapture(Conflict):
    code = "refund_exceeds_capture"
    title = "Refund exceeds what was captured"


class CheckoutNotCaptured(Conflict):
    code = "checkout_not_captured"
    title = "Checkout is not captured"


def _same_currency(a: Party, b: Party) -> str:
    if a.currency != b.currency:
        raise CurrencyMismatch(
            f"{a.name} settles in {a.currency} and {b.name} in {b.currency}; "
            "no currency rate exists between them, so the operation is refused",
            currencies=[a.currency, b.currency],
        )
    return a.currency


# bilateral rates -----------------------------------------------------------------------------


def set_bilateral_rate(
    session: Session, caller: Caller, req: BilateralRateCreate, now: datetime
) -> BilateralRateOut:
    """Publish a block rate for one direction, agreed by the two issuers (set by the source issuer)."""
    source = own_program(session, caller, req.source_program)
    target = program_by_code(session, req.target_program)
    if req.min_source_points < req.source_block:
        raise InvalidInput("the minimum must be at least one block", field="min_source_points")
    effective = within_horizon(aware(req.effective_from) if req.effective_from else now, now)
    if effective < now:
        raise RateHistory("a rate cannot take effect in the past", field="effective_from")
    screen(
        session,
        [
            OperationContext(
                action=Action.RATE,
                caller_org_id=caller.org_id,
                caller_key_id=caller.key_id,
                at=effective,
                program_id=source.id,
                program_code=source.code,
                issuer_org_id=source.issuer_id,
                target_program_id=target.id,
                target_program_code=target.code,
                target_issuer_org_id=target.issuer_id,
                block_rate=(req.source_block, req.target_block),
            )
        ],
    )
    latest = session.execute(
        select(BilateralRate.version)
        .where(
            BilateralRate.source_program_id == source.id,
            BilateralRate.target_program_id == target.id,
        )
        .order_by(BilateralRate.version.desc())
        .limit(1)
    ).scalar()
    rate = BilateralRate(
        source_program_id=source.id,
        target_program_id=target.id,
        version=(latest or 0) + 1,
        source_block=req.source_block,
        target_block=req.target_block,
        min_source_points=req.min_source_points,
        effective_from=effective,
        created_at=now,
    )
    session.add(rate)
    session.flush()
    return BilateralRateOut(
        source_program=source.code,
        target_program=target.code,
        version=rate.version,
        source_block=rate.source_block,
        target_block=rate.target_block,
        min_source_points=rate.min_source_points,
        effective_from=effective,
    )


def _bilateral_rate_at(
    session: Session, source: Program | ProgramRef, target: Program | ProgramRef, at: datetime
) -> BilateralRate | None:
    return session.execute(
        select(BilateralRate)
        .where(
            BilateralRate.source_program_id == source.id,
            BilateralRate.target_program_id == target.id,
            BilateralRate.effective_from <= at,
        )
        .order_by(BilateralRate.version.desc())
        .limit(1)
    ).scalar()


# conversion ----------------------------------------------------------------------------------


def quote_conversion(session: Session, caller: Caller, req: QuoteCreate, now: datetime) -> QuoteOut:
    """Price a conversion from a member of the caller's program into a linked member of another."""
    source_program, source_issuer = active_program(session, req.source_program)
    if source_issuer.id != caller.org_id:
        raise NotFound(f"unknown program {req.source_program}")
    target_program, target_issuer = active_program(session, req.target_program)
    if target_program.id == source_program.id:
        raise InvalidInput("source and target programs must differ", field="target_program")
    currency = _same_currency(source_issuer, target_issuer)
    source = active_member(session, source_program, req.source_external_id)
    target = _linked_member(session, source, target_program, req.target_external_id)
    source_value = point_value_at(session, source_program.id, now)
    target_value = point_value_at(session, target_program.id, now)
    fee_rate = platform(session).conversion_fee_rate or Decimal(0)
    bilateral = _bilateral_rate_at(session, source_program, target_program, now)
    if bilateral is not None:
        if req.points < bilateral.min_source_points or req.points % bilateral.source_block:
            raise NotWholeBlocks(
                f"convert at least {bilateral.min_source_points} points in blocks of {bilateral.source_block}",
                source_block=bilateral.source_block,
                min_source_points=bilateral.min_source_points,
            )
        points_in = money.blocks_converted(
            req.points, bilateral.source_block, bilateral.target_block
        )
    else:
        points_in = money.converted_points(
            req.points, source_value.value, target_value.value, fee_rate
        )
    if points_in <= 0:
        raise ConversionTooSmall(
            "these points convert to less than one point of the target program"
        )
    # Rounded up: at least one minor unit for at least one point, so no quote settles for 0.
    settlement_amount = money.value_owed_for_points(points_in, target_value.value, currency)
    screen(
        session,
        [
            _conversion_context(
                Action.QUOTE,
                caller,
                now,
                (source_program, source_issuer, source),
                (target_program, target_issuer, target),
                req.points,
                settlement_amount,
                currency,
            )
        ],
    )
    quote = ConversionQuote(
        id=new_id(),
        org_id=caller.org_id,
        source_member_id=source.id,
        target_member_id=target.id,
        points_out=req.points,
        points_in=points_in,
        currency=currency,
        source_value=source_value.value,
        source_value_version=source_value.version,
        target_value=target_value.value,
        target_value_version=target_value.version,
        bilateral_version=bilateral.version if bilateral else None,
        fee_rate=fee_rate,
        fee_amount=money.conversion_fee(req.points, source_value.value, fee_rate, currency),
        settlement_amount=settlement_amount,
        valid_until=now + QUOTE_TTL,
        created_at=now,
    )
    session.add(quote)
    session.flush()
    return _quote_out(quote, source_program.code, target_program.code)


def _conversion_context(
    action: Action,
    caller: Caller,
    now: datetime,
    source: tuple[Program | ProgramRef, Party, Member | MemberRef],
    target: tuple[Program | ProgramRef, Party, Member | MemberRef],
    points: int,
    amount: int,
    currency: str,
    obligations: Sequence[ObligationDraft] = (),
    reference: str | None = None,
) -> OperationContext:
    """A quote or a conversion as the risk policy sees it: from a member of one program into
    a member of another, for `points` worth `amount`."""
    (source_program, source_issuer, source_member) = source
    (target_program, target_issuer, target_member) = target
    return OperationContext(
        action=action,
        caller_org_id=caller.org_id,
        caller_key_id=caller.key_id,
        at=now,
        program_id=source_program.id,
        program_code=source_program.code,
        issuer_org_id=source_issuer.id,
        member_id=source_member.id,
        member_external_id=source_member.external_id,
        member_account_id=source_member.account_id,
        target_program_id=target_program.id,
        target_program_code=target_program.code,
        target_issuer_org_id=target_issuer.id,
        target_member_id=target_member.id,
        target_member_external_id=target_member.external_id,
        points=points,
        amount=amount,
        currency=currency,
        debits=debits_of(obligations),
        spends=True,
        reference=reference,
    )


def _linked_member(
    session: Session, source: MemberRef, target_program: ProgramRef, external_id: str
) -> MemberRef:
    """The active member of the target program whose issuer linked it to `source`.

    Found only through a link: to the source issuer, a target member that does not exist and
    one not linked to its member are the same answer."""
    linked = session.execute(
        select(Member.id)
        .join(MemberLink, MemberLink.target_member_id == Member.id)
        .where(
            MemberLink.source_member_id == source.id,
            Member.program_id == target_program.id,
            Member.external_id == external_id,
        )
    ).first()
    if linked is None:
        raise MemberNotLinked("the target issuer has not linked this member to the source member")
    return active_member(session, target_program, external_id)


def _quote_out(quote: ConversionQuote, source: str, target: str) -> QuoteOut:
    return QuoteOut(
        id=quote.id,
        source_program=source,
        target_program=target,
        points_out=quote.points_out,
        points_in=quote.points_in,
        currency=quote.currency,
        source_value=quote.source_value,
        source_value_version=quote.source_value_version,
        target_value=quote.target_value,
        target_value_version=quote.target_value_version,
        bilateral_version=quote.bilateral_version,
        fee_rate=quote.fee_rate,
        fee_amount=quote.fee_amount,
        settlement_amount=quote.settlement_amount,
        valid_until=aware(quote.valid_until),
    )


def convert(
    session: Session, caller: Caller, req: ConversionCreate, now: datetime, idempotency_key: str
) -> Outcome[ConversionOut]:
    """Execute a quote once: points leave A, arrive in B; A owes B the value and the platform the fee."""
    operation = conversion_operation(session, caller, req, now)
    return run_once(session, caller.org_id, idempotency_key, operation, now)


def conversion_operation(
    session: Session,
    caller: Caller,
    req: ConversionCreate,
    now: datetime,
    requested_at: datetime | None = None,
) -> Operation[ConversionOut]:
    """A conversion as one idempotent operation; one completed after a review honours the
    quote if it was valid when the conversion was requested (`requested_at`)."""
    return Operation(
        "conversion",
        req,
        ConversionOut,
        lambda _: _convert(session, caller, req, now, requested_at or now),
    )


def _convert(
    session: Session, caller: Caller, req: ConversionCreate, now: datetime, requested_at: datetime
) -> ConversionOut:
    quote = session.get(ConversionQuote, req.quote_id, with_for_update=True)
    if quote is None or quote.org_id != caller.org_id:
        raise NotFound("unknown quote")
    if quote.entry_id is not None:
        raise QuoteUsed("this quote was already executed")
    if aware(quote.valid_until) <= requested_at:
        raise QuoteExpired("this quote has expired; ask for a new one")
    source = session.get(Member, quote.source_member_id)
    target = session.get(Member, quote.target_member_id)
    assert source is not None
    assert target is not None
    source_program = session.get(Program, source.program_id)
    target_program = session.get(Program, target.program_id)
    assert source_program is not None
    assert target_program is not None
    _, source_issuer = active_program(session, source_program.code)
    _, target_issuer = active_program(session, target_program.code)
    active_member(session, source_program, source.external_id)
    active_member(session, target_program, target.external_id)
    obligations = _conversion_obligations(
        quote, source_issuer, target_issuer, platform(session), source_program, target_program
    )
    screen(
        session,
        [
            _conversion_context(
                Action.CONVERSION,
                caller,
                now,
                (source_program, source_issuer, source),
                (target_program, target_issuer, target),
                quote.points_out,
                quote.settlement_amount,
                quote.currency,
                obligations,
                str(quote.id),
            )
        ],
    )
    ledger = Ledger(session)
    a_asset, b_asset = points_asset(source_program.code), points_asset(target_program.code)
    expires_at = lot_expiry(
        target_program.expiry_policy, target_program.expiry_months, target_issuer.zone, now
    )
    posted = ledger.post(
        EntryDraft(
            kind=EntryKind.CONVERSION,
            org_id=caller.org_id,
            booked_at=now,
            legs=[
                Leg(source.account_id, -quote.points_out),
                Leg(ledger.account_id(a_asset, CONVERTED_OUT, source_program.id), quote.points_out),
                Leg(ledger.account_id(b_asset, CONVERTED_IN, target_program.id), -quote.points_in),
                Leg(
                    target.account_id,
                    quote.points_in,
                    lot=LotSpec(
                        LotSource.CONVERSION,
                        expires_at,
                        funding_org_id=source_issuer.id,
                        source_program=source_program.code,
                    ),
                ),
            ],
            obligations=obligations,
            memo={"quote": str(quote.id)},
        )
    )
    quote.entry_id = posted.id
    session.flush()
    return ConversionOut(
        quote_id=quote.id,
        entry_id=posted.id,
        points_out=quote.points_out,
        points_in=quote.points_in,
        fee_amount=quote.fee_amount,
        settlement_amount=quote.settlement_amount,
        currency=quote.currency,
    )


def _conversion_obligations(
    quote: ConversionQuote,
    source_issuer: Party,
    target_issuer: Party,
    plat: Party,
    source_program: Program,
    target_program: Program,
) -> list[ObligationDraft]:
    """Issuer A owes issuer B the value of the points B credits, and the platform its fee."""
    obligations = [
        ObligationDraft(
            event_type=ObligationEvent.CONVERSION,
            payer_org_id=source_issuer.id,
            payee_org_id=target_issuer.id,
            currency=quote.currency,
            amount=quote.settlement_amount,
            program_code=target_program.code,
            points=quote.points_in,
            point_value=quote.target_value,
            point_value_version=quote.target_value_version,
        )
    ]
    if quote.fee_amount > 0:
        obligations.append(
            ObligationDraft(
                event_type=ObligationEvent.FEE,
                payer_org_id=source_issuer.id,
                payee_org_id=plat.id,
                currency=quote.currency,
                amount=quote.fee_amount,
                program_code=source_program.code,
                points=quote.points_out,
                point_value=quote.source_value,
                point_value_version=quote.source_value_version,
            )
        )
    return obligations


# checkout ------------------------------------------------------------------------------------


def authorise(
    session: Session,
    caller: Caller,
    req: CheckoutCreate,
    now: datetime,
    idempotency_key: str,
    hold_ttl: timedelta = DEFAULT_HOLD_TTL,
) -> Outcome[CheckoutOut]:
    """Hold the points for the part of an order paid with points, with the member's consent."""
    presented = None if req.payment_token is None else token_hash(req.payment_token)
    operation = Operation(
        "checkout",
        req,
        CheckoutOut,
        lambda row: _authorise(session, caller, req, now, hold_ttl, row),
        checkout_context_read(caller.org_id, req.program, req.external_id, presented, now),
    )
    return run_once(session, caller.org_id, idempotency_key, operation, now)


def _authorise(
    session: Session,
    caller: Caller,
    req: CheckoutCreate,
    now: datetime,
    hold_ttl: timedelta,
    row: Any | None,
) -> CheckoutOut:
    if caller.kind != OrgKind.MERCHANT:
        raise Forbidden("only merchants take checkouts")
    checkout_context = checkout_context_of(row, req.program, req.external_id)
    context = checkout_context.member
    merchant, program = context.caller, context.program
    currency = _same_currency(merchant, context.issuer)
    if req.points_amount > req.order_total:
        raise InvalidInput("points_amount cannot exceed order_total", field="points_amount")
    value = context.point_value()
    member = checkout_member(
        session, checkout_context, req.payment_token is not None, req.points_amount, now
    )
    points = money.points_for_amount(req.points_amount, value.value, currency)
    screen(
        session,
        [
            OperationContext(
                action=Action.AUTHORISATION,
                caller_org_id=caller.org_id,
                caller_key_id=caller.key_id,
                at=now,
                program_id=program.id,
                program_code=program.code,
                issuer_org_id=context.issuer.id,
                member_id=member.id,
                member_external_id=member.external_id,
                member_account_id=member.account_id,
                merchant_org_id=merchant.id,
                points=points,
                amount=req.points_amount,
                currency=currency,
                spends=True,
                reference=req.reference,
            )
        ],
    )
    ttl = timedelta(seconds=req.ttl_seconds) if req.ttl_seconds else hold_ttl
    hold_id = Ledger(session).place_hold(member.account_id, points, merchant.id, now, now + ttl)
    checkout = CheckoutState(
        id=new_id(),
        merchant_id=merchant.id,
        member_id=member.id,
        hold_id=hold_id,
        currency=currency,
        order_total=req.order_total,
        points_amount=req.points_amount,
        points=points,
        point_value=value.value,
        point_value_version=value.version,
        fee_rate=context.merchant_fee_rate(),
        status=HoldStatus.AUTHORISED,
        captured_amount=0,
        captured_points=0,
        fee_amount=0,
        refunded_amount=0,
        refunded_points=0,
        refunded_fee=0,
        capture_entry_id=None,
        reference=req.reference,
        created_at=now,
        expires_at=now + ttl,
    )
    _NEW_CHECKOUT.rows(session, {name: getattr(checkout, name) for name in _CHECKOUT_NAMES})
    return _checkout_out(checkout, program.code, member.external_id, now)


def _checkout_out(
    checkout: CheckoutState, program: str, external_id: str, now: datetime
) -> CheckoutOut:
    status = checkout.status
    if status == HoldStatus.AUTHORISED and aware(checkout.expires_at) <= now:
        status = HoldStatus.EXPIRED
    return CheckoutOut(
        id=checkout.id,
        status=status,
        program=program,
        external_id=external_id,
        currency=checkout.currency,
        order_total=checkout.order_total,
        points_amount=checkout.points_amount,
        cash_amount=checkout.order_total - checkout.points_amount,
        points=checkout.points,
        point_value=checkout.point_value,
        point_value_version=checkout.point_value_version,
        fee_rate=checkout.fee_rate,
        captured_amount=checkout.captured_amount,
        captured_points=checkout.captured_points,
        fee_amount=checkout.fee_amount,
        refunded_amount=checkout.refunded_amount,
        refunded_points=checkout.refunded_points,
        expires_at=aware(checkout.expires_at),
        reference=checkout.reference,
    )


def _checkout_key(caller: Caller, checkout_id: uuid.UUID) -> dict[str, Any]:
    return {"b_id": checkout_id, "b_merchant": caller.org_id}


def _own_checkout_locked(caller: Caller, checkout_id: uuid.UUID) -> FirstRead:
    """The first read of a capture, void or refund: the caller's checkout with its hold, locked."""
    return FirstRead(_LOCK_OWN_CHECKOUT, _checkout_key(caller, checkout_id))


def _checkout_of(row: Any | None) -> tuple[CheckoutState, CheckoutParties]:
    """A checkout of the caller and who it involves, from a row of `_OWN_CHECKOUT`."""
    if row is None:
        raise NotFound("unknown checkout")
    checkout = row_to(CheckoutState, row)
    return checkout, CheckoutParties(
        row.member_external_id,
        row.member_account_id,
        row.member_status,
        row.program_ref_id,
        row.program_code,
        row.program_issuer_id,
        row.platform_id,
        row_to(HoldState, row, "h_"),
    )


def _platform_id(session: Session, parties: CheckoutParties) -> uuid.UUID:
    return parties.platform_id or platform(session).id  # the latter says it is missing


def _checkout_obligations(
    session: Session,
    checkout: CheckoutState,
    parties: CheckoutParties,
    amount: int,
    points: int,
    fee: int,
    refund: bool = False,
) -> list[ObligationDraft]:
    """A capture's obligations: the issuer owes the merchant the amount paid with `points`, and
    the merchant owes the platform its fee; a refund's run the other way, for what it returns."""
    merchant, issuer = checkout.merchant_id, parties.issuer_id
    obligations = [
        ObligationDraft(
            event_type=(
                ObligationEvent.CHECKOUT_REFUND if refund else ObligationEvent.CHECKOUT_CAPTURE
            ),
            payer_org_id=merchant if refund else issuer,
            payee_org_id=issuer if refund else merchant,
            currency=checkout.currency,
            amount=amount,
            program_code=parties.program_code,
            points=points,
            point_value=checkout.point_value,
            point_value_version=checkout.point_value_version,
        )
    ]
    if fee > 0:
        platform_id = _platform_id(session, parties)
        obligations.append(
            ObligationDraft(
                event_type=ObligationEvent.FEE_REFUND if refund else ObligationEvent.FEE,
                payer_org_id=platform_id if refund else merchant,
                payee_org_id=merchant if refund else platform_id,
                currency=checkout.currency,
                amount=fee,
                program_code=parties.program_code,
            )
        )
    return obligations


def _checkout_context(
    action: Action,
    caller: Caller,
    own: tuple[CheckoutState, CheckoutParties],
    now: datetime,
    amount: int,
    points: int,
    obligations: list[ObligationDraft],
) -> OperationContext:
    """A capture, void or refund of a checkout as the risk policy sees it."""
    checkout, parties = own
    return OperationContext(
        action=action,
        caller_org_id=caller.org_id,
        caller_key_id=caller.key_id,
        at=now,
        program_id=parties.program_id,
        program_code=parties.program_code,
        issuer_org_id=parties.issuer_id,
        member_id=checkout.member_id,
        member_external_id=parties.external_id,
        member_account_id=parties.member_account_id,
        member_status=parties.member_status,
        merchant_org_id=checkout.merchant_id,
        points=points,
        amount=amount,
        currency=checkout.currency,
        debits=debits_of(obligations),
        spends=action == Action.CAPTURE,
        reference=str(checkout.id),
    )


def _save(session: Session, checkout: CheckoutState) -> None:
    _SAVE_CHECKOUT.rows(
        session, {f"b_{c}": getattr(checkout, c) for c in _CHANGING} | {"b_id": checkout.id}
    )


def get_checkout(
    session: Session, caller: Caller, checkout_id: uuid.UUID, now: datetime
) -> CheckoutOut:
    """A checkout of the calling merchant."""
    checkout, parties = _checkout_of(
        _OWN_CHECKOUT.first(session, _checkout_key(caller, checkout_id))
    )
    return _checkout_out(checkout, parties.program_code, parties.external_id, now)


def capture(
    session: Session,
    caller: Caller,
    checkout_id: uuid.UUID,
    req: CaptureCreate,
    now: datetime,
    idempotency_key: str,
) -> Outcome[CheckoutOut]:
    """Capture an authorised checkout, fully or partly, once; the rest of the hold is released."""
    operation = Operation(
        "capture",
        {"checkout": str(checkout_id), **req.model_dump(mode="json")},
        CheckoutOut,
        lambda row: _capture(session, caller, _checkout_of(row), req, now),
        _own_checkout_locked(caller, checkout_id),
    )
    return run_once(session, caller.org_id, idempotency_key, operation, now)


def _capture(
    session: Session,
    caller: Caller,
    own: tuple[CheckoutState, CheckoutParties],
    req: CaptureCreate,
    now: datetime,
) -> CheckoutOut:
    checkout, parties = own
    ledger = Ledger(session)
    hold = parties.hold.open_at(now)
    amount = checkout.points_amount if req.amount is None else req.amount
    if amount > checkout.points_amount:
        raise CaptureExceedsHold(
            "cannot capture more than was authorised", authorised=checkout.points_amount
        )
    points = (
        checkout.points
        if amount == checkout.points_amount
        else money.points_for_amount(amount, checkout.point_value, checkout.currency)
    )
    fee = money.fee(amount, checkout.fee_rate)
    obligations = _checkout_obligations(session, checkout, parties, amount, points, fee)
    screen(
        session,
        [_checkout_context(Action.CAPTURE, caller, own, now, amount, points, obligations)],
    )
    posted = ledger.post(
        EntryDraft(
            kind=EntryKind.CHECKOUT_CAPTURE,
            org_id=caller.org_id,
            booked_at=now,
            legs=[
                Leg(parties.member_account_id, -points, held=-hold.points),
                Leg(
                    ledger.account_id(
                        points_asset(parties.program_code), REDEEMED, parties.program_id
                    ),
                    points,
                ),
            ],
            obligations=obligations,
            memo={"checkout": str(checkout.id)},
            closes_hold=HoldClose(hold.id, HoldStatus.CAPTURED, points),
        )
    )
    checkout = replace(
        checkout,
        status=HoldStatus.CAPTURED,
        captured_amount=amount,
        captured_points=points,
        fee_amount=fee,
        capture_entry_id=posted.id,
    )
    _save(session, checkout)
    return _checkout_out(checkout, parties.program_code, parties.external_id, now)


def void(
    session: Session, caller: Caller, checkout_id: uuid.UUID, now: datetime, idempotency_key: str
) -> Outcome[CheckoutOut]:
    """Release the hold of an authorised checkout."""
    operation = Operation(
        "void",
        {"checkout": str(checkout_id)},
        CheckoutOut,
        lambda row: _void(session, caller, _checkout_of(row), now),
        _own_checkout_locked(caller, checkout_id),
    )
    return run_once(session, caller.org_id, idempotency_key, operation, now)


def _void(
    session: Session, caller: Caller, own: tuple[CheckoutState, CheckoutParties], now: datetime
) -> CheckoutOut:
    checkout, parties = own
    ledger = Ledger(session)
    hold = parties.hold.open_at(now)
    screen(session, [_checkout_context(Action.VOID, caller, own, now, 0, hold.points, [])])
    ledger.void_hold(hold, now)
    checkout = replace(checkout, status=HoldStatus.VOIDED)
    _save(session, checkout)
    return _checkout_out(checkout, parties.program_code, parties.external_id, now)


def refund(
    session: Session,
    caller: Caller,
    checkout_id: uuid.UUID,
    req: RefundCreate,
    now: datetime,
    idempotency_key: str,
) -> Outcome[RefundOut]:
    """Give points back after capture, in full or in part, never more than captured in total."""
    operation = refund_operation(session, caller, checkout_id, req, now)
    return run_once(session, caller.org_id, idempotency_key, operation, now)


def refund_operation(
    session: Session, caller: Caller, checkout_id: uuid.UUID, req: RefundCreate, now: datetime
) -> Operation[RefundOut]:
    """A refund as one idempotent operation (run now, or on a review's approval)."""
    return Operation(
        "refund",
        {"checkout": str(checkout_id), **req.model_dump(mode="json")},
        RefundOut,
        lambda row: _refund(session, caller, _checkout_of(row), req, now),
        _own_checkout_locked(caller, checkout_id),
    )


def _refund(
    session: Session,
    caller: Caller,
    own: tuple[CheckoutState, CheckoutParties],
    req: RefundCreate,
    now: datetime,
) -> RefundOut:
    checkout, parties = own
    if checkout.status != HoldStatus.CAPTURED or checkout.capture_entry_id is None:
        raise CheckoutNotCaptured(f"checkout is {checkout.status}; only captured checkouts refund")
    remaining = checkout.captured_amount - checkout.refunded_amount
    if req.amount > remaining:
        raise RefundExceedsCapture("cannot refund more than was captured", refundable=remaining)
    total_after = checkout.refunded_amount + req.amount
    points = (
        money.cumulative_share(checkout.captured_points, total_after, checkout.captured_amount)
        - checkout.refunded_points
    )
    fee_back = (
        money.cumulative_share(checkout.fee_amount, total_after, checkout.captured_amount)
        - checkout.refunded_fee
    )
    ledger = Ledger(session)
    obligations = _checkout_obligations(
        session, checkout, parties, req.amount, points, fee_back, refund=True
    )
    screen(
        session,
        [_checkout_context(Action.REFUND, caller, own, now, req.amount, points, obligations)],
    )
    legs: list[Leg] = []
    if points > 0:
        legs = [
            Leg(
                ledger.account_id(points_asset(parties.program_code), REDEEMED, parties.program_id),
                -points,
            ),
            Leg(parties.member_account_id, points, restore_from=checkout.capture_entry_id),
        ]
    posted = ledger.post(
        EntryDraft(
            kind=EntryKind.CHECKOUT_REFUND,
            org_id=caller.org_id,
            booked_at=now,
            reverses_id=checkout.capture_entry_id,
            legs=legs,
            obligations=obligations,
            memo={"checkout": str(checkout.id)},
        )
    )
    checkout = replace(
        checkout,
        refunded_amount=total_after,
        refunded_points=checkout.refunded_points + points,
        refunded_fee=checkout.refunded_fee + fee_back,
    )
    _save(session, checkout)
    return RefundOut(
        checkout_id=checkout.id,
        entry_id=posted.id,
        amount=req.amount,
        points=points,
        fee_returned=fee_back,
        refunded_amount_total=total_after,
    )

"""Accruals: points credited to members by their issuer or funded by a merchant, singly or as
a partner's bulk file, and their reversal (goods returned)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from clearing.core.db import bulk_insert
from clearing.core.errors import Conflict, Forbidden, NotFound
from clearing.core.idempotency import Operation, Outcome, run_once
from clearing.core.ids import new_id
from clearing.core.kinds import EntryKind, LotSource, ObligationEvent, OrgKind
from clearing.core.ledger import (
    ISSUED,
    EntryDraft,
    Ledger,
    Leg,
    LotSpec,
    ObligationDraft,
    PostedEntry,
    points_asset,
)
from clearing.core.money import cumulative_share, value_owed_for_points
from clearing.core.policy import Action, OperationContext, debits_of, screen
from clearing.web.context import Caller
from issuers import debts, repository
from issuers.contexts import MemberContext, member_context, member_context_of
from issuers.enrolment import enrol_on_accrual, enrol_unknown
from issuers.expiry import lot_expiry
from issuers.members import active_members
from issuers.models import Accrual, Member, Organisation, Program
from issuers.organisations import CurrencyMismatch, active_organisation
from issuers.programs import active_program, point_value_at
from issuers.qualification import upgrade_at_once
from issuers.repository import MemberRef, Party, ProgramRef, ValueRef
from issuers.schemas import (
    AccrualBatchCreate,
    AccrualBatchOut,
    AccrualCreate,
    AccrualOut,
    AccrualReversalCreate,
    AccrualReversalOut,
)


class AccrualOverReversed(Conflict):
    code = "reversal_exceeds_accrual"
    title = "Reversal exceeds what remains of the accrual"


def accrue(
    session: Session, caller: Caller, req: AccrualCreate, now: datetime, idempotency_key: str
) -> Outcome[AccrualOut]:
    """Credit points to a member, funded by the issuer or by the calling merchant."""
    operation = accrual_operation(session, caller, req, now)
    return run_once(session, caller.org_id, idempotency_key, operation, now)


def accrual_operation(
    session: Session, caller: Caller, req: AccrualCreate, now: datetime
) -> Operation[AccrualOut]:
    """An accrual as one idempotent operation (run now, or on a review's approval)."""

    def run(row: Any | None) -> AccrualOut:
        context = member_context_of(row, req.program, req.external_id)
        return post_accruals(session, caller, [req], now, context)[0]

    return Operation(
        "accrual",
        req,
        AccrualOut,
        run,
        repository.member_context_read(caller.org_id, req.program, req.external_id, now),
    )


def accrue_batch(
    session: Session, caller: Caller, req: AccrualBatchCreate, now: datetime, idempotency_key: str
) -> Outcome[AccrualBatchOut]:
    """Credit a partner's bulk file of accruals in one transaction: all lines or none."""
    operation = accrual_batch_operation(session, caller, req, now)
    return run_once(session, caller.org_id, idempotency_key, operation, now)


def accrual_batch_operation(
    session: Session, caller: Caller, req: AccrualBatchCreate, now: datetime
) -> Operation[AccrualBatchOut]:
    """A bulk file of accruals as one idempotent operation."""

    def run(_: None) -> AccrualBatchOut:
        accruals = post_accruals(session, caller, req.items, now)
        return AccrualBatchOut(
            count=len(accruals),
            points=sum(a.points for a in accruals),
            amount_owed=sum(a.amount_owed for a in accruals),
            accrual_ids=[a.id for a in accruals],
        )

    return Operation("accrual_batch", req, AccrualBatchOut, run)


@dataclass(frozen=True, slots=True)
class _Funded:
    """A program accruals credit, as read once per file: its issuer, the point value in force,
    the program's issued account and the expiry of points credited now."""

    program: ProgramRef
    issuer: Party
    value: ValueRef
    issued_account: uuid.UUID
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class _Reads:
    """What a set of accruals of one funder reads before it posts."""

    funder: Party
    programs: dict[str, _Funded]
    members: dict[tuple[uuid.UUID, str], MemberRef]


def post_accruals(
    session: Session,
    caller: Caller,
    items: Sequence[AccrualCreate],
    now: datetime,
    context: MemberContext | None = None,
    *,
    upgrade_tiers: bool = True,
) -> list[AccrualOut]:
    """Accruals of one funder: each its own entry and lot, posted together.

    `upgrade_tiers=False` is for a caller that records more qualifying figures after the accruals
    (purchase events' spend) and runs `upgrade_at_once` itself once they are written."""
    ledger = Ledger(session)
    if len(items) == 1:
        # A single accrual reads everything it needs in one statement.
        item = items[0]
        if context is None:
            context = member_context(session, caller.org_id, item.program, item.external_id, now)
        reads = _single_reads(ledger, item, context, now)
    else:
        reads = _file_reads(session, ledger, caller, items, now)
    drafts: list[EntryDraft] = []
    results: list[AccrualOut] = []
    for item in items:
        draft, out = _accrual(reads, item, now)
        drafts.append(draft)
        results.append(out)
    screen(
        session,
        [
            _screened(caller, reads, item, draft, now)
            for item, draft in zip(items, drafts, strict=True)
        ],
    )
    member_ids = [_member_of(reads, out).id for out in results]
    # Read (and lock) debts before the first balance moves: a reversal recording a debt
    # takes the debt row before the member's balance too, so neither waits on the other.
    # A single accrual's context read the member's debt already: none, no statement. One that
    # appears meanwhile (a concurrent reversal) is repaid by the member's next accrual.
    owed = debts.debts_of(session, member_ids) if context is None or context.member_debt else {}
    posted = ledger.post_many(drafts)
    if owed:
        _recover(session, ledger, reads, owed, results, posted, now)
    bulk_insert(
        session,
        cast(Table, Accrual.__table__),
        [
            {
                "id": out.id,
                "entry_id": out.entry_id,
                "member_id": member_id,
                "funding_org_id": reads.funder.id,
                "points": out.points,
                "reversed_points": 0,
                "lot_id": entry.lots_created[0],
                "created_at": now,
            }
            for out, entry, member_id in zip(results, posted, member_ids, strict=True)
        ],
    )
    if upgrade_tiers:
        # Tiers: a member who now qualifies for a higher tier moves up at once (untiered: free).
        upgrade_at_once(session, reads.members.values(), now)
    return results


def _member_of(reads: _Reads, out: AccrualOut) -> MemberRef:
    return reads.members[(reads.programs[out.program].program.id, out.external_id)]


def _recover(
    session: Session,
    ledger: Ledger,
    reads: _Reads,
    owed: dict[uuid.UUID, int],
    results: Sequence[AccrualOut],
    posted: Sequence[PostedEntry],
    now: datetime,
) -> None:
    """Members in debt repay it first from what these accruals credited them, in file order:
    a second entry per line that repays, taking from the lot the line created."""
    credits = [
        debts.Credit(
            member.id,
            member.account_id,
            reads.programs[out.program].issued_account,
            out.points,
            entry.lots_created[0],
        )
        for out, entry in zip(results, posted, strict=True)
        if (member := _member_of(reads, out)).id in owed
    ]
    drafts = debts.recoveries(reads.funder.id, owed, credits, now)
    ledger.post_many([draft for _, draft in drafts])
    debts.repay(session, drafts, now)


def _screened(
    caller: Caller, reads: _Reads, item: AccrualCreate, draft: EntryDraft, now: datetime
) -> OperationContext:
    """One accrual line as the risk policy sees it."""
    funded = reads.programs[item.program]
    member = reads.members[(funded.program.id, item.external_id)]
    currency = funded.issuer.currency
    return OperationContext(
        action=Action.ACCRUAL,
        caller_org_id=caller.org_id,
        caller_key_id=caller.key_id,
        at=now,
        program_id=funded.program.id,
        program_code=funded.program.code,
        issuer_org_id=funded.issuer.id,
        member_id=member.id,
        member_external_id=member.external_id,
        member_account_id=member.account_id,
        merchant_org_id=reads.funder.id if reads.funder.kind == OrgKind.MERCHANT else None,
        points=item.points,
        amount=value_owed_for_points(item.points, funded.value.value, currency),
        currency=currency,
        debits=debits_of(draft.obligations),
        reference=item.reference,
    )


def _funded(
    ledger: Ledger, program: ProgramRef, issuer: Party, value: ValueRef, now: datetime
) -> _Funded:
    expires_at = lot_expiry(program.expiry_policy, program.expiry_months, issuer.zone, now)
    issued = ledger.account_id(points_asset(program.code), ISSUED, program.id)
    return _Funded(program, issuer, value, issued, expires_at)


def _single_reads(
    ledger: Ledger, item: AccrualCreate, context: MemberContext, now: datetime
) -> _Reads:
    funder = _may_fund(context.caller)
    _may_fund_in(funder, context.program, context.issuer)
    funded = _funded(ledger, context.program, context.issuer, context.point_value(), now)
    if context.member is None and context.program.enrol_on_accrual:
        new = enrol_on_accrual(ledger.session, context.program, [item.external_id], now)
        context = replace(context, member=new[item.external_id])
    member = context.active_member()
    return _Reads(funder, {item.program: funded}, {(context.program.id, item.external_id): member})


def _file_reads(
    session: Session,
    ledger: Ledger,
    caller: Caller,
    items: Sequence[AccrualCreate],
    now: datetime,
) -> _Reads:
    funder = _may_fund(active_organisation(session, caller.org_id))
    programs: dict[str, _Funded] = {}
    for code in dict.fromkeys(item.program for item in items):
        program, issuer = active_program(session, code)
        _may_fund_in(funder, program, issuer)
        value = point_value_at(session, program.id, now)
        programs[code] = _funded(ledger, program, issuer, value, now)
    for code, funded in programs.items():
        if funded.program.enrol_on_accrual:
            enrol_unknown(
                session, funded.program, (i.external_id for i in items if i.program == code), now
            )
    wanted = [(programs[i.program].program, i.external_id) for i in items]
    return _Reads(funder, programs, active_members(session, wanted))


def _accrual(reads: _Reads, item: AccrualCreate, now: datetime) -> tuple[EntryDraft, AccrualOut]:
    """The entry of one accrual line and its answer."""
    funded, funder = reads.programs[item.program], reads.funder
    program, issuer, value = funded.program, funded.issuer, funded.value
    member = reads.members[(program.id, item.external_id)]
    owed = 0
    obligations: list[ObligationDraft] = []
    if funder.kind == OrgKind.MERCHANT:
        # Rounded up: every line owes at least one minor unit, so no split of a file into
        # many small lines owes less than the whole (clearing.core.money).
        owed = value_owed_for_points(item.points, value.value, issuer.currency)
        obligations.append(
            ObligationDraft(
                event_type=ObligationEvent.MERCHANT_FUNDED_ACCRUAL,
                payer_org_id=funder.id,
                payee_org_id=issuer.id,
                currency=issuer.currency,
                amount=owed,
                program_code=program.code,
                points=item.points,
                point_value=value.value,
                point_value_version=value.version,
            )
        )
    draft = EntryDraft(
        kind=EntryKind.ACCRUAL,
        org_id=funder.id,
        booked_at=now,
        legs=[
            Leg(funded.issued_account, -item.points),
            Leg(
                member.account_id,
                item.points,
                lot=LotSpec(LotSource.ACCRUAL, funded.expires_at, funding_org_id=funder.id),
            ),
        ],
        obligations=obligations,
        memo={"reference": item.reference} if item.reference else {},
    )
    return draft, AccrualOut(
        id=new_id(),
        entry_id=draft.id,
        program=program.code,
        external_id=member.external_id,
        points=item.points,
        funding_org_id=funder.id,
        amount_owed=owed,
        currency=issuer.currency,
        point_value_version=value.version,
        expires_at=funded.expires_at,
    )


def _may_fund(funder: Party) -> Party:
    if funder.kind not in (OrgKind.ISSUER, OrgKind.MERCHANT):
        raise Forbidden("only issuers and merchants fund accruals")
    return funder


def _may_fund_in(funder: Party, program: ProgramRef, issuer: Party) -> None:
    if funder.kind == OrgKind.ISSUER and program.issuer_id != funder.id:
        raise NotFound(f"unknown program {program.code}")
    if funder.kind == OrgKind.MERCHANT and funder.currency != issuer.currency:
        raise CurrencyMismatch(
            f"merchant settles in {funder.currency}, program {program.code} in"
            f" {issuer.currency}; no currency rate exists between them",
        )


def reverse_accrual(
    session: Session,
    caller: Caller,
    accrual_id: uuid.UUID,
    req: AccrualReversalCreate,
    now: datetime,
    idempotency_key: str,
) -> Outcome[AccrualReversalOut]:
    """Take back points of an accrual (goods returned), in full or in part."""
    operation = Operation(
        "accrual_reversal",
        {"accrual": str(accrual_id), **req.model_dump(mode="json")},
        AccrualReversalOut,
        lambda _: _reverse_accrual(session, caller, accrual_id, req, now),
    )
    return run_once(session, caller.org_id, idempotency_key, operation, now)


def reverse_points(
    session: Session, caller: Caller, accrual_id: uuid.UUID, points: int, now: datetime
) -> AccrualReversalOut:
    """Take back `points` of an accrual inside another operation (a refund of its event)."""
    return _reverse_accrual(session, caller, accrual_id, AccrualReversalCreate(points=points), now)


def _reverse_accrual(
    session: Session,
    caller: Caller,
    accrual_id: uuid.UUID,
    req: AccrualReversalCreate,
    now: datetime,
) -> AccrualReversalOut:
    accrual = session.get(Accrual, accrual_id, with_for_update=True)
    member = session.get(Member, accrual.member_id) if accrual else None
    program = session.get(Program, member.program_id) if member else None
    if accrual is None or member is None or program is None:
        raise NotFound("unknown accrual")
    if caller.org_id not in (accrual.funding_org_id, program.issuer_id):
        raise NotFound("unknown accrual")
    if accrual.reversed_points + req.points > accrual.points:
        raise AccrualOverReversed(
            "cannot reverse more points than the accrual credited",
            reversible=accrual.points - accrual.reversed_points,
        )
    ledger = Ledger(session)
    obligations = _money_returned(session, accrual, program, req.points)
    screen(
        session,
        [
            OperationContext(
                action=Action.ACCRUAL_REVERSAL,
                caller_org_id=caller.org_id,
                caller_key_id=caller.key_id,
                at=now,
                program_id=program.id,
                program_code=program.code,
                issuer_org_id=program.issuer_id,
                member_id=member.id,
                member_external_id=member.external_id,
                member_account_id=member.account_id,
                member_status=member.status,
                points=req.points,
                amount=sum(o.amount for o in obligations),
                currency=obligations[0].currency if obligations else None,
                debits=debits_of(obligations),
            )
        ],
    )
    # Points the member spent (or are held for a checkout) cannot be taken: the program's rule
    # says whether the rest is owed or written off. Read without a lock: a spend committed
    # meanwhile makes the posting below refuse (insufficient points), never overdraw.
    balance, held = ledger.member_balance(member.account_id, now)
    split = debts.shortfall(req.points, balance - held, program.spent_reversal)
    if split.debt:
        debts.owe(session, member.id, split.debt, now)
    posted = ledger.post(
        EntryDraft(
            kind=EntryKind.ACCRUAL_REVERSAL,
            org_id=caller.org_id,
            booked_at=now,
            reverses_id=accrual.entry_id,
            legs=[
                Leg(member.account_id, -split.taken, prefer_lots=(accrual.lot_id,)),
                Leg(
                    ledger.account_id(points_asset(program.code), ISSUED, program.id),
                    split.taken,
                ),
            ],
            obligations=obligations,
            memo=split.memo,
        )
    )
    debts.record(
        session,
        member.id,
        posted.id,
        {"recorded": split.debt, "written_off": split.written_off},
        now,
    )
    accrual.reversed_points += req.points
    session.flush()
    return AccrualReversalOut(
        accrual_id=accrual.id,
        entry_id=posted.id,
        points=req.points,
        amount_returned=sum(o.amount for o in obligations),
        reversed_points_total=accrual.reversed_points,
        points_taken=split.taken,
        debt_recorded=split.debt,
        written_off=split.written_off,
    )


def _money_returned(
    session: Session, accrual: Accrual, program: Program, points: int
) -> list[ObligationDraft]:
    """What the issuer gives back to a merchant that funded the accrual, for `points` of it:
    the share of what the merchant owed, counted cumulatively so that parts add up to the whole."""
    funder = session.get(Organisation, accrual.funding_org_id)
    assert funder is not None
    if funder.kind != OrgKind.MERCHANT:
        return []
    owed_row = repository.accrual_obligation(session, accrual.entry_id)
    if owed_row is None:
        return []
    owed, point_value, version, currency = owed_row
    before = cumulative_share(owed, accrual.reversed_points, accrual.points)
    after = cumulative_share(owed, accrual.reversed_points + points, accrual.points)
    if after - before <= 0:
        return []
    return [
        ObligationDraft(
            event_type=ObligationEvent.ACCRUAL_REVERSAL,
            payer_org_id=program.issuer_id,
            payee_org_id=funder.id,
            currency=currency,
            amount=after - before,
            program_code=program.code,
            points=points,
            point_value=point_value,
            point_value_version=version,
        )
    ]

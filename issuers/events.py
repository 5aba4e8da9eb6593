"""Program events: purchases and behaviour events earn points by the program's rules, tier and
campaigns (`issuers.earning`), posted, previewed, or as a bulk file; and the publication of
earning books and campaigns, with campaign figures."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from clearing.core.db import bulk_insert, is_postgres
from clearing.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from clearing.core.idempotency import Operation, Outcome, run_once
from clearing.core.ids import new_id
from clearing.core.kinds import OrgKind
from clearing.core.timeutil import BusinessCalendar, aware, within_horizon
from clearing.web.context import Caller
from issuers import earning_repository as repo
from issuers import repository
from issuers.accruals import post_accruals
from issuers.contexts import MemberContext, member_context, member_context_of
from issuers.earning import (
    PURCHASE,
    REFERRAL,
    CampaignRef,
    Counter,
    Earned,
    Line,
    ProgramBook,
    Purchase,
    State,
    counter_keys,
    evaluate,
)
from issuers.earning_schemas import (
    BehaviourIn,
    CampaignCreate,
    CampaignOut,
    Earning,
    EarningBookCreate,
    EarningBookOut,
    EventBatchCreate,
    EventBatchOut,
    EventCreate,
    EventOut,
    SpendRuleIn,
    Step,
)
from issuers.members import active_members
from issuers.models import (
    Campaign,
    CampaignAward,
    CampaignBudget,
    EarningBook,
    EarningRule,
    ProgramEvent,
)
from issuers.organisations import active_organisation
from issuers.programs import active_program, own_program
from issuers.qualification import upgrade_at_once
from issuers.repository import MemberRef, Party, ProgramRef
from issuers.schemas import AccrualCreate
from issuers.tiers import tiers_of

BACKDATING = timedelta(days=30)
"""How long after it happened an event may still be posted."""
_EVENTS = cast(Table, ProgramEvent.__table__)
_AWARDS = cast(Table, CampaignAward.__table__)


class EarningHistory(Conflict):
    code = "earning_history"
    title = "Earning rules history cannot change"


class CampaignExists(Conflict):
    code = "campaign_exists"
    title = "A campaign of that code exists"


# publication --------------------------------------------------------------------------------


def publish_book(
    session: Session, caller: Caller, code: str, req: EarningBookCreate, now: datetime
) -> EarningBookOut:
    """Publish a new version of a program's earning rules, effective now or later; versions
    already published never change."""
    program = own_program(session, caller, code)
    effective = within_horizon(aware(req.effective_from) if req.effective_from else now, now)
    if effective < now:
        raise EarningHistory("earning rules cannot take effect in the past")
    latest = repo.latest_book(session, program.id)
    if latest is not None and effective < aware(latest.effective_from):
        raise EarningHistory("earning rules cannot take effect before the latest version")
    events = [b.event for b in req.behaviours]
    if len(set(events)) != len(events) or PURCHASE in events:
        raise InvalidInput("behaviour events must have distinct names, none `purchase`")
    for b in req.behaviours:
        if (b.streak_days is None) != (b.streak_points is None):
            raise InvalidInput("a streak needs both streak_days and streak_points", field="streak")
    for spend_rule in req.spend_rules:
        if spend_rule.merchant_id is not None:
            merchant = repository.party_by_id(session, spend_rule.merchant_id)
            if merchant is None or merchant.kind != OrgKind.MERCHANT:
                raise InvalidInput(f"rule {spend_rule.code}: unknown merchant", field="merchant_id")
    book = EarningBook(
        id=new_id(),
        program_id=program.id,
        version=(latest.version + 1) if latest is not None else 1,
        effective_from=effective,
        min_spend=req.min_spend,
        day_cap=req.day_cap,
        month_cap=req.month_cap,
        created_at=now,
    )
    session.add(book)
    session.flush()
    rules: list[dict[str, Any]] = []
    published: list[SpendRuleIn | BehaviourIn] = [*req.spend_rules, *req.behaviours]
    for position, rule in enumerate(published):
        rules.append(_rule_row(book.id, position, rule))
    bulk_insert(session, cast(Table, EarningRule.__table__), rules)
    repo.BOOKS.changed(session)
    return EarningBookOut(
        program=code, version=book.version, **{**req.model_dump(), "effective_from": effective}
    )


def _rule_row(book_id: uuid.UUID, position: int, rule: SpendRuleIn | BehaviourIn) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(
        (
            "rate",
            "product_line",
            "merchant_category",
            "merchant_id",
            "channel",
            "points",
            "frequency",
            "max_per_period",
            "streak_days",
            "streak_points",
            "referee_points",
        )
    )
    row.update(id=new_id(), book_id=book_id, position=position)
    if isinstance(rule, SpendRuleIn):
        row.update(kind="spend", **rule.model_dump())
    else:
        fields = rule.model_dump()
        row.update(kind="behaviour", code=fields.pop("event"), **fields)
    return row


def book_in_force(session: Session, caller: Caller, code: str, at: datetime) -> EarningBookOut:
    """The version of a program's earning rules in force at `at`."""
    program = own_program(session, caller, code)
    book = repo.book_at(session, program.id, at)
    if book is None:
        raise NotFound(f"program {code} has no earning rules in force")
    spend: list[SpendRuleIn] = []
    behaviours: list[BehaviourIn] = []
    for r in repo.book_rules(session, book.id):
        if r.kind == "spend":
            spend.append(
                SpendRuleIn(
                    code=r.code,
                    rate=r.rate,
                    product_line=r.product_line,
                    merchant_category=r.merchant_category,
                    merchant_id=r.merchant_id,
                    channel=r.channel,
                )
            )
        else:
            behaviours.append(
                BehaviourIn(
                    event=r.code,
                    points=r.points or 0,
                    frequency=cast(Any, r.frequency),
                    max_per_period=r.max_per_period or 1,
                    streak_days=r.streak_days,
                    streak_points=r.streak_points,
                    referee_points=r.referee_points,
                )
            )
    return EarningBookOut(
        program=code,
        version=book.version,
        effective_from=aware(book.effective_from),
        min_spend=book.min_spend,
        day_cap=book.day_cap,
        month_cap=book.month_cap,
        spend_rules=spend,
        behaviours=behaviours,
    )


def create_campaign(
    session: Session, caller: Caller, code: str, req: CampaignCreate, now: datetime
) -> CampaignOut:
    """Publish a campaign of a program with its points budget."""
    program = own_program(session, caller, code)
    if (req.multiplier is None) == (req.bonus_points is None):
        raise InvalidInput("a campaign pays either a multiplier or bonus points", field="kind")
    if req.kind == "spend_bonus" and (req.min_spend is None or req.bonus_points is None):
        raise InvalidInput("spend X get Y needs min_spend and bonus_points", field="min_spend")
    starts = aware(req.starts_at)
    if req.ends_at is not None and aware(req.ends_at) <= starts:
        raise InvalidInput("a campaign must end after it starts", field="ends_at")
    if repo.campaign_by_code(session, program.id, req.code) is not None:
        raise CampaignExists(f"campaign {req.code} exists")
    campaign = Campaign(
        id=new_id(),
        program_id=program.id,
        created_at=now,
        **{**req.model_dump(), "starts_at": starts},
    )
    session.add(campaign)
    session.flush()
    share, rest = divmod(req.budget, repo.BUDGET_SLOTS)
    session.add_all(
        CampaignBudget(campaign_id=campaign.id, slot=slot, budget=share + (slot < rest), paid=0)
        for slot in range(repo.BUDGET_SLOTS)
    )
    session.flush()
    repo.BOOKS.changed(session)
    return _campaign_out(code, campaign, 0, 0)


def _campaign_out(code: str, c: Campaign, paid: int, members: int) -> CampaignOut:
    return CampaignOut(
        program=code,
        code=c.code,
        name=c.name,
        kind=cast(Any, c.kind),
        priority=c.priority,
        starts_at=aware(c.starts_at),
        ends_at=aware(c.ends_at) if c.ends_at is not None else None,
        days_of_month=list(c.days_of_month),
        weekdays=list(c.weekdays),
        multiplier=c.multiplier,
        bonus_points=c.bonus_points,
        min_spend=c.min_spend,
        tiers=list(c.tiers),
        min_member_days=c.min_member_days,
        max_member_days=c.max_member_days,
        budget=c.budget,
        paid=paid,
        remaining=c.budget - paid,
        members_reached=members,
        exhausted=paid >= c.budget,
    )


def campaigns(session: Session, caller: Caller, code: str) -> list[CampaignOut]:
    """A program's campaigns with their figures: points paid against budget, members reached."""
    program = own_program(session, caller, code)
    return [_campaign_out(code, c, p, m) for c, p, m in repo.campaigns_of(session, program.id)]


def campaign(session: Session, caller: Caller, code: str, campaign_code: str) -> CampaignOut:
    """One campaign of a program with its figures."""
    found = [c for c in campaigns(session, caller, code) if c.code == campaign_code]
    if not found:
        raise NotFound(f"unknown campaign {campaign_code}")
    return found[0]


# events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reads:
    """What a set of events of one poster reads before evaluating them."""

    poster: Party
    program: ProgramRef
    issuer: Party
    members: dict[str, MemberRef]
    context: MemberContext | None = None


def post_event(
    session: Session,
    caller: Caller,
    code: str,
    req: EventCreate,
    now: datetime,
    idempotency_key: str,
) -> Outcome[EventOut]:
    """Post one purchase or behaviour event: it earns by the rules, tier and campaigns."""
    return run_once(
        session,
        caller.org_id,
        idempotency_key,
        event_operation(session, caller, code, req, now),
        now,
    )


def event_operation(
    session: Session, caller: Caller, code: str, req: EventCreate, now: datetime
) -> Operation[EventOut]:
    """One event as an idempotent operation (run now, or on a review's approval)."""

    def run(row: Any | None) -> EventOut:
        context = member_context_of(row, code, req.external_id)
        posted = _post(
            session, caller, code, [req], now, _single_reads(session, req, context), preview=False
        )
        return _out(code, posted[0], preview=False)

    return Operation(
        "program_event",
        {"program": code, **req.model_dump(mode="json")},
        EventOut,
        run,
        repository.member_context_read(caller.org_id, code, req.external_id, now),
    )


def preview_event(
    session: Session, caller: Caller, code: str, req: EventCreate, now: datetime
) -> EventOut:
    """What the event would earn now, written nowhere (no counter, budget or ledger changes)."""
    context = member_context(session, caller.org_id, code, req.external_id, now)
    posted = _post(
        session, caller, code, [req], now, _single_reads(session, req, context), preview=True
    )
    return _out(code, posted[0], preview=True)


def post_event_batch(
    session: Session,
    caller: Caller,
    code: str,
    req: EventBatchCreate,
    now: datetime,
    idempotency_key: str,
) -> Outcome[EventBatchOut]:
    """A partner's bulk file of events, evaluated together and posted in one transaction: all
    lines or none."""
    return run_once(
        session,
        caller.org_id,
        idempotency_key,
        event_batch_operation(session, caller, code, req, now),
        now,
    )


def event_batch_operation(
    session: Session, caller: Caller, code: str, req: EventBatchCreate, now: datetime
) -> Operation[EventBatchOut]:
    """A bulk file of events as one idempotent operation."""

    def run(_: None) -> EventBatchOut:
        posted = _post(
            session,
            caller,
            code,
            req.items,
            now,
            _file_reads(session, caller, code, req.items),
            preview=False,
        )
        return EventBatchOut(
            count=len(posted),
            points=sum(e.points for p in posted for e in p.group),
            event_ids=[i for p in posted for i in p.ids],
            accrual_ids=[a for p in posted for a in p.accrual_ids if a is not None],
        )

    return Operation(
        "program_event_batch", {"program": code, **req.model_dump(mode="json")}, EventBatchOut, run
    )


def _single_reads(session: Session, req: EventCreate, context: MemberContext) -> _Reads:
    poster = _may_post(context.caller, context.program)
    members = {req.external_id: context.active_member()}
    if req.referred_external_id is not None:
        members.update(
            {
                m.external_id: m
                for m in active_members(
                    session, [(context.program, req.referred_external_id)]
                ).values()
            }
        )
    return _Reads(poster, context.program, context.issuer, members, context)


def _file_reads(
    session: Session, caller: Caller, code: str, items: Sequence[EventCreate]
) -> _Reads:
    program, issuer = active_program(session, code)
    poster = _may_post(active_organisation(session, caller.org_id), program)
    wanted = list(
        dict.fromkeys(
            [i.external_id for i in items]
            + [i.referred_external_id for i in items if i.referred_external_id is not None]
        )
    )
    found = active_members(session, [(program, e) for e in wanted])
    return _Reads(poster, program, issuer, {m.external_id: m for m in found.values()})


def _may_post(poster: Party, program: ProgramRef) -> Party:
    """The poster funds what its events earn: the program's issuer, or a merchant (which the
    risk policy holds to its agreement when the points post)."""
    if poster.kind == OrgKind.ISSUER and poster.id == program.issuer_id:
        return poster
    if poster.kind == OrgKind.MERCHANT:
        return poster
    raise (
        NotFound(f"unknown program {program.code}")
        if poster.kind == OrgKind.ISSUER
        else Forbidden("only the program's issuer and merchants post events")
    )


def _lines(
    reads: _Reads, items: Sequence[EventCreate], now: datetime, calendar: BusinessCalendar
) -> list[Line]:
    lines: list[Line] = []
    for item in items:
        at = aware(item.occurred_at) if item.occurred_at is not None else now
        if at > now or at < now - BACKDATING:
            raise InvalidInput(
                f"an event is posted at most {BACKDATING.days} days after it happened, never before",
                field="occurred_at",
            )
        member = reads.members[item.external_id]
        purchase = None
        referee = None
        if item.kind == PURCHASE:
            purchase = _purchase(reads, item)
        elif item.spend is not None:
            raise InvalidInput("only purchases carry a spend", field="spend")
        if item.kind == REFERRAL:
            if item.referred_external_id is None or item.referred_external_id == item.external_id:
                raise InvalidInput(
                    "a referral names another member it referred", field="referred_external_id"
                )
            referee = reads.members[item.referred_external_id]
        lines.append(Line(member, item.kind, at, calendar.date_of(at), purchase, referee=referee))
    return lines


def _purchase(reads: _Reads, item: EventCreate) -> Purchase:
    if item.spend is None:
        raise InvalidInput("a purchase carries its spend", field="spend")
    currency = item.currency or reads.issuer.currency
    if currency != reads.issuer.currency:
        raise InvalidInput(
            f"program {reads.program.code} earns on spend in {reads.issuer.currency}",
            field="currency",
        )
    merchant = item.merchant_id
    if reads.poster.kind == OrgKind.MERCHANT:
        if merchant is not None and merchant != reads.poster.id:
            raise Forbidden("a merchant posts its own purchases only")
        merchant = reads.poster.id
    return Purchase(
        item.spend, currency, merchant, item.merchant_category, item.product_line, item.channel
    )


def _post(
    session: Session,
    caller: Caller,
    code: str,
    items: Sequence[EventCreate],
    now: datetime,
    reads: _Reads,
    preview: bool,
) -> list[_Posted]:
    """Evaluate events in memory against what a few statements read, then (unless previewing)
    write counters, budgets, the accruals (one `post_accruals` call), events and awards."""
    book_of = repo.program_book(session, reads.program.id, reads.issuer.id)
    lines = _lines(reads, items, now, BusinessCalendar(book_of.zone, "00:00"))
    purchasers = [ln.member for ln in lines if ln.kind == PURCHASE]
    keys = [k for ln in lines for k in counter_keys(book_of.book_at(ln.at), ln)]
    running = {
        c.id
        for ln in lines
        if ln.kind == PURCHASE
        for c in book_of.campaigns
        if c.runs_at(ln.at, ln.day)
    }
    distinct = list({m.id: m for m in purchasers}.values())
    one = len(lines) == 1 and not preview
    if one and is_postgres(session):
        # A single event's reads (tier, counters locked, budget slots taken) in one round trip.
        tier, counted, held = repo.single_event_reads(
            session, distinct[0] if distinct else None, keys, running
        )
        tiers = {distinct[0].id: tier} if distinct else {}
    else:
        tiers = tiers_of(session, distinct) if distinct else {}
        counted = repo.counters(session, keys, lock=not preview) if keys else {}
        held = repo.budget_slots(session, running, lock=not preview, one=one)
    ages = any(c.targets_age for c in book_of.campaigns)
    since = repo.members_since(session, [m.id for m in purchasers]) if ages and purchasers else {}
    lines = [
        Line(
            ln.member,
            ln.kind,
            ln.at,
            ln.day,
            ln.purchase,
            tiers.get(ln.member.id),
            since.get(ln.member.id),
            ln.referee,
        )
        for ln in lines
    ]
    state, earned = _evaluated(book_of, lines, counted, held)
    if one and state.short:
        # The single event held one slot of a campaign and it could not pay in full: take every
        # other slot with budget left that no concurrent event holds, and evaluate again.
        held.update(repo.more_slots(session, state.short, held))
        state, earned = _evaluated(book_of, lines, counted, held)
    posted: list[_Posted] = []
    if preview:
        return [
            _Posted(item, ln, group, [None] * len(group), [new_id() for _ in group])
            for item, ln, group in zip(items, lines, earned, strict=True)
        ]
    paying = [e for group in earned for e in group if e.points > 0]
    accruals = (
        post_accruals(
            session,
            caller,
            [
                # Built from values already checked (the event's schema, the engine's bounds).
                AccrualCreate.model_construct(
                    program=code,
                    external_id=e.member.external_id,
                    points=e.points,
                    reference=item.reference,
                )
                for item, group in zip(items, earned, strict=True)
                for e in group
                if e.points > 0
            ],
            now,
            # A single accrual reuses the context the event read with its idempotency claim.
            reads.context
            if len(paying) == 1 and paying[0].member.external_id == items[0].external_id
            else None,
            upgrade_tiers=False,
        )
        if paying
        else []
    )
    accrual_of = {id(e): a.id for e, a in zip(paying, accruals, strict=True)}
    events: list[dict[str, Any]] = []
    awards: list[dict[str, Any]] = []
    for item, ln, group in zip(items, lines, earned, strict=True):
        ids = [new_id() for _ in group]
        accrual_ids = [accrual_of.get(id(e)) for e in group]
        for event_id, accrual_id, e in zip(ids, accrual_ids, group, strict=True):
            events.append(
                {
                    "id": event_id,
                    "program_id": reads.program.id,
                    "member_id": e.member.id,
                    "kind": e.kind,
                    "reference": item.reference,
                    "posted_by": reads.poster.id,
                    "occurred_at": ln.at,
                    "spend": ln.purchase.spend if ln.purchase is not None else None,
                    "currency": ln.purchase.currency if ln.purchase is not None else None,
                    "points": e.points,
                    "accrual_id": accrual_id,
                    "explanation": [s.as_dict() for s in e.steps],
                    "refunded_spend": 0,
                    "created_at": now,
                }
            )
            awards.extend(
                {
                    "id": new_id(),
                    "campaign_id": cid,
                    "event_id": event_id,
                    "member_id": e.member.id,
                    "points": p,
                    "created_at": now,
                }
                for cid, p in e.awards
            )
        posted.append(_Posted(item, ln, group, accrual_ids, ids))
    repo.write_events(session, state, events, awards)
    # Tiers move up once the events' spend is written too: a purchase that reaches a spend
    # threshold upgrades its member at once, not at the next accrual.
    upgrade_at_once(session, [e.member for group in earned for e in group], now)
    return posted


@dataclass(frozen=True, slots=True)
class _Posted:
    """One event as evaluated (and posted): what each member earned, their accruals and events."""

    item: EventCreate
    line: Line
    group: list[Earned]
    accrual_ids: list[uuid.UUID | None]
    ids: list[uuid.UUID]


def _evaluated(
    book_of: ProgramBook,
    lines: list[Line],
    counted: dict[tuple[uuid.UUID, str], Counter],
    held: dict[tuple[uuid.UUID, int], int],
) -> tuple[State, list[list[Earned]]]:
    """The lines evaluated in order against fresh copies of the counters and the budget held."""
    remaining: dict[uuid.UUID, int] = {}
    for (campaign_id, _), left in held.items():
        remaining[campaign_id] = remaining.get(campaign_id, 0) + left
    counters = {k: Counter(c.count, c.points, c.last_day) for k, c in counted.items()}
    state = State(counters, remaining)
    # The campaigns running at an instant, found once per instant (a file's lines share one).
    running: dict[tuple[datetime, date], tuple[CampaignRef, ...]] = {}
    earned = []
    for ln in lines:
        when = (ln.at, ln.day)
        if when not in running:
            running[when] = tuple(c for c in book_of.campaigns if c.runs_at(*when))
        earned.append(evaluate(book_of.book_at(ln.at), running[when], ln, state))
    state.slots = held
    return state, earned


def _out(code: str, posted: _Posted, preview: bool) -> EventOut:
    item, line, group, accrual_ids, ids = (
        posted.item,
        posted.line,
        posted.group,
        posted.accrual_ids,
        posted.ids,
    )
    return EventOut(
        program=code,
        kind=item.kind,
        reference=item.reference,
        occurred_at=line.at,
        points=sum(e.points for e in group),
        earnings=[
            Earning(
                event_id=event_id,
                external_id=e.member.external_id,
                kind=e.kind,
                points=e.points,
                accrual_id=accrual_id,
                explanation=[
                    Step(step=s.step, ref=s.ref, points=s.points, note=s.note) for s in e.steps
                ],
            )
            for event_id, accrual_id, e in zip(ids, accrual_ids, group, strict=True)
        ],
        preview=preview,
    )

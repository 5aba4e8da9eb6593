"""Routes of organisations, keys, programs, members, accruals and member links (thin)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy.orm import Session

from clearing.core.errors import InvalidInput, NotFound
from clearing.core.idempotency import Operation
from clearing.core.schemas import Code, ExternalId
from clearing.core.timeutil import aware, utcnow
from clearing.web.api import (
    JSON,
    After,
    IdempotencyKey,
    Limit,
    Page,
    SessionDep,
    decode_cursor,
    encode_cursor,
    json_response,
    once_response,
    respond_once,
)
from clearing.web.auth import CallerDep, OperatorDep
from issuers import (
    accruals,
    adjustments,
    agreements,
    debts,
    enrolment,
    events,
    expiring,
    keys,
    members,
    organisations,
    programs,
    refunds,
    statements,
    tokens,
    transfers,
)
from issuers.earning_schemas import (
    CampaignCreate,
    CampaignOut,
    EarningBookCreate,
    EarningBookOut,
    EventBatchCreate,
    EventBatchOut,
    EventCreate,
    EventOut,
)
from issuers.models import Organisation
from issuers.schemas import (
    AccrualBatchCreate,
    AccrualBatchOut,
    AccrualCreate,
    AccrualOut,
    AccrualReversalCreate,
    AccrualReversalOut,
    AdjustmentCreate,
    AdjustmentOut,
    AgreementCreate,
    AgreementOut,
    EventRefundCreate,
    EventRefundOut,
    ExpiryNoticeOut,
    InterchangeOut,
    InterchangeSet,
    LinkTokenCreate,
    MemberBatchCreate,
    MemberBatchOut,
    MemberCreate,
    MemberExpiringOut,
    MemberLinkCreate,
    MemberLinkOut,
    MemberOut,
    MemberStatusUpdate,
    MemberTokenOut,
    MerchantTrustOut,
    MerchantTrustSet,
    OrganisationCreate,
    OrganisationOut,
    OrganisationPatch,
    OrganisationUpdate,
    PaymentTokenCreate,
    PointValueCreate,
    PointValueOut,
    ProgramCreate,
    ProgramExpiringOut,
    ProgramExpiryOut,
    ProgramExpirySet,
    ProgramOut,
    ReturnPolicyOut,
    ReturnPolicySet,
    StatementLine,
    TransferCreate,
    TransferOut,
    TransferRuleOut,
    TransferRuleSet,
)

router = APIRouter(prefix="/v1")

CodePath = Annotated[Code, Path()]
ExternalIdPath = Annotated[ExternalId, Path()]
KeyIdPath = Annotated[str, Path(max_length=100)]


# operator ------------------------------------------------------------------------------------


@router.post("/organizations", tags=["operator"], status_code=201, response_model=OrganisationOut)
def create_organisation(
    caller: OperatorDep, key: IdempotencyKey, req: OrganisationCreate, session: SessionDep
) -> Response:
    """Onboard an issuer or a merchant (operator only)."""
    now = utcnow()
    operation = Operation(
        "organisation",
        req,
        OrganisationOut,
        lambda _: organisations.organisation_out(
            organisations.create_organisation(session, req, now)
        ),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.get("/organizations/{org_id}", tags=["operator"], response_model=OrganisationOut)
def get_organisation(caller: OperatorDep, org_id: uuid.UUID, session: SessionDep) -> Response:
    """An organisation (operator only)."""
    return json_response(organisations.organisation_out(_organisation(session, org_id)))


@router.patch("/organizations/{org_id}", tags=["operator"], response_model=OrganisationOut)
def update_organisation(
    caller: OperatorDep, org_id: uuid.UUID, req: OrganisationPatch, session: SessionDep
) -> Response:
    """Suspend or reactivate an organisation, set its fee rates and merchant terms."""
    update = OrganisationUpdate.model_validate(req.model_dump(exclude={"terms"}))
    org = organisations.update_organisation(session, org_id, update)
    for term in req.terms or ():
        programs.set_merchant_term(session, org_id, term)
    return json_response(organisations.organisation_out(org))


@router.post(
    "/organizations/{org_id}/keys",
    tags=["operator"],
    status_code=201,
    response_model=keys.ApiKeyOut,
)
def add_key(
    caller: OperatorDep,
    key: IdempotencyKey,
    org_id: uuid.UUID,
    req: keys.ApiKeyCreate,
    session: SessionDep,
) -> Response:
    """Register a public key (PEM or JWK) for an organisation; rotation adds before revoking."""
    now = utcnow()
    operation = Operation(
        "api_key",
        {"org": str(org_id), **req.model_dump(mode="json")},
        keys.ApiKeyOut,
        lambda _: keys.add_key(session, org_id, req, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.get("/organizations/{org_id}/keys", tags=["operator"], response_model=list[keys.ApiKeyOut])
def list_keys(caller: OperatorDep, org_id: uuid.UUID, session: SessionDep) -> list[keys.ApiKeyOut]:
    """Every key of an organisation, revoked ones included."""
    _organisation(session, org_id)
    return keys.list_keys(session, org_id)


@router.delete(
    "/organizations/{org_id}/keys/{keyid}", tags=["operator"], response_model=keys.ApiKeyOut
)
def revoke_key(
    caller: OperatorDep, org_id: uuid.UUID, keyid: KeyIdPath, session: SessionDep
) -> Response:
    """Revoke a key at once; requests signed with it are refused from now on."""
    return json_response(keys.revoke_key(session, keyid, utcnow(), org_id=org_id))


def _organisation(session: Session, org_id: uuid.UUID) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None:
        raise NotFound("unknown organisation")
    return org


# programs ------------------------------------------------------------------------------------


@router.get("/programs", tags=["programs"], response_model=Page[ProgramOut])
def list_programs(
    caller: CallerDep, session: SessionDep, after: After = None, limit: Limit = 50
) -> Response:
    """Every program with its issuer and current point value, by code."""
    cursor = decode_cursor(after, 1)[0] if after else None
    rows = programs.list_programs(session, utcnow(), cursor, limit + 1)
    more = len(rows) > limit
    page = rows[:limit]
    return json_response(
        Page[ProgramOut](items=page, next=encode_cursor(page[-1].code) if more else None)
    )


@router.post("/programs", tags=["programs"], status_code=201, response_model=ProgramOut)
def create_program(
    caller: CallerDep, key: IdempotencyKey, req: ProgramCreate, session: SessionDep
) -> Response:
    """Register the calling issuer's program with its first point value."""
    now = utcnow()
    operation = Operation(
        "program",
        req,
        ProgramOut,
        lambda _: programs.create_program(session, caller, req, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.post(
    "/programs/{code}/point-values",
    tags=["programs"],
    status_code=201,
    response_model=PointValueOut,
)
def add_point_value(
    caller: CallerDep,
    key: IdempotencyKey,
    code: CodePath,
    req: PointValueCreate,
    session: SessionDep,
) -> Response:
    """Publish a new point value of one of the caller's programs, effective now or later."""
    now = utcnow()
    operation = Operation(
        "point_value",
        {"program": code, **req.model_dump(mode="json")},
        PointValueOut,
        lambda _: programs.add_point_value(session, caller, code, req, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


# members -------------------------------------------------------------------------------------


@router.post(
    "/programs/{code}/members", tags=["members"], status_code=201, response_model=MemberOut
)
def create_member(
    caller: CallerDep,
    key: IdempotencyKey,
    code: CodePath,
    req: MemberCreate,
    session: SessionDep,
) -> Response:
    """Enrol a member of one of the caller's programs."""
    now = utcnow()
    operation = Operation(
        "member",
        {"program": code, **req.model_dump(mode="json")},
        MemberOut,
        lambda _: members.create_member(session, caller, code, req, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.get("/programs/{code}/members/{external_id}", tags=["members"], response_model=MemberOut)
def get_member(
    caller: CallerDep, code: CodePath, external_id: ExternalIdPath, session: SessionDep
) -> Response:
    """Balance, held and available points of one of the caller's members."""
    return json_response(members.member_view(session, caller, code, external_id, utcnow()))


@router.patch("/programs/{code}/members/{external_id}", tags=["members"], response_model=MemberOut)
def set_member_status(
    caller: CallerDep,
    code: CodePath,
    external_id: ExternalIdPath,
    req: MemberStatusUpdate,
    session: SessionDep,
) -> Response:
    """Freeze, unfreeze or close one of the caller's members."""
    members.set_member_status(session, caller, code, external_id, req.status)
    return json_response(members.member_view(session, caller, code, external_id, utcnow()))


@router.get(
    "/programs/{code}/members/{external_id}/statement",
    tags=["members"],
    response_model=Page[StatementLine],
)
def get_statement(
    caller: CallerDep,
    code: CodePath,
    external_id: ExternalIdPath,
    session: SessionDep,
    after: After = None,
    limit: Limit = 50,
) -> Response:
    """Every movement of a member's points, oldest first, a page at a time."""
    booked_after: datetime | None = None
    entry_after: uuid.UUID | None = None
    if after:
        booked, entry = decode_cursor(after, 2)
        try:
            booked_after, entry_after = datetime.fromisoformat(booked), uuid.UUID(entry)
        except ValueError:
            raise InvalidInput("invalid cursor", field="after") from None
    lines = statements.statement(
        session, caller, code, external_id, booked_after, limit + 1, after_entry=entry_after
    )
    more = len(lines) > limit
    page = lines[:limit]
    last = page[-1] if page else None
    cursor = encode_cursor(last.booked_at.isoformat(), last.entry_id) if more and last else None
    return json_response(Page[StatementLine](items=page, next=cursor))


@router.post("/member-links", tags=["members"], status_code=201, response_model=MemberLinkOut)
def link_members(
    caller: CallerDep, key: IdempotencyKey, req: MemberLinkCreate, session: SessionDep
) -> Response:
    """The target issuer lets its member receive points converted from a source member."""
    now = utcnow()
    operation = Operation(
        "member_link",
        req,
        MemberLinkOut,
        lambda _: tokens.link_members(session, caller, req, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.post(
    "/programs/{code}/members/{external_id}/payment-tokens",
    tags=["members"],
    status_code=201,
    response_model=MemberTokenOut,
)
def mint_payment_token(
    caller: CallerDep,
    key: IdempotencyKey,
    code: CodePath,
    external_id: ExternalIdPath,
    req: PaymentTokenCreate,
    session: SessionDep,
    request: Request,
) -> Response:
    """Mint a one-time payment token for one of the caller's members (their consent to pay)."""
    secret = tokens.token_secret(request.app.state.platform_key.private_key)
    out, replayed = tokens.mint_payment_token(
        session, caller, code, external_id, req, utcnow(), key, secret
    )
    return _token_response(out, replayed)


@router.post(
    "/programs/{code}/members/{external_id}/link-tokens",
    tags=["members"],
    status_code=201,
    response_model=MemberTokenOut,
)
def mint_link_token(
    caller: CallerDep,
    key: IdempotencyKey,
    code: CodePath,
    external_id: ExternalIdPath,
    req: LinkTokenCreate,
    session: SessionDep,
    request: Request,
) -> Response:
    """Mint a one-time link token for one of the caller's members (their consent to a link)."""
    secret = tokens.token_secret(request.app.state.platform_key.private_key)
    out, replayed = tokens.mint_link_token(
        session, caller, code, external_id, req, utcnow(), key, secret
    )
    return _token_response(out, replayed)


def _token_response(out: MemberTokenOut, replayed: bool) -> Response:
    # The stored result lacks the token, so a replay is rebuilt rather than sent as stored; the
    # token is derived again, so the replay is still the first answer byte for byte.
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(out.model_dump_json().encode(), 201, headers=headers, media_type=JSON)


@router.patch(
    "/programs/{code}/merchants/{merchant_id}",
    tags=["programs"],
    response_model=MerchantTrustOut,
)
def set_merchant_trust(
    caller: CallerDep,
    code: CodePath,
    merchant_id: uuid.UUID,
    req: MerchantTrustSet,
    session: SessionDep,
) -> Response:
    """Let a merchant check out the program's points without payment tokens, or stop it."""
    return json_response(tokens.set_merchant_trust(session, caller, code, merchant_id, req))


# accruals ------------------------------------------------------------------------------------


@router.post("/accruals", tags=["accruals"], status_code=201, response_model=AccrualOut)
def accrue(
    caller: CallerDep, key: IdempotencyKey, req: AccrualCreate, session: SessionDep
) -> Response:
    """Credit points to a member: by its issuer, or funded by the calling merchant."""
    outcome = accruals.accrue(session, caller, req, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


@router.post("/accrual-batches", tags=["accruals"], status_code=201, response_model=AccrualBatchOut)
def accrue_batch(
    caller: CallerDep, key: IdempotencyKey, req: AccrualBatchCreate, session: SessionDep
) -> Response:
    """A partner's bulk file of accruals, posted in one transaction: every line or none."""
    outcome = accruals.accrue_batch(session, caller, req, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


@router.post(
    "/accruals/{accrual_id}/reversals",
    tags=["accruals"],
    status_code=201,
    response_model=AccrualReversalOut,
)
def reverse_accrual(
    caller: CallerDep,
    key: IdempotencyKey,
    accrual_id: uuid.UUID,
    req: AccrualReversalCreate,
    session: SessionDep,
) -> Response:
    """Take back points of an accrual (goods returned), by its issuer or its funder."""
    outcome = accruals.reverse_accrual(session, caller, accrual_id, req, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


# agreements and interchange ------------------------------------------------------------------


@router.post("/agreements", tags=["agreements"], status_code=201, response_model=AgreementOut)
def propose_agreement(
    caller: CallerDep, key: IdempotencyKey, req: AgreementCreate, session: SessionDep
) -> Response:
    """Propose what a merchant may do with a program's points (the other side approves)."""
    now = utcnow()
    operation = Operation(
        "agreement", req, AgreementOut, lambda _: agreements.propose(session, caller, req, now)
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.post(
    "/agreements/{agreement_id}/approve",
    tags=["agreements"],
    status_code=201,
    response_model=AgreementOut,
)
def approve_agreement(
    caller: CallerDep, key: IdempotencyKey, agreement_id: uuid.UUID, session: SessionDep
) -> Response:
    """Approve the other side's proposal: it comes into force, superseding the one before."""
    now = utcnow()
    operation = Operation(
        "agreement_approval",
        {"agreement": str(agreement_id)},
        AgreementOut,
        lambda _: agreements.approve(session, caller, agreement_id, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.post(
    "/agreements/{agreement_id}/end",
    tags=["agreements"],
    status_code=201,
    response_model=AgreementOut,
)
def end_agreement(
    caller: CallerDep, key: IdempotencyKey, agreement_id: uuid.UUID, session: SessionDep
) -> Response:
    """End an agreement, or withdraw a proposal (either side)."""
    now = utcnow()
    operation = Operation(
        "agreement_end",
        {"agreement": str(agreement_id)},
        AgreementOut,
        lambda _: agreements.end(session, caller, agreement_id, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.get("/agreements", tags=["agreements"], response_model=list[AgreementOut])
def list_agreements(caller: CallerDep, session: SessionDep) -> list[AgreementOut]:
    """The caller's agreements, as merchant or as issuer of the program."""
    return agreements.list_agreements(session, caller)


@router.put("/interchange/{counterparty_id}", tags=["agreements"], response_model=InterchangeOut)
def set_interchange(
    caller: CallerDep, counterparty_id: uuid.UUID, req: InterchangeSet, session: SessionDep
) -> Response:
    """Consent (or stop consenting) to exchange points with another issuer."""
    return json_response(
        agreements.set_interchange(session, caller, counterparty_id, req, utcnow())
    )


# returns, adjustments, transfers -------------------------------------------------------------


@router.put("/programs/{code}/return-policy", tags=["programs"], response_model=ReturnPolicyOut)
def set_return_policy(
    caller: CallerDep, code: CodePath, req: ReturnPolicySet, session: SessionDep
) -> Response:
    """What a reversal of points the member already spent does: a member debt, or the rest
    written off."""
    return json_response(debts.set_return_policy(session, caller, code, req))


@router.get("/programs/{code}/return-policy", tags=["programs"], response_model=ReturnPolicyOut)
def get_return_policy(caller: CallerDep, code: CodePath, session: SessionDep) -> Response:
    """What a reversal of points the member already spent does in one of the caller's programs."""
    return json_response(debts.return_policy(session, caller, code))


@router.post(
    "/programs/{code}/events/{event_id}/refunds",
    tags=["accruals"],
    status_code=201,
    response_model=EventRefundOut,
)
def refund_event(
    caller: CallerDep,
    key: IdempotencyKey,
    code: CodePath,
    event_id: uuid.UUID,
    req: EventRefundCreate,
    session: SessionDep,
) -> Response:
    """Refund part of a purchase event's spend: its points go back in proportion."""
    outcome = refunds.refund_event(session, caller, code, event_id, req, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


@router.post(
    "/programs/{code}/adjustments",
    tags=["adjustments"],
    status_code=201,
    response_model=AdjustmentOut,
)
def propose_adjustment(
    caller: CallerDep,
    key: IdempotencyKey,
    code: CodePath,
    req: AdjustmentCreate,
    session: SessionDep,
) -> Response:
    """Propose a credit or debit of a member's points (another key of the issuer decides)."""
    outcome = adjustments.propose(session, caller, code, req, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


@router.get(
    "/programs/{code}/adjustments", tags=["adjustments"], response_model=list[AdjustmentOut]
)
def list_adjustments(
    caller: CallerDep,
    code: CodePath,
    session: SessionDep,
    status: Literal["proposed", "approved", "rejected"] | None = None,
    limit: Limit = 50,
) -> list[AdjustmentOut]:
    """The program's adjustments with every step, latest first."""
    return adjustments.list_adjustments(session, caller, code, status, limit)


@router.post(
    "/programs/{code}/adjustments/{adjustment_id}/approve",
    tags=["adjustments"],
    status_code=201,
    response_model=AdjustmentOut,
)
def approve_adjustment(
    caller: CallerDep,
    key: IdempotencyKey,
    code: CodePath,
    adjustment_id: uuid.UUID,
    session: SessionDep,
) -> Response:
    """Approve a proposed adjustment with a different key: its entry is posted."""
    outcome = adjustments.decide(session, caller, code, adjustment_id, True, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


@router.post(
    "/programs/{code}/adjustments/{adjustment_id}/reject",
    tags=["adjustments"],
    status_code=201,
    response_model=AdjustmentOut,
)
def reject_adjustment(
    caller: CallerDep,
    key: IdempotencyKey,
    code: CodePath,
    adjustment_id: uuid.UUID,
    session: SessionDep,
) -> Response:
    """Reject a proposed adjustment with a different key: nothing is posted."""
    outcome = adjustments.decide(session, caller, code, adjustment_id, False, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


@router.put("/programs/{code}/transfer-rules", tags=["transfers"], response_model=TransferRuleOut)
def set_transfer_rules(
    caller: CallerDep, code: CodePath, req: TransferRuleSet, session: SessionDep
) -> Response:
    """Whether members may transfer points, the fee in points and the bounds per transfer."""
    return json_response(transfers.set_rules(session, caller, code, req, utcnow()))


@router.get("/programs/{code}/transfer-rules", tags=["transfers"], response_model=TransferRuleOut)
def get_transfer_rules(caller: CallerDep, code: CodePath, session: SessionDep) -> Response:
    """The program's transfer rules."""
    return json_response(transfers.rules(session, caller, code))


@router.post(
    "/programs/{code}/transfers", tags=["transfers"], status_code=201, response_model=TransferOut
)
def transfer(
    caller: CallerDep,
    key: IdempotencyKey,
    code: CodePath,
    req: TransferCreate,
    session: SessionDep,
) -> Response:
    """Move points between two members of the caller's program; the sender pays the fee."""
    outcome = transfers.transfer(session, caller, code, req, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


# expiry and enrolment at scale ---------------------------------------------------------------

Days = Annotated[int, Query(ge=1, le=3660, description="Window in days from now")]


@router.put("/programs/{code}/expiry-policy", tags=["programs"], response_model=ProgramExpiryOut)
def set_expiry_policy(
    caller: CallerDep, code: CodePath, req: ProgramExpirySet, session: SessionDep
) -> Response:
    """Set one of the caller's programs' expiry policy (for points earned from now on), its
    notice window and enrolment on first accrual."""
    return json_response(expiring.set_expiry_policy(session, caller, code, req))


@router.get("/programs/{code}/expiring", tags=["programs"], response_model=ProgramExpiringOut)
def program_expiring(
    caller: CallerDep,
    code: CodePath,
    session: SessionDep,
    days: Days = 90,
    after: After = None,
    limit: Limit = 50,
) -> Response:
    """Points of one of the caller's programs expiring within `days`: totals, members by id."""
    start = decode_cursor(after, 1)[0] if after else None
    found = expiring.program_expiring(session, caller, code, utcnow(), days, start, limit)
    if found.next is not None:
        found.next = encode_cursor(found.next)
    return json_response(found)


@router.get(
    "/programs/{code}/members/{external_id}/expiring",
    tags=["members"],
    response_model=MemberExpiringOut,
)
def member_expiring(
    caller: CallerDep,
    code: CodePath,
    external_id: ExternalIdPath,
    session: SessionDep,
    days: Days = 90,
) -> Response:
    """A member's points expiring within `days`, by expiry instant."""
    return json_response(
        expiring.member_expiring(session, caller, code, external_id, utcnow(), days)
    )


@router.get(
    "/programs/{code}/expiry-notices", tags=["programs"], response_model=Page[ExpiryNoticeOut]
)
def expiry_notices(
    caller: CallerDep,
    code: CodePath,
    session: SessionDep,
    after: After = None,
    limit: Limit = 50,
) -> Response:
    """The expiry notices the daily job recorded for one of the caller's programs, oldest first."""
    start: uuid.UUID | None = None
    if after:
        try:
            start = uuid.UUID(decode_cursor(after, 1)[0])
        except ValueError:
            raise InvalidInput("invalid cursor", field="after") from None
    rows = expiring.list_notices(session, caller, code, start, limit + 1)
    page = rows[:limit]
    cursor = encode_cursor(page[-1].id) if len(rows) > limit and page else None
    return json_response(Page[ExpiryNoticeOut](items=page, next=cursor))


@router.post(
    "/programs/{code}/members/batch",
    tags=["members"],
    status_code=201,
    response_model=MemberBatchOut,
)
def enrol_members(
    caller: CallerDep,
    key: IdempotencyKey,
    code: CodePath,
    req: MemberBatchCreate,
    session: SessionDep,
) -> Response:
    """Enrol a list of members of one of the caller's programs, set-based: all or none."""
    outcome = enrolment.enrol_batch(session, caller, code, req, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


# earning rules, campaigns and events ---------------------------------------------------------

CampaignPath = Annotated[Code, Path()]


@router.post(
    "/programs/{code}/earning-rules",
    tags=["earning"],
    status_code=201,
    response_model=EarningBookOut,
)
def publish_earning_rules(
    caller: CallerDep,
    key: IdempotencyKey,
    code: CodePath,
    req: EarningBookCreate,
    session: SessionDep,
) -> Response:
    """Publish a new version of the program's earning rules (spend rules, behaviours, caps)."""
    now = utcnow()
    operation = Operation(
        "earning_book",
        {"program": code, **req.model_dump(mode="json")},
        EarningBookOut,
        lambda _: events.publish_book(session, caller, code, req, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.get("/programs/{code}/earning-rules", tags=["earning"], response_model=EarningBookOut)
def get_earning_rules(
    caller: CallerDep, code: CodePath, session: SessionDep, at: datetime | None = None
) -> Response:
    """The version of the program's earning rules in force now (or at `at`)."""
    when = aware(at) if at is not None else utcnow()
    return json_response(events.book_in_force(session, caller, code, when))


@router.post(
    "/programs/{code}/campaigns", tags=["earning"], status_code=201, response_model=CampaignOut
)
def create_campaign(
    caller: CallerDep,
    key: IdempotencyKey,
    code: CodePath,
    req: CampaignCreate,
    session: SessionDep,
) -> Response:
    """Publish a campaign of the program with its points budget."""
    now = utcnow()
    operation = Operation(
        "campaign",
        {"program": code, **req.model_dump(mode="json")},
        CampaignOut,
        lambda _: events.create_campaign(session, caller, code, req, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.get("/programs/{code}/campaigns", tags=["earning"], response_model=list[CampaignOut])
def list_campaigns(caller: CallerDep, code: CodePath, session: SessionDep) -> list[CampaignOut]:
    """The program's campaigns with their figures: points paid against budget, members reached."""
    return events.campaigns(session, caller, code)


@router.get(
    "/programs/{code}/campaigns/{campaign_code}", tags=["earning"], response_model=CampaignOut
)
def get_campaign(
    caller: CallerDep, code: CodePath, campaign_code: CampaignPath, session: SessionDep
) -> Response:
    """One campaign with its figures."""
    return json_response(events.campaign(session, caller, code, campaign_code))


@router.post("/programs/{code}/events", tags=["earning"], status_code=201, response_model=EventOut)
def post_event(
    caller: CallerDep, key: IdempotencyKey, code: CodePath, req: EventCreate, session: SessionDep
) -> Response:
    """A purchase or behaviour event: earns by the rules, tier and campaigns, and says how."""
    outcome = events.post_event(session, caller, code, req, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


@router.post("/programs/{code}/events/preview", tags=["earning"], response_model=EventOut)
def preview_event(
    caller: CallerDep, code: CodePath, req: EventCreate, session: SessionDep
) -> Response:
    """What an event would earn now, with the explanation; nothing is written."""
    return json_response(events.preview_event(session, caller, code, req, utcnow()))


@router.post(
    "/programs/{code}/event-batches",
    tags=["earning"],
    status_code=201,
    response_model=EventBatchOut,
)
def post_event_batch(
    caller: CallerDep,
    key: IdempotencyKey,
    code: CodePath,
    req: EventBatchCreate,
    session: SessionDep,
) -> Response:
    """A partner's bulk file of events, evaluated together: every line or none."""
    outcome = events.post_event_batch(session, caller, code, req, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)

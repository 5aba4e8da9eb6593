"""Routes of programs' tiers: definitions and their versions, manual placement, tier moves."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from clearing.core.errors import InvalidInput
from clearing.core.idempotency import Operation
from clearing.core.schemas import Code, ExternalId
from clearing.core.timeutil import utcnow
from clearing.web.api import (
    After,
    IdempotencyKey,
    Limit,
    Page,
    SessionDep,
    decode_cursor,
    encode_cursor,
    json_response,
    respond_once,
)
from clearing.web.auth import CallerDep
from issuers import tiering
from issuers.routes import CodePath, ExternalIdPath
from issuers.schemas import (
    MemberTierSet,
    TierChangeSet,
    TierCreate,
    TierMoveOut,
    TierOut,
    TierStandingOut,
)

router = APIRouter(prefix="/v1")


@router.post("/programs/{code}/tiers", tags=["tiers"], status_code=201, response_model=TierOut)
def create_tier(
    caller: CallerDep, key: IdempotencyKey, code: CodePath, req: TierCreate, session: SessionDep
) -> Response:
    """Add a tier to one of the caller's programs: the base tier (rank 0) first."""
    now = utcnow()
    operation = Operation(
        "tier",
        {"program": code, **req.model_dump(mode="json")},
        TierOut,
        lambda _: tiering.create_tier(session, caller, code, req, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.get("/programs/{code}/tiers", tags=["tiers"], response_model=list[TierOut])
def list_tiers(caller: CallerDep, code: CodePath, session: SessionDep) -> Response:
    """A program's tiers with their multipliers, thresholds and privileges (anyone signed)."""
    tiers = tiering.list_tiers(session, None, code)
    return Response(
        b"[" + b",".join(t.model_dump_json().encode() for t in tiers) + b"]",
        media_type="application/json",
    )


@router.post(
    "/programs/{code}/tiers/{tier}/versions",
    tags=["tiers"],
    status_code=201,
    response_model=TierOut,
)
def change_tier(
    caller: CallerDep,
    key: IdempotencyKey,
    code: CodePath,
    tier: Annotated[Code, Path()],
    req: TierChangeSet,
    session: SessionDep,
) -> Response:
    """A new version of a tier: the fields given replace the current ones."""
    now = utcnow()
    operation = Operation(
        "tier_version",
        {"program": code, "tier": tier, **req.model_dump(mode="json", exclude_unset=True)},
        TierOut,
        lambda _: tiering.change_tier(session, caller, code, tier, req, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.get("/programs/{code}/tiers/{tier}/versions", tags=["tiers"], response_model=list[TierOut])
def tier_versions(
    caller: CallerDep, code: CodePath, tier: Annotated[Code, Path()], session: SessionDep
) -> Response:
    """Every definition a tier of the caller's program had, oldest first."""
    versions = tiering.tier_versions(session, caller, code, tier)
    return Response(
        b"[" + b",".join(v.model_dump_json().encode() for v in versions) + b"]",
        media_type="application/json",
    )


@router.post(
    "/programs/{code}/members/{external_id}/tier",
    tags=["tiers"],
    status_code=201,
    response_model=TierStandingOut,
)
def place_member(
    caller: CallerDep,
    key: IdempotencyKey,
    code: CodePath,
    external_id: ExternalIdPath,
    req: MemberTierSet,
    session: SessionDep,
) -> Response:
    """Put one of the caller's members in a tier by hand (a manual move in the history)."""
    now = utcnow()
    operation = Operation(
        "member_tier",
        {"program": code, "external_id": external_id, **req.model_dump(mode="json")},
        TierStandingOut,
        lambda _: tiering.place_member(session, caller, code, external_id, req, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.get("/programs/{code}/tier-changes", tags=["tiers"], response_model=Page[TierMoveOut])
def tier_changes(
    caller: CallerDep,
    code: CodePath,
    session: SessionDep,
    external_id: Annotated[ExternalId | None, Query()] = None,
    after: After = None,
    limit: Limit = 50,
) -> Response:
    """The tier moves of the caller's program (or of one member), oldest first, a page at a time."""
    cursor: tuple[datetime, uuid.UUID] | None = None
    if after:
        at, change = decode_cursor(after, 2)
        try:
            cursor = datetime.fromisoformat(at), uuid.UUID(change)
        except ValueError:
            raise InvalidInput("invalid cursor", field="after") from None
    rows = tiering.tier_moves(session, caller, code, external_id, cursor, limit + 1)
    page = rows[:limit]
    more = len(rows) > limit
    return json_response(
        Page[TierMoveOut](
            items=page,
            next=encode_cursor(page[-1].changed_at.isoformat(), page[-1].id) if more else None,
        )
    )

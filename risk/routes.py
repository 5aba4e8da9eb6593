"""Routes of the risk domain: the operator's controls and the decision log."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request

from clearing.core.config import Settings
from clearing.web.api import Limit, SessionDep
from clearing.web.auth import OperatorDep
from risk.decisions import list_decisions
from risk.schemas import DecisionOut

router = APIRouter(prefix="/v1/risk", tags=["risk"])


@router.get("/decisions")
def get_decisions(
    request: Request,
    session: SessionDep,
    _operator: OperatorDep,
    member_id: Annotated[uuid.UUID | None, Query()] = None,
    org_id: Annotated[uuid.UUID | None, Query()] = None,
    day: Annotated[date | None, Query(alias="date")] = None,
    limit: Limit = 50,
) -> list[DecisionOut]:
    """Decisions of the risk controls, newest first: per member, organisation and/or day."""
    settings: Settings = request.app.state.settings
    return list_decisions(
        session, member_id=member_id, org_id=org_id, day=day, zone=settings.zone, limit=limit
    )

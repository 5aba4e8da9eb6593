"""Rules and limits: the limit rules in force, exposure caps, freezes and the blocklist; a change
of a limit is a dual-control request run through risk.limits' own functions."""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from clearing.core.errors import InvalidInput
from clearing.core.timeutil import utcnow
from clearing.web.api import SessionDep
from reports.console import dual_control
from reports.console.directory import directory
from reports.console.roles import Page
from reports.console.web import Viewing, allowed, render, see_other
from risk import exposure, freezes, limits
from risk.schemas import LimitKind, LimitScope

router = APIRouter()
RiskPerson = Annotated[Viewing, Depends(allowed(Page.RULES))]

KINDS: tuple[str, ...] = get_args(LimitKind)
SCOPES: tuple[str, ...] = get_args(LimitScope)
PERIODS = ("", "minute", "hour", "day")
WHOLE = ("max_count", "max_points", "max_amount", "review_count", "review_points")
WHOLE_MORE = ("review_amount", "allowance", "trailing_days")
SHARES = ("max_share", "review_share")


@router.get("/rules", response_class=HTMLResponse)
def rules_page(request: Request, viewer: RiskPerson, session: SessionDep) -> HTMLResponse:
    """The risk controls in force, and the limit changes waiting for a second user."""
    names = directory(session, None if viewer.is_platform else viewer.org_id)
    rules = [r for r in limits.list_rules(session) if viewer.is_platform or names.sees(r.scope_id)]
    frozen = [
        f for f in freezes.list_freezes(session) if viewer.is_platform or names.sees(f.subject_id)
    ]
    blocked = [
        b for b in freezes.list_blocklist(session) if viewer.is_platform or names.sees(b.program_id)
    ]
    caps = sorted(
        exposure.current_caps(session, names.organisations).items(),
        key=lambda item: (names.name(item[0][0]), item[0][1]),
    )
    actions = dual_control.actions_of(Page.RULES)
    return render(
        request,
        "rules.html",
        viewer=viewer,
        rules=rules,
        caps=caps,
        freezes=frozen,
        blocklist=blocked,
        names=names,
        kinds=KINDS,
        scopes=SCOPES,
        periods=PERIODS,
        thresholds=(*WHOLE, *WHOLE_MORE, *SHARES),
        requests=dual_control.requests_of(session, viewer.org_id, actions, pending=True),
        decided=dual_control.requests_of(session, viewer.org_id, actions, pending=False, limit=20),
    )


def _threshold(name: str, text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        return str(Decimal(text)) if name in SHARES else int(text)
    except (ValueError, InvalidOperation):
        raise InvalidInput(f"{name} is not a number", field=name) from None


@router.post("/rules/limits")
async def request_limit(
    request: Request, viewer: RiskPerson, session: SessionDep
) -> RedirectResponse:
    """Ask for a new version of a limit rule (another user confirms it)."""
    form = await request.form()

    def field(name: str) -> str:
        value = form.get(name, "")
        return value.strip() if isinstance(value, str) else ""

    payload: dict[str, Any] = {
        "scope": field("scope") or "platform",
        "kind": field("kind"),
        "action": field("action"),
        "period": field("period"),
        "note": field("note"),
    }
    if field("scope_id"):
        payload["scope_id"] = field("scope_id")
    for name in (*WHOLE, *WHOLE_MORE, *SHARES):
        value = _threshold(name, field(name))
        if value is not None:
            payload[name] = value
    dual_control.request_action(session, viewer.signed_in, "limit_set", payload, utcnow())
    return see_other(request, "/rules")


@router.post("/rules/limits/{rule_id}/disable")
def request_disable(
    request: Request,
    viewer: RiskPerson,
    session: SessionDep,
    rule_id: uuid.UUID,
    note: Annotated[str, Form(max_length=500)] = "",
) -> RedirectResponse:
    """Ask for a limit rule to be taken out of force (another user confirms it)."""
    dual_control.request_action(
        session,
        viewer.signed_in,
        "limit_disable",
        {"rule_id": str(rule_id), "note": note},
        utcnow(),
    )
    return see_other(request, "/rules")


@router.post("/rules/freezes/{freeze_id}/lift")
def request_lift(
    request: Request,
    viewer: RiskPerson,
    session: SessionDep,
    freeze_id: uuid.UUID,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> RedirectResponse:
    """Ask for a freeze to be lifted, with the reason (another user confirms it)."""
    payload = {"freeze_id": str(freeze_id), "reason": reason}
    dual_control.request_action(session, viewer.signed_in, "freeze_lift", payload, utcnow())
    return see_other(request, "/rules")


@router.post("/rules/blocklist/{entry_id}/remove")
def request_unblock(
    request: Request,
    viewer: RiskPerson,
    session: SessionDep,
    entry_id: uuid.UUID,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> RedirectResponse:
    """Ask for a member id to come off the blocklist, with the reason (another user confirms)."""
    payload = {"entry_id": str(entry_id), "reason": reason}
    dual_control.request_action(session, viewer.signed_in, "blocklist_remove", payload, utcnow())
    return see_other(request, "/rules")

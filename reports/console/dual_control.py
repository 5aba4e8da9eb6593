"""Dual control (maker-checker): one console user asks for an action, another confirms it.

A request is a `ConsoleRequest` row of the requester's organisation. A different user of that
organisation whose role opens the action's page confirms or declines it; only a confirmation
runs the action, through the domain's own service function, as the platform with the key id
`console:{confirming user}` (so risk.reviews.approve's rule, never the requesting key, holds:
no console key id equals an API key id, and the requester is never the confirmer).

Exactly one confirmation runs: the confirming UPDATE claims the row only while its status is
still `pending`; a concurrent confirmation waits on the row lock (PostgreSQL) or the database
lock (SQLite) and then finds it decided. The action runs in a savepoint: if it fails, its writes
are undone and the request records `failed` with the error's code, in the same transaction.
Every request, confirmation, decline and refusal is a line of the audit trail.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from clearing.core.errors import ClearingError, Conflict, Forbidden, InvalidInput, NotFound
from clearing.core.ids import new_id
from clearing.core.kinds import OrgKind
from clearing.web.context import Caller
from issuers import organisations
from issuers.models import Member, Organisation, Program
from issuers.schemas import OrganisationUpdate
from reports.console.accounts import SignedIn, record
from reports.console.models import ConsoleRequest, ConsoleUser
from reports.console.roles import Page, may_see
from risk import freezes, limits, reviews
from risk.models import BlocklistEntry, Freeze, Review
from risk.schemas import LiftCreate, LimitRuleSet, ReviewReject

PENDING = "pending"
DONE = "done"
DECLINED = "rejected"
"""The model's word for a request another user turned down."""
FAILED = "failed"


class UnknownAction(InvalidInput):
    code = "unknown_action"
    title = "No such action"


class ActionForbidden(Forbidden):
    code = "action_forbidden"
    title = "Your role does not allow this action"


class CheckerIsMaker(Forbidden):
    code = "checker_is_maker"
    title = "Another user must confirm your request"


class RequestNotFound(NotFound):
    code = "request_not_found"
    title = "No such request"


class RequestDecided(Conflict):
    code = "request_decided"
    title = "Request already decided"


class RequestAlreadyPending(Conflict):
    code = "request_pending"
    title = "The same request is already waiting"


class ReviewNotPending(Conflict):
    code = "review_not_pending"
    title = "The review is not pending"


Payload = dict[str, Any]
M = TypeVar("M", bound=BaseModel)
E = TypeVar("E", bound=ClearingError)


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """An action under dual control: the page whose roles may ask and confirm it, how a
    request is checked when made (its target and clean payload), and how it runs."""

    page: Page
    check: Callable[[Session, Caller, Payload, datetime], tuple[str, Payload]]
    run: Callable[[Session, Caller, Payload, datetime], str]
    """Runs the action; returns what it did, in a few words (the request's outcome)."""


def _model(model: type[M], payload: Payload) -> M:
    """The payload as the domain's own schema, or InvalidInput naming the field."""
    try:
        # Through JSON: stored payloads are JSON, and the schemas' strict ints accept it there.
        return model.model_validate_json(json.dumps(payload))
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise InvalidInput(f"{field}: {first['msg']}", field=field) from None


def _uuid(payload: Payload, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(payload.get(name, "")))
    except ValueError:
        raise InvalidInput(f"{name} is not an id", field=name) from None


def _pending_review(session: Session, payload: Payload) -> uuid.UUID:
    review_id = _uuid(payload, "review_id")
    review = session.get(Review, review_id)
    if review is None:
        raise NotFound("unknown review", field="review_id")
    if review.status != "pending":
        raise ReviewNotPending(f"this review was already {review.status}")
    return review_id


def _check_approve(
    session: Session, caller: Caller, payload: Payload, now: datetime
) -> tuple[str, Payload]:
    review_id = _pending_review(session, payload)
    return str(review_id), {"review_id": str(review_id)}


def _run_approve(session: Session, caller: Caller, payload: Payload, now: datetime) -> str:
    review, _result = reviews.approve(session, caller, _uuid(payload, "review_id"), now)
    return review.status


def _check_reject(
    session: Session, caller: Caller, payload: Payload, now: datetime
) -> tuple[str, Payload]:
    review_id = _pending_review(session, payload)
    reason = _model(ReviewReject, {"reason": str(payload.get("reason", "")).strip()}).reason
    return str(review_id), {"review_id": str(review_id), "reason": reason}


def _run_reject(session: Session, caller: Caller, payload: Payload, now: datetime) -> str:
    reason = str(payload["reason"])
    return reviews.reject(session, caller, _uuid(payload, "review_id"), reason, now).status


def _check_org(
    session: Session, caller: Caller, payload: Payload, now: datetime
) -> tuple[str, Payload]:
    org_id = _uuid(payload, "org_id")
    if session.get(Organisation, org_id) is None:
        raise NotFound("unknown organisation", field="org_id")
    return str(org_id), {"org_id": str(org_id)}


def _org_status(status: str) -> Callable[[Session, Caller, Payload, datetime], str]:
    def run(session: Session, caller: Caller, payload: Payload, now: datetime) -> str:
        # The same service function the API's PATCH /v1/organizations/{id} calls.
        update_ = OrganisationUpdate.model_validate({"status": status})
        return organisations.update_organisation(session, _uuid(payload, "org_id"), update_).status

    return run


def _check_limit(
    session: Session, caller: Caller, payload: Payload, now: datetime
) -> tuple[str, Payload]:
    rule = _model(LimitRuleSet, payload)
    # A trial run of the limits' own function, undone at once: a rule it would refuse is
    # refused to the requester now (with its code), not to the confirmer later.
    trial = session.begin_nested()
    try:
        limits.set_rule(session, caller, rule, now)
    finally:
        trial.rollback()
    scope = f"{rule.scope}:{rule.scope_id}" if rule.scope_id else rule.scope
    target = f"{rule.kind}/{rule.action or '-'}/{rule.period or '-'}@{scope}"
    return target, rule.model_dump(mode="json")


def _run_limit(session: Session, caller: Caller, payload: Payload, now: datetime) -> str:
    out = limits.set_rule(session, caller, _model(LimitRuleSet, payload), now)
    return f"rule {out.rule_id} version {out.version}"


def _check_disable(
    session: Session, caller: Caller, payload: Payload, now: datetime
) -> tuple[str, Payload]:
    rule_id = _uuid(payload, "rule_id")
    limits.rule_history(session, rule_id)  # LimitRuleNotFound for an unknown rule
    return str(rule_id), {"rule_id": str(rule_id), "note": str(payload.get("note", ""))[:500]}


def _run_disable(session: Session, caller: Caller, payload: Payload, now: datetime) -> str:
    note = str(payload.get("note", ""))
    out = limits.disable_rule(session, caller, _uuid(payload, "rule_id"), now, note)
    return f"rule {out.rule_id} version {out.version} disabled"


def _check_lift(
    session: Session, caller: Caller, payload: Payload, now: datetime
) -> tuple[str, Payload]:
    freeze_id = _uuid(payload, "freeze_id")
    if session.get(Freeze, freeze_id) is None:
        raise NotFound("unknown freeze", field="freeze_id")
    reason = _model(LiftCreate, {"reason": str(payload.get("reason", "")).strip()}).reason
    return str(freeze_id), {"freeze_id": str(freeze_id), "reason": reason}


def _run_lift(session: Session, caller: Caller, payload: Payload, now: datetime) -> str:
    freeze_id = _uuid(payload, "freeze_id")
    lifted = freezes.unfreeze(session, caller, freeze_id, str(payload["reason"]), now)
    return f"lifted {lifted.subject}"


def _check_unblock(
    session: Session, caller: Caller, payload: Payload, now: datetime
) -> tuple[str, Payload]:
    entry_id = _uuid(payload, "entry_id")
    if session.get(BlocklistEntry, entry_id) is None:
        raise NotFound("unknown blocklist entry", field="entry_id")
    reason = _model(LiftCreate, {"reason": str(payload.get("reason", "")).strip()}).reason
    return str(entry_id), {"entry_id": str(entry_id), "reason": reason}


def _run_unblock(session: Session, caller: Caller, payload: Payload, now: datetime) -> str:
    entry_id = _uuid(payload, "entry_id")
    removed = freezes.unblock(session, caller, entry_id, str(payload["reason"]), now)
    return f"removed {removed.program_code} {removed.external_id}"


ACTIONS: dict[str, ActionSpec] = {
    "review_approve": ActionSpec(Page.REVIEWS, _check_approve, _run_approve),
    "review_reject": ActionSpec(Page.REVIEWS, _check_reject, _run_reject),
    "org_suspend": ActionSpec(Page.PARTIES, _check_org, _org_status("suspended")),
    "org_reactivate": ActionSpec(Page.PARTIES, _check_org, _org_status("active")),
    "limit_set": ActionSpec(Page.RULES, _check_limit, _run_limit),
    "limit_disable": ActionSpec(Page.RULES, _check_disable, _run_disable),
    "freeze_lift": ActionSpec(Page.RULES, _check_lift, _run_lift),
    "blocklist_remove": ActionSpec(Page.RULES, _check_unblock, _run_unblock),
}
"""Every action under dual control, by name (the request's `action`)."""


def actions_of(page: Page) -> frozenset[str]:
    """The actions a page asks for (its part of the pending requests)."""
    return frozenset(name for name, spec in ACTIONS.items() if spec.page == page)


def _refused(error: E, user: SignedIn, what: str, action: str, target: str, now: datetime) -> E:
    """`error`, with its refusal audited although the request's transaction rolls back."""
    detail = {"code": error.code, "action": action}
    error.kept = lambda fresh: record(fresh, user, f"{what}_refused", target, detail, now)
    return error


def _spec(user: SignedIn, action: str, what: str, target: str, now: datetime) -> ActionSpec:
    """The action, if the user's role and organisation may ask for or decide it."""
    spec = ACTIONS.get(action)
    if spec is None:
        raise UnknownAction(f"no action {action!r}", field="action")
    if not may_see(user.role, spec.page) or user.org_kind != OrgKind.PLATFORM:
        raise _refused(
            ActionForbidden(f"the role {user.role} does not allow {action}"),
            user,
            what,
            action,
            target,
            now,
        )
    return spec


def operator_of(user: SignedIn) -> Caller:
    """The caller a confirmed action runs as: the platform, with the confirming user's key id."""
    return Caller(org_id=user.org_id, kind=OrgKind.PLATFORM, key_id=f"console:{user.id}")


def request_action(
    session: Session, user: SignedIn, action: str, payload: Payload, now: datetime
) -> ConsoleRequest:
    """Ask for an action; it runs only when another user of the organisation confirms it."""
    spec = _spec(user, action, "request", "", now)
    target, clean = spec.check(session, operator_of(user), payload, now)
    waiting = session.scalar(
        select(ConsoleRequest.id).where(
            ConsoleRequest.org_id == user.org_id,
            ConsoleRequest.action == action,
            ConsoleRequest.target == target,
            ConsoleRequest.status == PENDING,
        )
    )
    if waiting is not None:
        raise RequestAlreadyPending(
            f"a request to {action} {target} is already waiting", request_id=str(waiting)
        )
    row = ConsoleRequest(
        id=new_id(),
        org_id=user.org_id,
        action=action,
        target=target,
        payload=clean,
        status=PENDING,
        requested_by=user.id,
        requested_at=now,
        outcome="",
    )
    session.add(row)
    session.flush()
    record(session, user, "request_made", target, {"request": str(row.id), "action": action}, now)
    return row


def _of_organisation(session: Session, user: SignedIn, request_id: uuid.UUID) -> ConsoleRequest:
    row = session.get(ConsoleRequest, request_id)
    # Another organisation's request does not exist for this user.
    if row is None or row.org_id != user.org_id:
        raise RequestNotFound("unknown request")
    return row


def _checked(
    session: Session, user: SignedIn, request_id: uuid.UUID, what: str, now: datetime
) -> tuple[ConsoleRequest, ActionSpec]:
    row = _of_organisation(session, user, request_id)
    spec = _spec(user, row.action, what, row.target, now)
    if row.requested_by == user.id:
        raise _refused(
            CheckerIsMaker("a request is confirmed or declined by another user"),
            user,
            what,
            row.action,
            row.target,
            now,
        )
    return row, spec


def _claim(
    session: Session, row: ConsoleRequest, user: SignedIn, status: str, now: datetime
) -> None:
    """Decide the request if it is still pending (one decision wins), else RequestDecided."""
    claimed = session.execute(
        update(ConsoleRequest)
        .where(ConsoleRequest.id == row.id, ConsoleRequest.status == PENDING)
        .values(status=status, decided_by=user.id, decided_at=now)
        .execution_options(synchronize_session=False)
    )
    session.refresh(row)
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise RequestDecided(f"this request was already {row.status}", request_status=row.status)


def confirm(
    session: Session, user: SignedIn, request_id: uuid.UUID, now: datetime
) -> ConsoleRequest:
    """Confirm another user's request: the action runs now, once; the outcome is recorded."""
    row, spec = _checked(session, user, request_id, "confirm", now)
    _claim(session, row, user, DONE, now)
    detail: dict[str, Any] = {"request": str(row.id), "action": row.action}
    try:
        with session.begin_nested():
            row.outcome = spec.run(session, operator_of(user), dict(row.payload), now)
    except ClearingError as error:
        # The savepoint undid the action's writes; what it wanted kept is written here.
        if error.kept is not None:
            error.kept(session)
        row.status = FAILED
        row.outcome = error.code
        detail["error"] = error.code
        detail["error_detail"] = error.detail[:500]
    detail["status"] = row.status
    session.flush()
    record(session, user, "request_confirmed", row.target, detail, now)
    return row


def decline(
    session: Session, user: SignedIn, request_id: uuid.UUID, reason: str, now: datetime
) -> ConsoleRequest:
    """Decline another user's request: the action never runs."""
    row, _ = _checked(session, user, request_id, "decline", now)
    _claim(session, row, user, DECLINED, now)
    row.outcome = reason.strip()[:500]
    session.flush()
    record(
        session,
        user,
        "request_declined",
        row.target,
        {"request": str(row.id), "action": row.action, "reason": row.outcome},
        now,
    )
    return row


@dataclass(frozen=True, slots=True)
class RequestView:
    """A request as a page lists it, with the names of who asked and who decided."""

    id: uuid.UUID
    action: str
    target: str
    payload: Payload
    status: str
    outcome: str
    requested_by: uuid.UUID
    requester: str
    requested_at: datetime
    decider: str
    decided_at: datetime | None
    label: str = ""
    """What the target is, in words a person reads (a party's name, a review's member)."""


def _labels(session: Session, targets: set[str]) -> dict[str, str]:
    """Names for request targets that are organisations or reviews (others keep their text)."""
    ids = set()
    for target in targets:
        try:
            ids.add(uuid.UUID(target))
        except ValueError:
            continue
    if not ids:
        return {}
    labels = {
        str(org_id): name
        for org_id, name in session.execute(
            select(Organisation.id, Organisation.name).where(Organisation.id.in_(sorted(ids)))
        )
    }
    reviewed = session.execute(
        select(Review.id, Review.operation, Review.inputs, Program.code, Member.external_id)
        .outerjoin(Member, Member.id == Review.member_id)
        .outerjoin(Program, Program.id == Member.program_id)
        .where(Review.id.in_(sorted(ids)))
    )
    for review_id, operation, inputs, code, external_id in reviewed:
        parts = [operation, code, external_id, str(inputs.get("points", ""))]
        labels[str(review_id)] = " · ".join(p for p in parts if p)
    return labels


def requests_of(
    session: Session,
    org_id: uuid.UUID,
    actions: frozenset[str],
    *,
    pending: bool,
    limit: int = 50,
) -> list[RequestView]:
    """An organisation's requests for `actions`: pending ones oldest first, else the latest
    decided ones newest first."""
    query = (
        select(ConsoleRequest, ConsoleUser.display_name)
        .join(ConsoleUser, ConsoleUser.id == ConsoleRequest.requested_by)
        .where(ConsoleRequest.org_id == org_id, ConsoleRequest.action.in_(sorted(actions)))
        .limit(limit)
    )
    if pending:
        query = query.where(ConsoleRequest.status == PENDING).order_by(
            ConsoleRequest.requested_at, ConsoleRequest.id
        )
    else:
        query = query.where(ConsoleRequest.status != PENDING).order_by(
            ConsoleRequest.decided_at.desc(), ConsoleRequest.id
        )
    rows = session.execute(query).all()
    deciders = {r.decided_by for r, _ in rows if r.decided_by is not None}
    names: dict[uuid.UUID, str] = {
        user_id: name
        for user_id, name in session.execute(
            select(ConsoleUser.id, ConsoleUser.display_name).where(
                ConsoleUser.id.in_(sorted(deciders))
            )
        )
    }
    labels = _labels(session, {r.target for r, _ in rows})
    return [
        RequestView(
            id=r.id,
            action=r.action,
            target=r.target,
            payload=dict(r.payload),
            status=r.status,
            outcome=r.outcome,
            requested_by=r.requested_by,
            requester=name,
            requested_at=r.requested_at,
            decider=names.get(r.decided_by, "") if r.decided_by else "",
            decided_at=r.decided_at,
            label=labels.get(r.target, ""),
        )
        for r, name in rows
    ]

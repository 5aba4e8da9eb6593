"""Idempotency keys scoped to the calling organisation: a replay returns the first result.

An operation is one value (`Operation`: its name, the request that identifies it, an optional
first read and the action), and `run_once` is the one mechanism that runs it under a key,
whether a route or a service calls it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar, cast

from pydantic import BaseModel
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from clearing.core.db import Params, Sql, is_postgres
from clearing.core.errors import IdempotencyConflict, InvalidInput
from clearing.core.ids import new_id
from clearing.core.models import IdempotencyRecord
from clearing.core.policy import (
    PendingOperation,
    PendingReview,
    ReviewRejected,
    ReviewRequired,
    approving,
)

R = TypeVar("R", bound=BaseModel)

CREATED = 201
ACCEPTED = 202
_RECORDS = cast(Table, IdempotencyRecord.__table__)
_KEY = (_RECORDS.c.org_id == bindparam("b_org"), _RECORDS.c.key == bindparam("b_key"))
_CLAIM_COLUMNS = (
    "org_id",
    "key",
    "operation",
    "fingerprint",
    "request_digests",
    "status_code",
    "created_at",
)
_CLAIM_PG = Sql(
    pg_insert(_RECORDS).on_conflict_do_nothing().returning(_RECORDS.c.key), _CLAIM_COLUMNS
)
_CLAIM_SQLITE = Sql(
    sqlite_insert(_RECORDS).on_conflict_do_nothing().returning(_RECORDS.c.key), _CLAIM_COLUMNS
)
_FIRST_USE = Sql(
    select(
        _RECORDS.c.operation,
        _RECORDS.c.fingerprint,
        _RECORDS.c.request_digests,
        _RECORDS.c.status_code,
        _RECORDS.c.result,
    ).where(*_KEY)
)
_RECORD = Sql(
    update(_RECORDS)
    .where(*_KEY)
    .values(status_code=bindparam("b_status_code"), result=bindparam("b_result"))
)
_DIGEST_CHARS = 16
"""Hex characters of a field's digest: enough to tell which field changed (the fingerprint,
in full, is what decides whether the request is the same)."""


@dataclass(frozen=True, slots=True)
class FirstRead:
    """A query an operation starts with; on PostgreSQL it travels with the key's claim."""

    query: Sql
    params: Params


@dataclass(frozen=True, slots=True)
class Operation(Generic[R]):
    """One idempotent operation: its name and request (which a retry must repeat; a model is
    taken as its JSON form), an optional first read, and the action, which gets the first row
    of that read (None without one)."""

    name: str
    request: Mapping[str, Any] | BaseModel
    result_type: type[R]
    action: Callable[[Any | None], R]
    first_read: FirstRead | None = None
    status_code: int = CREATED


class Outcome(NamedTuple, Generic[R]):
    """An operation's result, and whether it is the stored result of an earlier request."""

    result: R
    replayed: bool


@dataclass(frozen=True)
class Replay:
    """The stored outcome of the first request under a key."""

    status_code: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Identity:
    """What a retry must repeat: the operation's name and request, as one fingerprint (which
    decides) and one digest per request field (which names what differs)."""

    operation: str
    fingerprint: str
    digests: dict[str, str]


_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode
"""The canonical JSON of a value (one encoder, built once: `json.dumps` with options builds
one per call, which costs more than the encoding of a short request)."""


def identity(operation: str, request: Mapping[str, Any] | BaseModel) -> Identity:
    """The identity of a request: each field is serialised once, for its digest and for the
    fingerprint (the SHA-256 of the canonical form of {"operation", "request"})."""
    if isinstance(request, BaseModel):
        request = request.model_dump(mode="json")
    fields = {str(name): _canonical(value) for name, value in request.items()}
    body = ",".join(f"{_canonical(name)}:{fields[name]}" for name in sorted(fields))
    canonical = f'{{"operation":{_canonical(operation)},"request":{{{body}}}}}'
    return Identity(
        operation,
        hashlib.sha256(canonical.encode()).hexdigest(),
        {
            name: hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_CHARS]
            for name, text in fields.items()
        },
    )


def run_once(
    session: Session, org_id: uuid.UUID, key: str, operation: Operation[R], now: datetime
) -> Outcome[R]:
    """Run `operation` once per key of `org_id`: its result, or the first request's.

    The claim row is inserted first: a concurrent request with the same key waits on it until
    the first transaction ends, then sees the committed outcome, so a key is applied once. A
    first read travels with the claim on PostgreSQL, in one statement.
    """
    claimed = identity(operation.name, operation.request)
    params = _claim_params(org_id, key, claimed, now)
    read = operation.first_read
    found: Any | None = None
    if read is not None and is_postgres(session):
        row = _claiming(read.query).first(session, {**params, **read.params})
        assert row is not None
        replay = None if row.clearing_claimed else _first_use(session, org_id, key, claimed)
        found = row if row.clearing_found else None
    else:
        claim = _CLAIM_PG if is_postgres(session) else _CLAIM_SQLITE
        claimed_now = claim.first(session, params) is not None
        replay = None if claimed_now else _first_use(session, org_id, key, claimed)
        if replay is None and read is not None:
            found = read.query.first(session, read.params)
    if replay is not None:
        if replay.status_code == ACCEPTED:
            raise PendingReview(json.loads(replay.body), None)
        if replay.status_code == ReviewRejected.status:
            stored = json.loads(replay.body)
            raise ReviewRejected(stored.get("detail", "rejected after review"), **_extra(stored))
        return Outcome(operation.result_type.model_validate_json(replay.body), True)
    try:
        result = operation.action(found)
    except ReviewRequired as review:
        raise _held_for_review(org_id, key, operation, claimed, review, now) from None
    record(session, org_id, key, operation.status_code, result.model_dump_json().encode())
    return Outcome(result, False)


def _held_for_review(
    org_id: uuid.UUID,
    key: str,
    operation: Operation[R],
    claimed: Identity,
    review: ReviewRequired,
    now: datetime,
) -> PendingReview:
    """The 202 of an operation a policy sent to review: after the operation's own writes roll
    back, the key is claimed with this answer and the policy queues the operation."""
    request = operation.request
    pending = PendingOperation(
        review_id=new_id(),
        operation=operation.name,
        request=request.model_dump(mode="json") if isinstance(request, BaseModel) else request,
        org_id=org_id,
        key_id=review.operation.caller_key_id,
        idempotency_key=key,
        requested_at=now,
    )
    decision = review.decision
    body = {
        "status": "pending_review",
        "review_id": str(pending.review_id),
        "operation": operation.name,
        "code": decision.code,
        "rule": decision.rule_id,
        "rule_version": decision.rule_version,
        "reason": decision.reason,
    }

    def kept(session: Session) -> None:
        claim = _CLAIM_PG if is_postgres(session) else _CLAIM_SQLITE
        if claim.first(session, _claim_params(org_id, key, claimed, now)) is None:
            raise IdempotencyConflict("idempotency key is already in use by this transaction")
        record(session, org_id, key, ACCEPTED, _canonical(body).encode())
        review.policy.hold_for_review(session, review.operation, decision, pending)

    return PendingReview(body, kept)


def _extra(problem: Mapping[str, Any]) -> dict[str, Any]:
    fixed = {"type", "title", "status", "code", "detail"}
    return {k: v for k, v in problem.items() if k not in fixed}


def reject_reviewed(session: Session, pending: PendingOperation, reason: str) -> None:
    """Answer a rejected review under the request's idempotency key: a retry gets the 409."""
    refusal = ReviewRejected(reason, review_id=str(pending.review_id))
    record(
        session,
        pending.org_id,
        pending.idempotency_key,
        refusal.status,
        _canonical(refusal.problem()).encode(),
    )


def complete_reviewed(session: Session, pending: PendingOperation, operation: Operation[R]) -> R:
    """Run an operation an operator approved, as its own request would have: its result
    replaces the 202 under the request's idempotency key, so a retry now gets the result."""
    approving(session, pending.review_id)
    found = None
    if operation.first_read is not None:
        found = operation.first_read.query.first(session, operation.first_read.params)
    result = operation.action(found)
    record(
        session,
        pending.org_id,
        pending.idempotency_key,
        operation.status_code,
        result.model_dump_json().encode(),
    )
    return result


def _claim_params(org_id: uuid.UUID, key: str, claimed: Identity, now: datetime) -> dict[str, Any]:
    if not key or len(key) > 200:
        raise InvalidInput("idempotency key must be 1 to 200 characters", field="idempotency_key")
    return {
        "org_id": org_id,
        "key": key,
        "operation": claimed.operation,
        "fingerprint": claimed.fingerprint,
        "request_digests": claimed.digests,
        "status_code": 0,
        "created_at": now,
    }


def _first_use(session: Session, org_id: uuid.UUID, key: str, claimed: Identity) -> Replay:
    """The outcome of the first request under a key this request could not claim."""
    row = _FIRST_USE.rows(session, {"b_org": org_id, "b_key": key})[0]
    if row.operation != claimed.operation or row.fingerprint != claimed.fingerprint:
        differing = "operation" if row.operation != claimed.operation else "request"
        differs = (
            differing
            if differing == "operation"
            else differing_field(_stored_digests(row.request_digests), claimed.digests)
        )
        raise IdempotencyConflict(
            f"idempotency key was first used with a different {differs}",
            differing=differing,
            differs=differs,
        )
    if row.status_code == 0 or row.result is None:
        raise IdempotencyConflict("idempotency key is already in use by this transaction")
    return Replay(row.status_code, row.result)


def _stored_digests(stored: Any) -> dict[str, str] | None:
    # SQLite's JSON comes back parsed too; a record from before migration 0009 has none.
    if stored is None:
        return None
    return cast(dict[str, str], json.loads(stored) if isinstance(stored, str) else stored)


def differing_field(first: Mapping[str, str] | None, again: Mapping[str, str]) -> str:
    """The first field, in the repeated request's order, whose digest differs from the first
    request's (a field only one of them has differs too); "request" when the first request's
    digests are unknown or every field matches."""
    if first is None:
        return "request"
    for name in [*again, *(n for n in first if n not in again)]:
        if first.get(name) != again.get(name):
            return name
    return "request"


def record(session: Session, org_id: uuid.UUID, key: str, status_code: int, body: bytes) -> None:
    """Store the outcome of the request that claimed `key`."""
    _RECORD.rows(
        session, {"b_org": org_id, "b_key": key, "b_status_code": status_code, "b_result": body}
    )


_CLAIMING: dict[Sql, Sql] = {}


def _claiming(read: Sql) -> Sql:
    """The claim and `read` as one statement: one row, whether the key was claimed, and the
    first row of `read` if any (its columns are null and `clearing_found` is null if none)."""
    composed = _CLAIMING.get(read)
    if composed is None:
        composed = _CLAIMING[read] = Sql.composed(
            "WITH claim AS ({0}) SELECT (SELECT count(*) FROM claim) AS clearing_claimed, r.*"
            " FROM (SELECT 1) AS one LEFT JOIN"
            " (SELECT true AS clearing_found, q.* FROM ({1}) AS q LIMIT 1) AS r ON true",
            _CLAIM_PG,
            read,
        )
    return composed

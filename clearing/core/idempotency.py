"""Idempotency keys scoped to the calling organisation: a replay returns the first result."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from pydantic import BaseModel
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from clearing.core.db import Params, Sql, is_postgres
from clearing.core.errors import IdempotencyConflict, InvalidInput
from clearing.core.models import IdempotencyRecord

R = TypeVar("R", bound=BaseModel)

_RECORDS = cast(Table, IdempotencyRecord.__table__)
_KEY = (_RECORDS.c.org_id == bindparam("b_org"), _RECORDS.c.key == bindparam("b_key"))
_CLAIM_COLUMNS = ("org_id", "key", "operation", "fingerprint", "status_code", "created_at")
_CLAIM_PG = Sql(
    pg_insert(_RECORDS).on_conflict_do_nothing().returning(_RECORDS.c.key), _CLAIM_COLUMNS
)
_CLAIM_SQLITE = Sql(
    sqlite_insert(_RECORDS).on_conflict_do_nothing().returning(_RECORDS.c.key), _CLAIM_COLUMNS
)
_FIRST_USE = Sql(
    select(
        _RECORDS.c.operation, _RECORDS.c.fingerprint, _RECORDS.c.status_code, _RECORDS.c.result
    ).where(*_KEY)
)
_RECORD = Sql(
    update(_RECORDS)
    .where(*_KEY)
    .values(status_code=bindparam("b_status_code"), result=bindparam("b_result"))
)


@dataclass(frozen=True)
class Replay:
    """The stored outcome of the first request under a key."""

    status_code: int
    body: bytes


def fingerprint(operation: str, request: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical form of a request."""
    canonical = json.dumps(
        {"operation": operation, "request": request},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim(
    session: Session,
    org_id: uuid.UUID,
    key: str,
    operation: str,
    print_: str,
    now: datetime,
) -> Replay | None:
    """Claim `key` for this request, or return the first request's outcome.

    The claim row is inserted first: a concurrent request with the same key waits on it until
    the first transaction ends, then sees the committed outcome, so a key is applied once.
    """
    claim_key = _CLAIM_PG if is_postgres(session) else _CLAIM_SQLITE
    if claim_key.first(session, _claim_params(org_id, key, operation, print_, now)) is not None:
        return None
    return _first_use(session, org_id, key, operation, print_)


def _claim_params(
    org_id: uuid.UUID, key: str, operation: str, print_: str, now: datetime
) -> dict[str, Any]:
    if not key or len(key) > 200:
        raise InvalidInput("idempotency key must be 1 to 200 characters", field="idempotency_key")
    return {
        "org_id": org_id,
        "key": key,
        "operation": operation,
        "fingerprint": print_,
        "status_code": 0,
        "created_at": now,
    }


def _first_use(
    session: Session, org_id: uuid.UUID, key: str, operation: str, print_: str
) -> Replay:
    """The outcome of the first request under a key this request could not claim."""
    row = _FIRST_USE.rows(session, {"b_org": org_id, "b_key": key})[0]
    if row.operation != operation or row.fingerprint != print_:
        differing = "operation" if row.operation != operation else "request"
        raise IdempotencyConflict(
            f"idempotency key was first used with a different {differing}", differing=differing
        )
    if row.status_code == 0 or row.result is None:
        raise IdempotencyConflict("idempotency key is already in use by this transaction")
    return Replay(row.status_code, row.result)


def record(session: Session, org_id: uuid.UUID, key: str, status_code: int, body: bytes) -> None:
    """Store the outcome of the request that claimed `key`."""
    _RECORD.rows(
        session, {"b_org": org_id, "b_key": key, "b_status_code": status_code, "b_result": body}
    )


def run_once(
    session: Session,
    org_id: uuid.UUID,
    key: str,
    operation: str,
    request: Mapping[str, Any],
    now: datetime,
    result_type: type[R],
    action: Callable[[], R],
    status_code: int = 201,
) -> tuple[R, bool]:
    """Run `action` once per key: returns its result and whether it was a replay."""
    replay = claim(session, org_id, key, operation, fingerprint(operation, request), now)
    return _outcome(session, org_id, key, status_code, result_type, replay, action)


def run_once_reading(
    session: Session,
    org_id: uuid.UUID,
    key: str,
    operation: str,
    request: Mapping[str, Any],
    now: datetime,
    result_type: type[R],
    read: Sql,
    read_params: Params,
    action: Callable[[Any | None], R],
    status_code: int = 201,
) -> tuple[R, bool]:
    """`run_once` for an action whose first step is the query `read`: the action gets its first
    row (or None). On PostgreSQL the query travels with the key's claim, in one round trip."""
    print_ = fingerprint(operation, request)
    if is_postgres(session):
        params = _claim_params(org_id, key, operation, print_, now)
        row = _claiming(read).first(session, {**params, **read_params})
        assert row is not None
        replay = (
            None if row.clearing_claimed else _first_use(session, org_id, key, operation, print_)
        )
        found = row if row.clearing_found else None
    else:
        replay = claim(session, org_id, key, operation, print_, now)
        found = None if replay is not None else read.first(session, read_params)
    return _outcome(session, org_id, key, status_code, result_type, replay, lambda: action(found))


def _outcome(
    session: Session,
    org_id: uuid.UUID,
    key: str,
    status_code: int,
    result_type: type[R],
    replay: Replay | None,
    action: Callable[[], R],
) -> tuple[R, bool]:
    """The first request's stored result, or the action's, stored under the key."""
    if replay is not None:
        return result_type.model_validate_json(replay.body), True
    result = action()
    record(session, org_id, key, status_code, result.model_dump_json().encode())
    return result, False


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

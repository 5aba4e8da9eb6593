"""The idempotency mechanism on both databases: one operation value, run once per key, and a
conflict that names what differs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from factories import T0
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy import Engine, select

from clearing.db import transaction
from clearing.errors import IdempotencyConflict
from clearing.idempotency import Operation, differing_field, identity, run_once
from clearing.ids import new_id
from clearing.models import IdempotencyRecord

ORG = new_id()

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(st.text(min_size=1), st.dictionaries(st.text(), _json, max_size=5))
def test_fingerprint_is_the_one_records_were_written_with(
    operation: str, request: dict[str, Any]
) -> None:
    # Records written before field digests keep replaying: the fingerprint formula is unchanged.
    before = hashlib.sha256(
        json.dumps(
            {"operation": operation, "request": request},
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        ).encode()
    ).hexdigest()
    assert identity(operation, request).fingerprint == before


def test_differing_field_in_the_repeated_requests_order() -> None:
    first = identity("accrual", {"program": "A", "external_id": "x", "points": 1}).digests
    again = identity("accrual", {"points": 2, "program": "B", "external_id": "x"}).digests
    assert differing_field(first, again) == "points"
    fewer = identity("accrual", {"program": "A", "external_id": "x"}).digests
    assert differing_field(first, fewer) == "points"
    assert differing_field(None, again) == "request"
    assert differing_field(first, first) == "request"


class Counted(BaseModel):
    runs: int
    points: int


def _operation(points: int, runs: list[int], name: str = "count") -> Operation[Counted]:
    def action(_: None) -> Counted:
        runs.append(points)
        return Counted(runs=len(runs), points=points)

    return Operation(name, {"program": "A", "points": points}, Counted, action)


def test_an_operation_runs_once_and_a_conflict_names_the_field(engine: Engine) -> None:
    runs: list[int] = []
    with transaction(engine) as session:
        first = run_once(session, ORG, "k", _operation(5, runs), T0)
    with transaction(engine) as session:
        again = run_once(session, ORG, "k", _operation(5, runs), T0)
    assert first == (Counted(runs=1, points=5), False)
    assert again == (Counted(runs=1, points=5), True)
    assert runs == [5]
    with transaction(engine) as session, pytest.raises(IdempotencyConflict) as points:
        run_once(session, ORG, "k", _operation(6, runs), T0)
    assert points.value.problem()["differs"] == "points"
    with transaction(engine) as session, pytest.raises(IdempotencyConflict) as named:
        run_once(session, ORG, "k", _operation(5, runs, name="other"), T0)
    assert named.value.problem()["differs"] == "operation"
    assert runs == [5]
    with transaction(engine) as session:
        digests = session.execute(select(IdempotencyRecord.request_digests)).scalar_one()
    # Digests only: a request's values (a payment token among them) are never stored.
    assert digests == identity("count", {"program": "A", "points": 5}).digests
    assert all(len(d) == 16 for d in digests.values())

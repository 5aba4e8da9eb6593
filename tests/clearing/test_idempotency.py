"""The idempotency mechanism on both databases: one operation value, run once per key, and a
conflict that names what differs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy import Engine, select

from clearing.core.db import transaction
from clearing.core.errors import IdempotencyConflict
from clearing.core.idempotency import Operation, differing_field, identity, run_once
from clearing.core.ids import new_id
from clearing.core.models import IdempotencyRecord
from exchange import service as exchange
from exchange.schemas import CaptureCreate, CheckoutCreate
from issuers import accruals
from issuers.schemas import AccrualCreate
from issuers.tiers import TIERED
from tests.factories import T0, accrue, build_world, key, member, trust

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


def test_the_postgresql_hot_path_stays_four_statements(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # README "The hot path on PostgreSQL": the claim travels with the first read, then the
    # posting, the domain row and the stored result. Every statement passes a psycopg cursor.
    w = build_world(pg_engine)
    member(pg_engine, w.bank_a, "BANKA", "alice")
    trust(pg_engine, w.bank_a, "BANKA", w.shop)
    accrue(pg_engine, w.bank_a, "BANKA", "alice", 1000)
    # The steady state: the tiers' process copy (read by every accrual) is fresh, however slow
    # the machine; a copy past its seconds costs one refresh, not a statement of the hot path.
    monkeypatch.setattr(TIERED, "seconds", 3600.0)
    sent: list[str] = []
    ours: list[object] = []
    execute = psycopg.Cursor.execute

    def counted(cursor: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        # Only the operation's own connection: the patch sees every cursor of the process.
        if cursor.connection in ours:
            sent.append(str(query))
        return execute(cursor, query, *args, **kwargs)

    def statements(operation: Callable[[], object]) -> int:
        sent.clear()
        operation()
        return len(sent)

    accrual = AccrualCreate(program="BANKA", external_id="alice", points=5)
    checkout = CheckoutCreate(
        program="BANKA", external_id="alice", order_total=10, points_amount=10
    )
    with transaction(pg_engine) as session:
        # BEGIN is not a statement of the operation.
        ours.append(session.connection().connection.driver_connection)
        monkeypatch.setattr(psycopg.Cursor, "execute", counted)

        def authorise_and_capture() -> int:
            authorised = exchange.authorise(session, w.shop, checkout, T0, key()).result
            return statements(
                lambda: exchange.capture(session, w.shop, authorised.id, CaptureCreate(), T0, key())
            )

        authorise_and_capture()  # the first capture looks up (and caches) account ids
        captured = authorise_and_capture()
        assert captured == 4
        assert statements(lambda: exchange.authorise(session, w.shop, checkout, T0, key())) == 4
        replay_key = key()
        assert statements(lambda: accruals.accrue(session, w.bank_a, accrual, T0, replay_key)) == 4
        # A replay: the claim (with the read) meets the first use, then reads its result.
        replayed = statements(lambda: accruals.accrue(session, w.bank_a, accrual, T0, replay_key))
        assert replayed == 2, sent

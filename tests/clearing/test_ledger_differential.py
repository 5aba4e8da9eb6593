"""The two engines are one rule: the same operations, posted by the server function
(`ledger_post_v2`) into one PostgreSQL database and by the Python engine into its twin, leave
every row of every ledger table the same.

Normalisation, and nothing else (every column of every row is compared):
- ids: the application makes every id (UUIDv7, monotonic within this process) and both twins
  run the same operations in the same order, so the n-th id of one twin is the n-th of the
  other. Each UUID, as a column or inside text (account names, memos), is replaced by its rank
  among the UUIDs of its database. An id made in a different order fails the comparison.
- balances: which slot of a hot account a posting moves is chosen at random, by design. Balance
  rows are compared per account: number of slot rows, sum of balance, sum of held, floor flag.
- times come from the operations' `now`, so they are compared as they are; JSON columns are
  compared as the text stored (`CAST(memo AS text)`), not as parsed values.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import JSON, Engine, String, Table, select, text
from sqlalchemy import cast as sql_cast

import clearing.core.models
from clearing.core.db import Base, make_engine, transaction
from clearing.core.ledger import LEDGER_POST_FUNCTION, Ledger, LedgerOptions, bind_ledger_options
from clearing.core.models import (
    Account,
    Balance,
    Hold,
    JournalEntry,
    Lot,
    LotMovement,
    Obligation,
    Posting,
)
from clearing.core.tasks import run_expiry
from exchange import service as exchange
from exchange.schemas import RefundCreate
from issuers import accruals
from issuers.schemas import AccrualBatchCreate, AccrualCreate, AccrualReversalCreate
from tests.factories import (
    T0,
    accrue,
    authorise,
    build_world,
    capture,
    convert,
    key,
    link,
    member,
)

LEDGER_TABLES = [
    cast(Table, model.__table__)
    for model in (Account, Balance, JournalEntry, Posting, Obligation, Lot, LotMovement, Hold)
]
# Tables of the core that are not the ledger's: request bookkeeping, not money or points.
NOT_LEDGER = {"idempotency_records", "seen_nonces"}
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
Rows = dict[str, list[tuple[Any, ...]]]


def _operations(engine: Engine) -> None:
    """An accrual file funded by a merchant, a conversion, an authorisation and a partial
    capture that closes its hold, a refund, an accrual reversal, then expiry."""
    w = build_world(engine)
    for code, issuer, name in (
        ("BANKA", w.bank_a, "alice"),
        ("BANKA", w.bank_a, "carol"),
        ("BANKB", w.bank_b, "bob"),
    ):
        member(engine, issuer, code, name)
    link(engine, w.bank_b, ("BANKA", "alice"), ("BANKB", "bob"))
    file = AccrualBatchCreate(
        items=[
            # A reference in another script and a memo: the memo's stored text must agree too.
            AccrualCreate(program="BANKA", external_id="alice", points=3000, reference="订单 7"),
            AccrualCreate(program="BANKA", external_id="carol", points=1200, reference="r-2"),
            AccrualCreate(program="BANKA", external_id="alice", points=777),
        ]
    )
    with transaction(engine) as session:
        batch, _ = accruals.accrue_batch(session, w.shop, file, T0 + timedelta(hours=1), key())
    accrue(engine, w.bank_a, "BANKA", "alice", 500, now=T0 + timedelta(days=40))
    convert(engine, w.bank_a, ("BANKA", "alice"), ("BANKB", "bob"), 1000, T0 + timedelta(days=41))
    at = T0 + timedelta(days=42)
    checkout = authorise(engine, w.shop, "BANKA", "alice", 900, now=at)
    capture(engine, w.shop, checkout.id, amount=600, now=at + timedelta(minutes=5))
    with transaction(engine) as session:
        exchange.refund(
            session, w.shop, checkout.id, RefundCreate(amount=250), at + timedelta(days=1), key()
        )
        accruals.reverse_accrual(
            session,
            w.shop,
            batch.accrual_ids[1],
            AccrualReversalCreate(points=200),
            at + timedelta(days=2),
            key(),
        )
    # The file's lots (12 months) expire; the issuer's later lot is not yet due.
    assert run_expiry(engine, T0 + timedelta(days=380))[1] > 0


def _function_calls(engine: Engine, wait: bool) -> int:
    """How many times this database ran the server function, from the statistics its sessions
    report when they end (`wait`: until some are reported)."""
    engine.dispose()
    for _ in range(50 if wait else 1):
        with engine.connect() as connection:
            calls = connection.execute(
                text(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname = :f"
                ),
                {"f": LEDGER_POST_FUNCTION},
            ).scalar_one()
        if calls:
            return int(calls)
        time.sleep(0.1)
    return 0


def _twin(url: str, engine_name: str) -> Engine:
    engine = make_engine(url)
    with engine.begin() as connection:
        name = connection.execute(text("SELECT current_database()")).scalar_one()
        connection.execute(text(f"ALTER DATABASE \"{name}\" SET track_functions = 'pl'"))
    engine.dispose()
    options = LedgerOptions(engine="server" if engine_name == "server" else "python")
    return bind_ledger_options(engine, options)


def _rows(engine: Engine) -> Rows:
    """Every row of every ledger table; JSON columns as the text stored."""
    rows: Rows = {}
    with engine.connect() as connection:
        for table in LEDGER_TABLES:
            columns = [
                sql_cast(c, String) if isinstance(c.type, JSON) else c for c in table.columns
            ]
            rows[table.name] = [tuple(r) for r in connection.execute(select(*columns))]
    return rows


def _normalised(rows: Rows) -> Rows:
    """The rows under the normalisation of the module docstring."""
    ids: set[uuid.UUID] = set()
    for table_rows in rows.values():
        for row in table_rows:
            for value in row:
                if isinstance(value, uuid.UUID):
                    ids.add(value)
                elif isinstance(value, str):
                    ids.update(uuid.UUID(found) for found in UUID_TEXT.findall(value))
    rank = {found: f"<id {n}>" for n, found in enumerate(sorted(ids))}

    def plain(value: object) -> object:
        if isinstance(value, uuid.UUID):
            return rank[value]
        if isinstance(value, str):
            return UUID_TEXT.sub(lambda m: rank[uuid.UUID(m.group())], value)
        return value

    result = {
        name: sorted((tuple(plain(v) for v in row) for row in table_rows), key=repr)
        for name, table_rows in rows.items()
    }
    per_account: dict[object, list[Any]] = defaultdict(lambda: [0, 0, 0, None])
    for account, _slot, balance, held, floor_zero in result["balances"]:
        summed = per_account[account]
        summed[0] += 1
        summed[1] += balance
        summed[2] += held
        summed[3] = floor_zero
    result["balances"] = sorted(((a, *s) for a, s in per_account.items()), key=repr)
    return result


def test_the_ledger_tables_are_every_ledger_table_of_the_core() -> None:
    core = {
        table.name
        for mapper in Base.registry.mappers
        if mapper.class_.__module__ == clearing.core.models.__name__
        for table in mapper.tables
    }
    assert {t.name for t in LEDGER_TABLES} == core - NOT_LEDGER
    assert [c.name for c in Balance.__table__.columns] == [
        "account_id",
        "slot",
        "balance",
        "held",
        "floor_zero",
    ]


def test_both_engines_leave_every_ledger_row_the_same(pg_databases: Callable[[], str]) -> None:
    on_server, in_python = _twin(pg_databases(), "server"), _twin(pg_databases(), "python")
    for engine in (on_server, in_python):
        with transaction(engine) as session:
            assert Ledger(session).on_server is (engine is on_server)
        _operations(engine)
    server_rows, python_rows = _rows(on_server), _rows(in_python)
    # What was compared is the whole story: every kind of entry, lots moved, a hold closed.
    kinds = {row[1] for row in server_rows["journal_entries"]}
    assert kinds >= {"accrual", "conversion", "checkout_capture", "expiry"}
    assert any(row[5] for row in server_rows["journal_entries"])  # refund, reversal: reverses_id
    assert {row[4] for row in server_rows["holds"]} == {"captured"}
    assert server_rows["lot_movements"]
    assert server_rows["obligations"]
    normalised = _normalised(server_rows)
    assert normalised == _normalised(python_rows)
    assert sum(len(r) for r in normalised.values()) > 100
    # And the server twin did post through the function, the other never.
    in_python.dispose()  # its sessions end (and report) before the server twin's are awaited
    assert _function_calls(on_server, wait=True) >= 3
    assert _function_calls(in_python, wait=False) == 0
    on_server.dispose()
    in_python.dispose()

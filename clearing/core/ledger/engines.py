"""The two engines that apply what `Ledger.post` decided.

The Python engine runs on every database: it moves balances, then writes journal, postings,
obligations and lots in a few statements. On PostgreSQL the server engine sends the same
decision to the `ledger_post_v2` function (clearing/core/sql/ledger_post_v2.sql) in one round trip;
`tests/clearing/test_ledger_differential.py` proves both leave every ledger row the same.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, cast

import orjson
from sqlalchemy import Table, Uuid, bindparam, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from clearing.core.db import Sql, is_postgres, violated_constraint
from clearing.core.errors import InsufficientPoints
from clearing.core.ledger.lots import new_lot
from clearing.core.ledger.model import Infos, LedgerImbalance, Move, PostedEntry, Prepared
from clearing.core.models import Balance
from clearing.core.money import BALANCE_LIMIT, AmountOutOfRange

LEDGER_POST_FUNCTION = "ledger_post_v2"
FLOOR_ZERO = "ck_balances_floor_zero_respected"
"""The balances CHECK that a floor-zero slot never goes below what it holds (its full name)."""
BALANCE_IN_RANGE = "ck_balances_balance_in_range"
"""The balances CHECK that a slot stays within BALANCE_LIMIT (its full name)."""
"""The version of the server function this code calls; migration 0008 installs it from
clearing/core/sql/ledger_post_v2.sql."""

_BALANCES = cast(Table, Balance.__table__)
MEMBER_MOVE = Sql(
    update(_BALANCES)
    .where(
        _BALANCES.c.account_id == bindparam("b_account"),
        _BALANCES.c.slot == 0,
        _BALANCES.c.balance + bindparam("d_amount") >= _BALANCES.c.held + bindparam("d_held"),
        _BALANCES.c.held + bindparam("d_held") >= 0,
    )
    .values(
        balance=_BALANCES.c.balance + bindparam("d_amount"),
        held=_BALANCES.c.held + bindparam("d_held"),
    )
    .returning(_BALANCES.c.balance)
)
_SLOT_MOVE = Sql(
    update(_BALANCES)
    .where(
        _BALANCES.c.account_id == bindparam("b_account"), _BALANCES.c.slot == bindparam("b_slot")
    )
    .values(balance=_BALANCES.c.balance + bindparam("d_amount"))
    .returning(_BALANCES.c.balance)
)
# Typed, so that SQLite's driver is given the account id as it stores it (not a UUID object).
_ROW_EXISTS = Sql(
    text("SELECT 1 FROM balances WHERE account_id = :b_account AND slot = :b_slot").bindparams(
        bindparam("b_account", type_=Uuid)
    )
)
# Beyond this many accounts in one transaction, PostgreSQL moves them in two statements.
_MANY_BALANCES = 3
_MOVES = (
    "unnest(CAST(:ids AS uuid[]), CAST(:slots AS smallint[]), CAST(:amounts AS bigint[]),"
    " CAST(:helds AS bigint[])) AS v(account_id, slot, amount, held)"
)
_LOCK_MANY = Sql(
    text(
        f"SELECT 1 FROM balances b JOIN {_MOVES} ON b.account_id = v.account_id AND b.slot = v.slot"
        " ORDER BY b.account_id, b.slot FOR UPDATE OF b"
    )
)
# The member floor is checked on the returned rows (and by the table's CHECK constraint).
_MOVE_MANY = Sql(
    text(
        "UPDATE balances b SET balance = b.balance + v.amount, held = b.held + v.held"
        f" FROM {_MOVES} WHERE b.account_id = v.account_id AND b.slot = v.slot"
        " RETURNING b.account_id, b.balance, b.held"
    )
)
_LEDGER_POST = Sql(text(f"SELECT {LEDGER_POST_FUNCTION}(CAST(:payload AS jsonb))"))


def _missing_row() -> LedgerImbalance:
    return LedgerImbalance("a balance row is missing")


def move_balances(session: Session, moves: list[Move], infos: Infos) -> None:
    """The Python engine's balance moves, in lock order; a missing row is refused."""
    if len(moves) > _MANY_BALANCES and is_postgres(session):
        _move_many_balances(session, moves, infos)
        return
    # Fixed lock order (account id, then slot) rules out deadlocks between entries.
    for account_id, slot, amount, held in moves:
        params = {"b_account": account_id, "b_slot": slot, "d_amount": amount, "d_held": held}
        if infos[account_id].floor_zero:
            if MEMBER_MOVE.first(session, params) is None:
                if _ROW_EXISTS.first(session, params) is None:
                    raise _missing_row()
                raise InsufficientPoints(
                    "not enough available points", needed=-amount if amount < 0 else held
                )
        elif _SLOT_MOVE.first(session, params) is None:
            raise _missing_row()


def _move_many_balances(session: Session, moves: list[Move], infos: Infos) -> None:
    """Two statements for any number of accounts: lock them in order, then move them."""
    params = {
        "ids": [m[0] for m in moves],
        "slots": [m[1] for m in moves],
        "amounts": [m[2] for m in moves],
        "helds": [m[3] for m in moves],
    }
    _LOCK_MANY.rows(session, params)
    try:
        rows = _MOVE_MANY.rows(session, params)
    except IntegrityError as error:
        if violated_constraint(error) == FLOOR_ZERO:
            raise insufficient(moves, infos) from None
        raise
    if len(rows) != len(moves):
        raise _missing_row()
    for account_id, balance, held in rows:
        if infos[account_id].floor_zero and (balance < held or held < 0):
            raise insufficient(moves, infos)


def server_can_post(prepared: Prepared, infos: Infos) -> bool:
    """Whether `ledger_post_v2` does exactly what the Python engine would.

    It takes lots earliest-expiring first for a single entry; give-backs, preferred lots and
    batches whose debits could read lots created earlier in the same batch stay in Python.
    """
    debited: set[uuid.UUID] = set()
    credited: set[uuid.UUID] = set()
    for _, legs in prepared:
        for leg in legs:
            if leg.restore_from is not None or leg.prefer_lots:
                return False
            if infos[leg.account_id].floor_zero:
                (debited if leg.amount < 0 else credited).add(leg.account_id)
    return not debited or (len(prepared) == 1 and not debited & credited)


def post_on_server(
    session: Session,
    prepared: Prepared,
    infos: Infos,
    moves: list[Move],
    rows: tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]],
) -> list[PostedEntry]:
    """The posting in one round trip: `ledger_post_v2` applies `moves` and `rows` (journal,
    postings, obligations) and the lots the entries create and take."""
    journal, postings, obligations = rows
    lots: list[dict[str, Any]] = []
    takes: dict[tuple[uuid.UUID, uuid.UUID], int] = defaultdict(int)
    posted: list[PostedEntry] = []
    for draft, legs in prepared:
        created: list[uuid.UUID] = []
        for leg in legs:
            if not infos[leg.account_id].floor_zero or leg.amount == 0:
                continue
            if leg.lot is not None and leg.amount > 0:
                lots.append(new_lot(draft, leg))
                created.append(lots[-1]["id"])
            else:
                takes[(draft.id, leg.account_id)] -= leg.amount
        posted.append(PostedEntry(draft.id, tuple(created)))
    payload = {
        "moves": [{"a": a, "s": s, "d": d, "h": h} for a, s, d, h in moves],
        # The JSON text the Python engine's driver writes (json.dumps), so memos match byte
        # for byte; inside the jsonb payload it is a string, which jsonb leaves as it is.
        "entries": [row | {"memo": json.dumps(row["memo"])} for row in journal],
        "postings": postings,
        "obligations": obligations,
        "lots": lots,
        "takes": [{"entry_id": e, "account_id": a, "points": n} for (e, a), n in takes.items()],
        "closed_holds": [
            {
                "id": d.closes_hold.hold_id,
                "status": d.closes_hold.status,
                "captured": d.closes_hold.captured,
                "closed_at": d.booked_at,
            }
            for d, _ in prepared
            if d.closes_hold is not None
        ],
    }
    try:
        document = orjson.dumps(payload, default=_decimal_text).decode()
        _LEDGER_POST.rows(session, {"payload": document})
    except DBAPIError as error:
        if violated_constraint(error) == FLOOR_ZERO:
            raise insufficient(moves, infos) from None
        sqlstate = getattr(error.orig, "sqlstate", None)
        if sqlstate == "CL001":
            raise LedgerImbalance("lots do not cover the balance of a member account") from None
        if sqlstate == "CL002":
            raise _missing_row() from None
        raise
    return posted


def _decimal_text(value: object) -> str:
    # orjson writes ids, times and integers itself; exact decimals go as text, never as floats.
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def insufficient(moves: list[Move], infos: Infos) -> InsufficientPoints:
    """The refusal of a posting that would take a member below zero, naming what it needed."""
    for account_id, _, amount, held in moves:
        if infos[account_id].floor_zero and (amount < 0 or held > 0):
            return InsufficientPoints(
                "not enough available points", needed=-amount if amount < 0 else held
            )
    return InsufficientPoints("not enough available points")


@contextmanager
def balances_in_range() -> Iterator[None]:
    """A balance the posting would take beyond +/- BALANCE_LIMIT is a 4xx, never a 500."""
    try:
        yield
    except DBAPIError as error:
        if (
            violated_constraint(error) == BALANCE_IN_RANGE
            or getattr(error.orig, "sqlstate", None) == "22003"
        ):
            raise AmountOutOfRange(
                f"this posting would take a balance beyond {BALANCE_LIMIT}", limit=BALANCE_LIMIT
            ) from None
        raise

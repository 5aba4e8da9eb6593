"""The double-entry, multi-asset ledger: entries, balances, lots and holds.

Every write path goes through `Ledger.post`, which is the one place where risk checks will run in
the same transaction (see ROADMAP). Balance rows are locked in account-id order, so concurrent
entries never deadlock; hot system accounts are spread over several balance slots so that
checkouts to one merchant do not queue behind one row.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import orjson
from sqlalchemy import Table, and_, bindparam, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from clearing.db import Sql, bulk_insert, is_postgres, violated_constraint
from clearing.errors import ClearingError, Conflict, InsufficientPoints, InvalidInput, NotFound
from clearing.ids import new_id
from clearing.models import (
    Account,
    Balance,
    Hold,
    JournalEntry,
    Lot,
    LotMovement,
    Obligation,
    Posting,
)
from clearing.money import BALANCE_LIMIT, MAX_AMOUNT, AmountOutOfRange
from clearing.timeutil import aware

# System account roles of a points asset, owned by the program's issuer.
ISSUED = "issued"  # debited when points are created by accrual
CONVERTED_IN = "converted_in"  # debited when points are created by conversion into the program
CONVERTED_OUT = "converted_out"  # credited when points leave the program by conversion
REDEEMED = "redeemed"  # credited when points are spent at checkout
EXPIRED = "expired"  # credited when points expire
POSITION = "position"  # a party's money position in one currency
MEMBER = "member"


FLOOR_ZERO = "ck_balances_floor_zero_respected"
"""The balances CHECK that a floor-zero slot never goes below what it holds (its full name)."""
BALANCE_IN_RANGE = "ck_balances_balance_in_range"
"""The balances CHECK that a slot stays within BALANCE_LIMIT (its full name)."""


class LedgerImbalance(ClearingError):
    status = 500
    code = "ledger_imbalance"
    title = "Entry does not balance"


class HoldNotOpen(Conflict):
    code = "hold_not_open"
    title = "Hold is not open"


class HoldExpired(Conflict):
    code = "hold_expired"
    title = "Hold has expired"


def points_asset(program_code: str) -> str:
    """The asset of a program's points."""
    return f"points:{program_code}"


def money_asset(currency: str) -> str:
    """The asset of money owed between parties in one currency."""
    return f"money:{currency}"


def account_name(asset: str, role: str, owner: uuid.UUID) -> str:
    """Account names embed a UUID, so they are unique across databases and safe to cache."""
    return f"{asset}/{role}/{owner}"


def check_amount(value: object, what: str = "points", *, allow_zero: bool = False) -> int:
    """A positive whole number that one operation may carry, or a 4xx problem."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be a whole number", field=what)
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidInput(f"{what} must be positive", field=what)
    if value > MAX_AMOUNT:
        raise AmountOutOfRange(f"{what} must be at most {MAX_AMOUNT}", field=what, limit=MAX_AMOUNT)
    return value


@dataclass(frozen=True, slots=True)
class LotSpec:
    """Where credited points came from and when they expire."""

    source: str
    expires_at: datetime | None
    funding_org_id: uuid.UUID | None = None
    source_program: str | None = None


@dataclass(frozen=True, slots=True)
class Leg:
    """One posting of an entry, plus what it does to holds and lots of a member account."""

    account_id: uuid.UUID
    amount: int
    held: int = 0
    lot: LotSpec | None = None
    restore_from: uuid.UUID | None = None
    """A credit that gives back the lots this earlier entry took."""
    prefer_lots: tuple[uuid.UUID, ...] = ()
    only_lots: bool = False


@dataclass(frozen=True, slots=True)
class ObligationDraft:
    """Money one party owes another because of this entry."""

    event_type: str
    payer_org_id: uuid.UUID
    payee_org_id: uuid.UUID
    currency: str
    amount: int
    program_code: str | None = None
    points: int | None = None
    point_value: Decimal | None = None
    point_value_version: int | None = None


@dataclass
class EntryDraft:
    """A journal entry about to be posted."""

    kind: str
    org_id: uuid.UUID
    booked_at: datetime
    legs: Sequence[Leg]
    obligations: Sequence[ObligationDraft] = ()
    reverses_id: uuid.UUID | None = None
    memo: dict[str, Any] = field(default_factory=dict)
    closes_hold: HoldClose | None = None
    """The hold this entry settles (a capture), closed in the same posting."""
    id: uuid.UUID = field(default_factory=new_id)


@dataclass(frozen=True, slots=True)
class HoldClose:
    """How an entry closes a hold: its new status and the points it captured."""

    hold_id: uuid.UUID
    status: str
    captured: int


@dataclass(frozen=True, slots=True)
class AccountInfo:
    id: uuid.UUID
    asset: str
    kind: str
    org_id: uuid.UUID
    slots: int
    floor_zero: bool


@dataclass(frozen=True, slots=True)
class HoldState:
    """A hold as read (and locked) by whoever captures or voids it."""

    id: uuid.UUID
    account_id: uuid.UUID
    points: int
    status: str
    expires_at: datetime

    def open_at(self, now: datetime) -> OpenHold:
        """The hold, if it can still be captured or voided at `now`."""
        if self.status != "authorised":
            raise HoldNotOpen(f"hold is {self.status}", hold_status=self.status)
        if aware(self.expires_at) <= now:
            raise HoldExpired(
                "hold expired; its points are released", expired_at=self.expires_at.isoformat()
            )
        return OpenHold(self.id, self.account_id, self.points)


@dataclass(frozen=True, slots=True)
class OpenHold:
    """A hold locked for capture or void."""

    id: uuid.UUID
    account_id: uuid.UUID
    points: int


@dataclass(frozen=True, slots=True)
class PostedEntry:
    id: uuid.UUID
    lots_created: tuple[uuid.UUID, ...]


# Account attributes never change after creation and ids are globally unique, so a process-wide
# cache is safe; names are cached only once seen committed by a lookup.
_ACCOUNTS: dict[uuid.UUID, AccountInfo] = {}
_NAMES: dict[str, uuid.UUID] = {}

# Checks that run inside the posting transaction before anything is written (risk controls plug in
# here). Each receives the session and the draft and raises a ClearingError to refuse it.
PostingCheck = Callable[[Session, EntryDraft], None]
_CHECKS: list[PostingCheck] = []


def register_posting_check(check: PostingCheck) -> None:
    """Add a check that every entry must pass, inside its own transaction."""
    _CHECKS.append(check)


_BALANCES = cast(Table, Balance.__table__)
_HOLDS = cast(Table, Hold.__table__)
_MEMBER_MOVE = Sql(
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
)
_RELEASE = Sql(
    update(_BALANCES)
    .where(_BALANCES.c.account_id == bindparam("b_account"), _BALANCES.c.slot == 0)
    .values(held=_BALANCES.c.held - bindparam("points"))
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
_JOURNAL = cast(Table, JournalEntry.__table__)
_POSTINGS = cast(Table, Posting.__table__)
_OBLIGATIONS = cast(Table, Obligation.__table__)
_LOTS = cast(Table, Lot.__table__)
_LOT_MOVEMENTS = cast(Table, LotMovement.__table__)
_OPEN_LOTS = Sql(
    select(_LOTS.c.id, _LOTS.c.remaining, _LOTS.c.expires_at).where(
        _LOTS.c.account_id == bindparam("account_id"), _LOTS.c.remaining > 0
    )
)
_EXPIRY_ORDER = (_LOTS.c.expires_at.is_(None), _LOTS.c.expires_at, _LOTS.c.id)
_RUNNING = (
    select(
        _LOTS.c.id,
        _LOTS.c.remaining,
        _LOTS.c.expires_at,
        (func.sum(_LOTS.c.remaining).over(order_by=_EXPIRY_ORDER) - _LOTS.c.remaining).label(
            "before"
        ),
    )
    .where(_LOTS.c.account_id == bindparam("account_id"), _LOTS.c.remaining > 0)
    .subquery()
)
# Only the lots a debit reaches, expiring first: a member with years of lots reads a few rows.
_LOTS_TO_TAKE = Sql(
    select(_RUNNING.c.id, _RUNNING.c.remaining, _RUNNING.c.expires_at)
    .where(_RUNNING.c.before < bindparam("needed"))
    .order_by(_RUNNING.c.expires_at.is_(None), _RUNNING.c.expires_at, _RUNNING.c.id)
)
_LOT_CHANGE = Sql(
    update(_LOTS)
    .where(_LOTS.c.id == bindparam("lot_id"))
    .values(remaining=_LOTS.c.remaining + bindparam("delta"))
)
_PLACE_HOLD = Sql(
    insert(_HOLDS),
    (
        "id",
        "account_id",
        "org_id",
        "points",
        "status",
        "captured_points",
        "created_at",
        "expires_at",
    ),
)
# On PostgreSQL the reservation and the hold row are one statement (one round trip).
_RESERVE_AND_HOLD = Sql(
    text(
        "WITH reserved AS (UPDATE balances SET held = held + :points"
        " WHERE account_id = :account_id AND slot = 0 AND balance >= held + :points"
        " RETURNING account_id)"
        " INSERT INTO holds (id, account_id, org_id, points, status, captured_points,"
        " created_at, expires_at)"
        " SELECT :id, account_id, :org_id, :points, :status, :captured_points, :created_at,"
        " :expires_at FROM reserved RETURNING id"
    )
)
_CLOSE_HOLD = Sql(
    update(_HOLDS)
    .where(_HOLDS.c.id == bindparam("hold_id"))
    .values(
        status=bindparam("b_status"),
        captured_points=bindparam("b_captured"),
        closed_at=bindparam("b_closed_at", type_=_HOLDS.c.closed_at.type),
    )
)


class Ledger:
    """Posting and reading on one session; the caller owns the transaction."""

    def __init__(self, session: Session, balance_slots: int = 8, on_server: bool = True) -> None:
        """`on_server=False` keeps PostgreSQL on the portable engine (tests compare the two)."""
        self.session = session
        self.balance_slots = balance_slots
        self.on_server = on_server

    # accounts -------------------------------------------------------------------------------

    def open_account(
        self, asset: str, role: str, org_id: uuid.UUID, owner: uuid.UUID, now: datetime
    ) -> uuid.UUID:
        """Create an account (member accounts floor at zero; system accounts are slotted)."""
        name = account_name(asset, role, owner)
        floor = role == MEMBER
        slots = 1 if floor else self.balance_slots
        account_id = new_id()
        self.session.execute(
            insert(Account).values(
                id=account_id,
                name=name,
                asset=asset,
                kind=role,
                org_id=org_id,
                slots=slots,
                floor_zero=floor,
                created_at=now,
            )
        )
        self.session.execute(
            insert(Balance),
            [
                {"account_id": account_id, "slot": s, "balance": 0, "held": 0, "floor_zero": floor}
                for s in range(slots)
            ],
        )
        return account_id

    def account_id(self, asset: str, role: str, owner: uuid.UUID) -> uuid.UUID:
        """The id of an existing account, by its asset, role and owner."""
        name = account_name(asset, role, owner)
        cached = _NAMES.get(name)
        if cached is not None:
            return cached
        found = self.session.execute(select(Account.id).where(Account.name == name)).scalar()
        if found is None:
            raise NotFound(f"no {role} account for {asset}")
        _NAMES[name] = found
        return found

    def info(self, account_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, AccountInfo]:
        """Attributes of accounts, from the cache or one query."""
        wanted = set(account_ids)
        missing = [a for a in wanted if a not in _ACCOUNTS]
        if missing:
            rows = self.session.execute(
                select(
                    Account.id,
                    Account.asset,
                    Account.kind,
                    Account.org_id,
                    Account.slots,
                    Account.floor_zero,
                ).where(Account.id.in_(missing))
            )
            for row in rows:
                _ACCOUNTS[row.id] = AccountInfo(*row)
        unknown = [a for a in wanted if a not in _ACCOUNTS]
        if unknown:
            raise NotFound(f"unknown account {unknown[0]}")
        return {a: _ACCOUNTS[a] for a in wanted}

    # posting --------------------------------------------------------------------------------

    def post(self, draft: EntryDraft) -> PostedEntry:
        """Post an entry: check it, lock and move balances, write journal, obligations, lots."""
        return self.post_many([draft])[0]

    def post_many(self, drafts: Sequence[EntryDraft]) -> list[PostedEntry]:
        """Post many entries in this transaction, as a partner's bulk file arrives.

        Balance changes are summed per account and applied once, in account order; rows are
        written in bulk. Each entry is still checked on its own and balances on its own.
        """
        prepared = [(draft, self._legs(draft)) for draft in drafts]
        infos = self.info(leg.account_id for _, legs in prepared for leg in legs)
        for draft, legs in prepared:
            self._check(draft, legs, infos)
        moves = self._moves([leg for _, legs in prepared for leg in legs], infos)
        journal, postings, obligations = _entry_rows(prepared, infos)
        if self.on_server and is_postgres(self.session) and _server_can_post(prepared, infos):
            with _balances_in_range():
                return self._post_on_server(prepared, infos, moves, journal, postings, obligations)
        with _balances_in_range():
            self._move_balances(moves, infos)
        bulk_insert(self.session, _JOURNAL, journal)
        bulk_insert(self.session, _POSTINGS, postings)
        bulk_insert(self.session, _OBLIGATIONS, obligations)
        lots = _LotWriter(self)
        posted = [PostedEntry(draft.id, lots.move(draft, legs, infos)) for draft, legs in prepared]
        lots.flush()
        for draft in drafts:
            if draft.closes_hold is not None:
                self._close(draft.closes_hold, draft.booked_at)
        return posted

    def _legs(self, draft: EntryDraft) -> list[Leg]:
        """The entry's legs plus the two position legs of each money obligation."""
        legs = list(draft.legs)
        for ob in draft.obligations:
            check_amount(ob.amount, "amount")
            asset = money_asset(ob.currency)
            legs.append(Leg(self.account_id(asset, POSITION, ob.payer_org_id), -ob.amount))
            legs.append(Leg(self.account_id(asset, POSITION, ob.payee_org_id), ob.amount))
        if not legs:
            raise LedgerImbalance("an entry needs postings")
        return legs

    def _check(
        self, draft: EntryDraft, legs: list[Leg], infos: dict[uuid.UUID, AccountInfo]
    ) -> None:
        totals: dict[str, int] = defaultdict(int)
        for leg in legs:
            if abs(leg.amount) > MAX_AMOUNT or abs(leg.held) > MAX_AMOUNT:
                raise AmountOutOfRange(
                    f"amount must be at most {MAX_AMOUNT}", field="amount", limit=MAX_AMOUNT
                )
            info = infos[leg.account_id]
            totals[info.asset] += leg.amount
            if info.floor_zero and leg.amount > 0 and leg.lot is None and leg.restore_from is None:
                raise LedgerImbalance(
                    "a credit to a member account must say where points came from"
                )
        unbalanced = sorted(asset for asset, total in totals.items() if total != 0)
        if unbalanced:
            raise LedgerImbalance(f"postings do not sum to zero for {', '.join(unbalanced)}")
        for check in _CHECKS:
            check(self.session, draft)

    def _post_on_server(
        self,
        prepared: list[tuple[EntryDraft, list[Leg]]],
        infos: dict[uuid.UUID, AccountInfo],
        moves: list[Move],
        journal: list[dict[str, Any]],
        postings: list[dict[str, Any]],
        obligations: list[dict[str, Any]],
    ) -> list[PostedEntry]:
        """The same posting in one round trip: `ledger_post` (migration 0004) applies it."""
        lots: list[dict[str, Any]] = []
        takes: dict[tuple[uuid.UUID, uuid.UUID], int] = defaultdict(int)
        posted: list[PostedEntry] = []
        for draft, legs in prepared:
            created: list[uuid.UUID] = []
            for leg in legs:
                if not infos[leg.account_id].floor_zero or leg.amount == 0:
                    continue
                if leg.lot is not None and leg.amount > 0:
                    lots.append(_new_lot(draft, leg))
                    created.append(lots[-1]["id"])
                else:
                    takes[(draft.id, leg.account_id)] -= leg.amount
            posted.append(PostedEntry(draft.id, tuple(created)))
        payload = {
            "moves": [{"a": a, "s": s, "d": d, "h": h} for a, s, d, h in moves],
            "entries": journal,
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
            _LEDGER_POST.rows(self.session, {"payload": document})
        except DBAPIError as error:
            if violated_constraint(error) == FLOOR_ZERO:
                raise _insufficient(moves, infos) from None
            if getattr(error.orig, "sqlstate", None) == "CL001":
                raise LedgerImbalance("lots do not cover the balance of a member account") from None
            raise
        return posted

    def _moves(self, legs: Sequence[Leg], infos: dict[uuid.UUID, AccountInfo]) -> list[Move]:
        """Balance changes summed per account, in lock order, each on one slot."""
        deltas: dict[uuid.UUID, list[int]] = defaultdict(lambda: [0, 0])
        for leg in legs:
            deltas[leg.account_id][0] += leg.amount
            deltas[leg.account_id][1] += leg.held
        for amount, held in deltas.values():
            # Checked here, in exact integers, so that no sum of a bulk file reaches the database
            # as a number its 64-bit columns cannot hold.
            if abs(amount) > BALANCE_LIMIT or abs(held) > BALANCE_LIMIT:
                raise AmountOutOfRange(
                    f"this posting would move one balance by more than {BALANCE_LIMIT}",
                    limit=BALANCE_LIMIT,
                )
        return [
            (account_id, self._slot(infos[account_id]), amount, held)
            for account_id, (amount, held) in sorted(deltas.items())
            if amount or held
        ]

    def _move_balances(self, moves: list[Move], infos: dict[uuid.UUID, AccountInfo]) -> None:
        if len(moves) > _MANY_BALANCES and self.session.get_bind().dialect.name == "postgresql":
            self._move_many_balances(moves, infos)
            return
        # Fixed lock order (account id, then slot) rules out deadlocks between entries.
        for account_id, slot, amount, held in moves:
            if infos[account_id].floor_zero:
                row = _MEMBER_MOVE.first(
                    self.session, {"b_account": account_id, "d_amount": amount, "d_held": held}
                )
                if row is None:
                    raise InsufficientPoints(
                        "not enough available points", needed=-amount if amount < 0 else held
                    )
            else:
                _SLOT_MOVE.rows(
                    self.session, {"b_account": account_id, "b_slot": slot, "d_amount": amount}
                )

    @staticmethod
    def _slot(info: AccountInfo) -> int:
        # Spreading a hot account over slots lets concurrent entries update different rows.
        return 0 if info.slots == 1 else random.randrange(info.slots)

    def _move_many_balances(self, moves: list[Move], infos: dict[uuid.UUID, AccountInfo]) -> None:
        """Two statements for any number of accounts: lock them in order, then move them."""
        params = {
            "ids": [m[0] for m in moves],
            "slots": [m[1] for m in moves],
            "amounts": [m[2] for m in moves],
            "helds": [m[3] for m in moves],
        }
        _LOCK_MANY.rows(self.session, params)
        try:
            rows = _MOVE_MANY.rows(self.session, params)
        except IntegrityError as error:
            if violated_constraint(error) == FLOOR_ZERO:
                raise InsufficientPoints("not enough available points") from None
            raise
        if len(rows) != len(moves):
            raise LedgerImbalance("a balance row is missing")
        for account_id, balance, held in rows:
            if infos[account_id].floor_zero and (balance < held or held < 0):
                raise InsufficientPoints("not enough available points", account=str(account_id))

    def _take_lots(self, leg: Leg) -> list[tuple[uuid.UUID, int]]:
        """Which lots a debit takes: preferred lots first, then those expiring first."""
        needed = -leg.amount
        if not leg.prefer_lots:
            rows = _LOTS_TO_TAKE.rows(
                self.session, {"account_id": leg.account_id, "needed": needed}
            )
        else:
            rows = _OPEN_LOTS.rows(self.session, {"account_id": leg.account_id})
        if leg.only_lots:
            rows = [r for r in rows if r.id in leg.prefer_lots]
        preferred = {lot_id: n for n, lot_id in enumerate(leg.prefer_lots)}
        rows.sort(
            key=lambda r: (
                preferred.get(r.id, len(preferred)),
                r.expires_at is None,
                r.expires_at or datetime.min,
                r.id,
            )
        )
        taken: list[tuple[uuid.UUID, int]] = []
        for row in rows:
            if needed == 0:
                break
            n = min(needed, row.remaining)
            taken.append((row.id, n))
            needed -= n
        if needed:
            raise LedgerImbalance("lots do not cover the balance of a member account")
        return taken

    def _restorable(
        self, account_id: uuid.UUID, original: uuid.UUID, points: int
    ) -> list[tuple[uuid.UUID, int]]:
        """Give back points to the lots `original` took, latest-expiring first."""
        taken = dict(
            self.session.execute(
                select(LotMovement.lot_id, -LotMovement.points)
                .join(Lot, Lot.id == LotMovement.lot_id)
                .where(LotMovement.entry_id == original, Lot.account_id == account_id)
            ).all()
        )
        given_back = dict(
            self.session.execute(
                select(LotMovement.lot_id, func.sum(LotMovement.points))
                .join(JournalEntry, JournalEntry.id == LotMovement.entry_id)
                .where(JournalEntry.reverses_id == original, LotMovement.points > 0)
                .group_by(LotMovement.lot_id)
            ).all()
        )
        expiry = dict(
            self.session.execute(
                select(Lot.id, Lot.expires_at).where(Lot.id.in_(list(taken)))
            ).all()
        )
        order = sorted(
            taken,
            key=lambda lot: (expiry[lot] is not None, expiry[lot] or datetime.min, lot),
            reverse=True,
        )
        result: list[tuple[uuid.UUID, int]] = []
        for lot_id in order:
            room = taken[lot_id] - (given_back.get(lot_id) or 0)
            n = min(room, points)
            if n > 0:
                result.append((lot_id, n))
                points -= n
        if points:
            raise LedgerImbalance("cannot give back more points than the original entry took")
        return result

    # holds ----------------------------------------------------------------------------------

    def place_hold(
        self,
        account_id: uuid.UUID,
        points: int,
        org_id: uuid.UUID,
        now: datetime,
        expires_at: datetime,
    ) -> uuid.UUID:
        """Reserve points on a member account (available = balance - held)."""
        check_amount(points)
        hold = {
            "id": new_id(),
            "account_id": account_id,
            "org_id": org_id,
            "points": points,
            "status": "authorised",
            "captured_points": 0,
            "created_at": now,
            "expires_at": expires_at,
        }
        placed = self._reserve(hold)
        # Expired holds are released lazily: only when they stand in the way.
        if not placed and self.release_expired_holds(now, account_id=account_id):
            placed = self._reserve(hold)
        if not placed:
            raise InsufficientPoints("not enough available points", needed=points)
        return cast(uuid.UUID, hold["id"])

    def _reserve(self, hold: dict[str, Any]) -> bool:
        """Hold the points if they are available, and record the hold; False if they are not."""
        if is_postgres(self.session):
            return _RESERVE_AND_HOLD.first(self.session, hold) is not None
        move = {"b_account": hold["account_id"], "d_amount": 0, "d_held": hold["points"]}
        if _MEMBER_MOVE.first(self.session, move) is None:
            return False
        _PLACE_HOLD.rows(self.session, hold)
        return True

    def _close(self, close: HoldClose, now: datetime) -> None:
        _CLOSE_HOLD.rows(
            self.session,
            {
                "hold_id": close.hold_id,
                "b_status": close.status,
                "b_captured": close.captured,
                "b_closed_at": now,
            },
        )

    def void_hold(self, hold: OpenHold, now: datetime) -> None:
        """Release all points of an open hold and mark it voided."""
        self._release(hold.account_id, hold.points)
        self._close(HoldClose(hold.id, "voided", 0), now)

    def _release(self, account_id: uuid.UUID, points: int) -> None:
        _RELEASE.rows(self.session, {"b_account": account_id, "points": points})

    def release_expired_holds(
        self, now: datetime, account_id: uuid.UUID | None = None, limit: int = 1000
    ) -> int:
        """Release holds whose time-to-live has passed; returns how many were released."""
        query = select(Hold.id, Hold.account_id, Hold.points).where(
            Hold.status == "authorised", Hold.expires_at <= now
        )
        if account_id is not None:
            query = query.where(Hold.account_id == account_id)
        rows = list(self.session.execute(query.order_by(Hold.account_id).limit(limit)))
        for row in rows:
            released = self.session.execute(
                update(Hold)
                .where(and_(Hold.id == row.id, Hold.status == "authorised"))
                .values(status="expired", closed_at=now)
            ).rowcount  # type: ignore[attr-defined]
            if released:
                self._release(row.account_id, row.points)
        return len(rows)

    # reading --------------------------------------------------------------------------------

    def balance(self, account_id: uuid.UUID) -> int:
        """The balance of an account, summed over its slots."""
        return int(
            self.session.execute(
                select(func.coalesce(func.sum(Balance.balance), 0)).where(
                    Balance.account_id == account_id
                )
            ).scalar_one()
        )

    def member_balance(self, account_id: uuid.UUID, now: datetime) -> tuple[int, int]:
        """Balance and points held by open, unexpired holds of a member account."""
        balance = self.balance(account_id)
        held = self.session.execute(
            select(func.coalesce(func.sum(Hold.points), 0)).where(
                Hold.account_id == account_id, Hold.status == "authorised", Hold.expires_at > now
            )
        ).scalar_one()
        return balance, int(held)


def expire_due_lots(session: Session, now: datetime, limit: int = 1000) -> int:
    """Post the expiry of lots due by `now`, one entry per member account; returns points expired.

    Points held by an open hold are not expired while held: the lot stays due and the next run
    expires it once the hold is released. Safe to run twice: expired lots have nothing left.
    """
    ledger = Ledger(session)
    due = session.execute(
        select(Lot.account_id, Lot.id)
        .where(Lot.expires_at <= now, Lot.remaining > 0)
        .order_by(Lot.account_id, Lot.expires_at, Lot.id)
        .limit(limit)
    ).all()
    by_account: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for account_id, lot_id in due:
        by_account[account_id].append(lot_id)
    total = 0
    for account_id, lot_ids in by_account.items():
        info = ledger.info([account_id])[account_id]
        row = session.execute(
            select(Balance.balance, Balance.held)
            .where(Balance.account_id == account_id, Balance.slot == 0)
            .with_for_update()
        ).one()
        due_points = session.execute(
            select(func.sum(Lot.remaining)).where(Lot.id.in_(lot_ids))
        ).scalar_one()
        points = min(int(due_points), row.balance - row.held)
        if points <= 0:
            continue
        expired_account = session.execute(
            select(Account.id).where(Account.asset == info.asset, Account.kind == EXPIRED)
        ).scalar_one()
        ledger.post(
            EntryDraft(
                kind="expiry",
                org_id=info.org_id,
                booked_at=now,
                legs=[
                    Leg(account_id, -points, prefer_lots=tuple(lot_ids), only_lots=True),
                    Leg(expired_account, points),
                ],
            )
        )
        total += points
    return total


class _LotWriter:
    """Lot changes of a batch of entries: new lots are written in bulk; a debit or a give-back
    first writes what is pending, so that it reads the lots as the earlier entries left them."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.new_lots: list[dict[str, Any]] = []
        self.changes: dict[uuid.UUID, int] = defaultdict(int)
        self.movements: list[dict[str, Any]] = []

    def move(
        self, draft: EntryDraft, legs: Sequence[Leg], infos: dict[uuid.UUID, AccountInfo]
    ) -> tuple[uuid.UUID, ...]:
        created: list[uuid.UUID] = []
        moved: dict[uuid.UUID, int] = defaultdict(int)
        for leg in legs:
            if not infos[leg.account_id].floor_zero or leg.amount == 0:
                continue
            if leg.lot is not None and leg.amount > 0:
                self.new_lots.append(_new_lot(draft, leg) | {"remaining": leg.amount})
                created.append(self.new_lots[-1]["id"])
                # A new lot's creation is its `points`; movements record later changes.
                continue
            self.flush()
            if leg.amount < 0:
                found = self.ledger._take_lots(leg)
                sign = -1
            else:
                assert leg.restore_from is not None
                found = self.ledger._restorable(leg.account_id, leg.restore_from, leg.amount)
                sign = 1
            for lot_id, n in found:
                moved[lot_id] += sign * n
                self.changes[lot_id] += sign * n
        self.movements.extend(
            {"entry_id": draft.id, "lot_id": lot_id, "points": delta}
            for lot_id, delta in moved.items()
            if delta
        )
        if self.changes:
            self.flush()
        return tuple(created)

    def flush(self) -> None:
        session = self.ledger.session
        if self.new_lots:
            bulk_insert(session, _LOTS, self.new_lots)
            self.new_lots = []
        if self.changes:
            _LOT_CHANGE.run_many(
                session, [{"lot_id": k, "delta": v} for k, v in self.changes.items() if v]
            )
            self.changes = defaultdict(int)
        if self.movements:
            bulk_insert(session, _LOT_MOVEMENTS, self.movements)
            self.movements = []


Move = tuple[uuid.UUID, int, int, int]
"""A balance change: account, slot, amount, held."""

_LEDGER_POST = Sql(text("SELECT ledger_post(CAST(:payload AS jsonb))"))


def _server_can_post(
    prepared: list[tuple[EntryDraft, list[Leg]]], infos: dict[uuid.UUID, AccountInfo]
) -> bool:
    """Whether `ledger_post` does exactly what the Python engine would.

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


def _decimal_text(value: object) -> str:
    # orjson writes ids, times and integers itself; exact decimals go as text, never as floats.
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _insufficient(moves: list[Move], infos: dict[uuid.UUID, AccountInfo]) -> InsufficientPoints:
    for account_id, _, amount, held in moves:
        if infos[account_id].floor_zero and (amount < 0 or held > 0):
            return InsufficientPoints(
                "not enough available points", needed=-amount if amount < 0 else held
            )
    return InsufficientPoints("not enough available points")


def _new_lot(draft: EntryDraft, leg: Leg) -> dict[str, Any]:
    assert leg.lot is not None
    return {
        "id": new_id(),
        "account_id": leg.account_id,
        "entry_id": draft.id,
        "source": leg.lot.source,
        "funding_org_id": leg.lot.funding_org_id,
        "source_program": leg.lot.source_program,
        "earned_at": draft.booked_at,
        "expires_at": leg.lot.expires_at,
        "points": leg.amount,
    }


def _entry_rows(
    prepared: list[tuple[EntryDraft, list[Leg]]], infos: dict[uuid.UUID, AccountInfo]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Journal, posting and obligation rows of the entries, as both engines write them."""
    journal = [
        {
            "id": d.id,
            "kind": d.kind,
            "org_id": d.org_id,
            "booked_at": d.booked_at,
            "reverses_id": d.reverses_id,
            "memo": d.memo,
        }
        for d, _ in prepared
    ]
    postings = [
        {
            "entry_id": draft.id,
            "leg": n,
            "account_id": leg.account_id,
            "asset": infos[leg.account_id].asset,
            "amount": leg.amount,
        }
        for draft, legs in prepared
        for n, leg in enumerate(legs)
        if leg.amount != 0
    ]
    obligations = [
        {
            "entry_id": draft.id,
            "seq": n,
            "event_type": ob.event_type,
            "payer_org_id": ob.payer_org_id,
            "payee_org_id": ob.payee_org_id,
            "currency": ob.currency,
            "amount": ob.amount,
            "program_code": ob.program_code,
            "points": ob.points,
            "point_value": ob.point_value,
            "point_value_version": ob.point_value_version,
            "original_entry_id": draft.reverses_id,
            "booked_at": draft.booked_at,
        }
        for draft, _ in prepared
        for n, ob in enumerate(draft.obligations)
    ]
    return journal, postings, obligations


@contextmanager
def _balances_in_range() -> Iterator[None]:
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

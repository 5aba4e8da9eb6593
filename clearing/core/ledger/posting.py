"""The Ledger: accounts, posting (what an entry is and every check it passes) and reading.

Every write path goes through `Ledger.post`; the risk policy has screened the operation before,
in the same transaction (`clearing.core.policy`). Balance rows are locked in account-id order, so concurrent
entries never deadlock; hot system accounts are spread over several balance slots so that
checkouts to one merchant do not queue behind one row.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from clearing.core.db import bulk_insert, is_postgres
from clearing.core.errors import NotFound
from clearing.core.ids import new_id
from clearing.core.kinds import HoldStatus
from clearing.core.ledger import engines, holds
from clearing.core.ledger.lots import LotWriter
from clearing.core.ledger.model import (
    MEMBER,
    POSITION,
    AccountInfo,
    EntryDraft,
    Infos,
    LedgerImbalance,
    Leg,
    Move,
    PostedEntry,
    Prepared,
    account_name,
    check_amount,
    money_asset,
)
from clearing.core.ledger.options import ledger_options
from clearing.core.models import Account, Balance, Hold, JournalEntry, Obligation, Posting
from clearing.core.money import BALANCE_LIMIT, MAX_AMOUNT, AmountOutOfRange

# Account attributes never change after creation and ids are globally unique, so a process-wide
# cache is safe; names are cached only once seen committed by a lookup.
_ACCOUNTS: dict[uuid.UUID, AccountInfo] = {}
_NAMES: dict[str, uuid.UUID] = {}

_JOURNAL = cast(Table, JournalEntry.__table__)
_POSTINGS = cast(Table, Posting.__table__)
_OBLIGATIONS = cast(Table, Obligation.__table__)


class Ledger:
    """Posting and reading on one session; the caller owns the transaction."""

    def __init__(
        self, session: Session, balance_slots: int | None = None, on_server: bool | None = None
    ) -> None:
        """Slots and engine default to the options bound to the session's engine
        (`CLEARING_BALANCE_SLOTS`, `CLEARING_LEDGER_ENGINE`); tests pass them to compare."""
        options = ledger_options(session)
        self.session = session
        self.balance_slots = options.balance_slots if balance_slots is None else balance_slots
        self.on_server = options.engine == "server" if on_server is None else on_server

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
        rows = entry_rows(prepared, infos)
        if (
            self.on_server
            and is_postgres(self.session)
            and engines.server_can_post(prepared, infos)
        ):
            with engines.balances_in_range():
                return engines.post_on_server(self.session, prepared, infos, moves, rows)
        with engines.balances_in_range():
            engines.move_balances(self.session, moves, infos)
        for table, table_rows in zip((_JOURNAL, _POSTINGS, _OBLIGATIONS), rows, strict=True):
            bulk_insert(self.session, table, table_rows)
        lots = LotWriter(self.session)
        posted = [PostedEntry(draft.id, lots.move(draft, legs, infos)) for draft, legs in prepared]
        lots.flush()
        for draft in drafts:
            if draft.closes_hold is not None:
                holds.close_hold(self.session, draft.closes_hold, draft.booked_at)
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

    def _check(self, draft: EntryDraft, legs: list[Leg], infos: Infos) -> None:
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

    def _moves(self, legs: Sequence[Leg], infos: Infos) -> list[Move]:
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
            (account_id, _slot(infos[account_id]), amount, held)
            for account_id, (amount, held) in sorted(deltas.items())
            if amount or held
        ]

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
        return holds.place_hold(self.session, account_id, points, org_id, now, expires_at)

    def void_hold(self, hold: holds.OpenHold, now: datetime) -> None:
        """Release all points of an open hold and mark it voided."""
        holds.void_hold(self.session, hold, now)

    def release_expired_holds(
        self, now: datetime, account_id: uuid.UUID | None = None, limit: int = 1000
    ) -> int:
        """Release holds whose time-to-live has passed; returns how many were released."""
        return holds.release_expired_holds(self.session, now, account_id, limit)

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
                Hold.account_id == account_id,
                Hold.status == HoldStatus.AUTHORISED,
                Hold.expires_at > now,
            )
        ).scalar_one()
        return balance, int(held)


def _slot(info: AccountInfo) -> int:
    # Spreading a hot account over slots lets concurrent entries update different rows.
    return 0 if info.slots == 1 else random.randrange(info.slots)


def entry_rows(
    prepared: Prepared, infos: Infos
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

"""What the ledger is made of: account roles, entry drafts, their legs, lots and obligations."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from clearing.core.errors import ClearingError, InvalidInput
from clearing.core.ids import new_id
from clearing.core.kinds import EntryKind, HoldStatus, LotSource, ObligationEvent
from clearing.core.money import MAX_AMOUNT, AmountOutOfRange

# System account roles of a points asset, owned by the program's issuer.
ISSUED = "issued"  # debited when points are created by accrual
CONVERTED_IN = "converted_in"  # debited when points are created by conversion into the program
CONVERTED_OUT = "converted_out"  # credited when points leave the program by conversion
REDEEMED = "redeemed"  # credited when points are spent at checkout
EXPIRED = "expired"  # credited when points expire
POSITION = "position"  # a party's money position in one currency
MEMBER = "member"


class LedgerImbalance(ClearingError):
    status = 500
    code = "ledger_imbalance"
    title = "Entry does not balance"


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

    source: LotSource
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

    event_type: ObligationEvent
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

    kind: EntryKind
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
    status: HoldStatus
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
class PostedEntry:
    id: uuid.UUID
    lots_created: tuple[uuid.UUID, ...]


Move = tuple[uuid.UUID, int, int, int]
"""A balance change: account, slot, amount, held."""

Prepared = list[tuple[EntryDraft, list[Leg]]]
"""Entries of one posting, each with its legs (the obligations' position legs included)."""

Infos = dict[uuid.UUID, AccountInfo]

"""The double-entry, multi-asset ledger: entries, balances, lots and holds.

- `model`: account roles, entry drafts and their legs, lots and obligations;
- `posting`: the `Ledger` (accounts, the checks every entry passes, reading);
- `engines`: who applies a posting: the Python engine, or `ledger_post_v2` on PostgreSQL;
- `lots`, `holds`, `expiry`: lots taken and given back, two-phase holds, expiry of due lots;
- `options`: which engine and how many balance slots, from the settings.
"""

from clearing.core.ledger.engines import BALANCE_IN_RANGE, FLOOR_ZERO, LEDGER_POST_FUNCTION
from clearing.core.ledger.expiry import expire_due_lots
from clearing.core.ledger.holds import HoldExpired, HoldNotOpen, HoldState, OpenHold
from clearing.core.ledger.model import (
    CONVERTED_IN,
    CONVERTED_OUT,
    EXPIRED,
    ISSUED,
    MEMBER,
    POSITION,
    REDEEMED,
    AccountInfo,
    EntryDraft,
    HoldClose,
    LedgerImbalance,
    Leg,
    LotSpec,
    Move,
    ObligationDraft,
    PostedEntry,
    account_name,
    check_amount,
    money_asset,
    points_asset,
)
from clearing.core.ledger.options import LedgerOptions, bind_ledger_options, ledger_options
from clearing.core.ledger.posting import Ledger

__all__ = [
    "BALANCE_IN_RANGE",
    "CONVERTED_IN",
    "CONVERTED_OUT",
    "EXPIRED",
    "FLOOR_ZERO",
    "ISSUED",
    "LEDGER_POST_FUNCTION",
    "MEMBER",
    "POSITION",
    "REDEEMED",
    "AccountInfo",
    "EntryDraft",
    "HoldClose",
    "HoldExpired",
    "HoldNotOpen",
    "HoldState",
    "Ledger",
    "LedgerImbalance",
    "LedgerOptions",
    "Leg",
    "LotSpec",
    "Move",
    "ObligationDraft",
    "OpenHold",
    "PostedEntry",
    "account_name",
    "bind_ledger_options",
    "check_amount",
    "expire_due_lots",
    "ledger_options",
    "money_asset",
    "points_asset",
]

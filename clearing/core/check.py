"""`clearing ledger check`: recompute every balance from the journal and report any difference."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clearing.core.kinds import HoldStatus
from clearing.core.ledger import POSITION
from clearing.core.models import Account, Balance, Hold, Lot, LotMovement, Obligation, Posting

Balances = dict[uuid.UUID, tuple[int, int]]
"""Per account: the sum of its balance rows and of what they hold."""


def check_ledger(session: Session) -> list[str]:
    """Every difference between the journal and what is derived from it (empty: all is well)."""
    accounts = {account.id: account for account in session.execute(select(Account)).scalars()}
    balances: Balances = {
        row.account_id: (int(row.balance), int(row.held))
        for row in session.execute(
            select(
                Balance.account_id,
                func.sum(Balance.balance).label("balance"),
                func.sum(Balance.held).label("held"),
            ).group_by(Balance.account_id)
        )
    }
    return [
        *_check_balances(session, accounts, balances),
        *_check_entries(session),
        *_check_members(session, accounts, balances),
        *_check_lots(session),
        *_check_obligations(session),
    ]


def _check_balances(
    session: Session, accounts: dict[uuid.UUID, Account], balances: Balances
) -> list[str]:
    """Each account's balance is the sum of its postings; each asset's balances sum to zero."""
    errors: list[str] = []
    posted = dict(
        session.execute(
            select(Posting.account_id, func.sum(Posting.amount)).group_by(Posting.account_id)
        ).all()
    )
    per_asset: dict[str, int] = defaultdict(int)
    for account_id, account_row in accounts.items():
        balance, held = balances.get(account_id, (0, 0))
        expected = int(posted.get(account_id, 0))
        per_asset[account_row.asset] += balance
        if balance != expected:
            errors.append(
                f"account {account_row.name}: balance {balance} but postings sum to {expected}"
            )
        if account_row.floor_zero and (balance < 0 or held < 0 or held > balance):
            errors.append(f"member account {account_row.name}: balance {balance}, held {held}")
    for asset, total in sorted(per_asset.items()):
        if total != 0:
            errors.append(f"asset {asset}: balances sum to {total}, not zero")
    return errors


def _check_entries(session: Session) -> list[str]:
    """Each entry's postings sum to zero per asset."""
    return [
        f"entry {entry_id}: postings of {asset} sum to {total}"
        for entry_id, asset, total in session.execute(
            select(Posting.entry_id, Posting.asset, func.sum(Posting.amount))
            .group_by(Posting.entry_id, Posting.asset)
            .having(func.sum(Posting.amount) != 0)
        )
    ]


def _check_members(
    session: Session, accounts: dict[uuid.UUID, Account], balances: Balances
) -> list[str]:
    """A member's held points are its open holds; its balance is what its lots still hold."""
    errors: list[str] = []
    open_holds = dict(
        session.execute(
            select(Hold.account_id, func.sum(Hold.points))
            .where(Hold.status == HoldStatus.AUTHORISED)
            .group_by(Hold.account_id)
        ).all()
    )
    lots = dict(
        session.execute(
            select(Lot.account_id, func.sum(Lot.remaining)).group_by(Lot.account_id)
        ).all()
    )
    for account_id, account_row in accounts.items():
        if not account_row.floor_zero:
            continue
        balance, held_now = balances.get(account_id, (0, 0))
        holding = int(open_holds.get(account_id) or 0)
        if holding != held_now:
            errors.append(
                f"member account {account_row.name}: held {held_now} but open holds sum to {holding}"
            )
        in_lots = int(lots.get(account_id) or 0)
        if in_lots != balance:
            errors.append(
                f"member account {account_row.name}: balance {balance} but lots hold {in_lots}"
            )
    return errors


def _check_lots(session: Session) -> list[str]:
    """Each lot's remaining points are its points plus its movements."""
    moved = Lot.points + func.coalesce(func.sum(LotMovement.points), 0)
    return [
        f"lot {lot_id}: remaining {remaining} but points and movements give {expected}"
        for lot_id, remaining, expected in session.execute(
            select(Lot.id, Lot.remaining, moved)
            .outerjoin(LotMovement, LotMovement.lot_id == Lot.id)
            .group_by(Lot.id, Lot.remaining, Lot.points)
            .having(Lot.remaining != moved)
        )
    ]


def _check_obligations(session: Session) -> list[str]:
    """Each party's money position equals what it is owed less what it owes."""
    net: dict[tuple[uuid.UUID, str], int] = defaultdict(int)
    for payer, payee, currency, amount in session.execute(
        select(
            Obligation.payer_org_id,
            Obligation.payee_org_id,
            Obligation.currency,
            func.sum(Obligation.amount),
        ).group_by(Obligation.payer_org_id, Obligation.payee_org_id, Obligation.currency)
    ):
        net[(payer, currency)] -= int(amount)
        net[(payee, currency)] += int(amount)
    errors: list[str] = []
    positions = session.execute(
        select(Account.org_id, Account.asset, func.sum(Balance.balance))
        .join(Balance, Balance.account_id == Account.id)
        .where(Account.kind == POSITION)
        .group_by(Account.org_id, Account.asset)
    )
    seen: set[tuple[uuid.UUID, str]] = set()
    for org_id, asset, balance in positions:
        key = (org_id, asset.removeprefix("money:"))
        seen.add(key)
        if int(balance) != net.get(key, 0):
            errors.append(
                f"position of {org_id} in {key[1]}: {balance} but obligations net to {net.get(key, 0)}"
            )
    for key, amount in net.items():
        if key not in seen and amount:
            errors.append(f"obligations of {key[0]} in {key[1]} have no position account")
    return errors

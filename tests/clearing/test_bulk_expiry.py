"""Set-based expiry keeps the same books as the per-member path: twin worlds, one expired by
`expire_due_lots` (an entry per member), the other by `run_expiry` (an entry per chunk of up to 64 members), stopped
half-way and resumed, then every row that carries points is compared.

Compared, per twin, under the rank of ids made before the expiry (both twins make them in the
same order): balances per account (sum over slots of balance and held), every lot (remaining),
postings summed per account, lot movements summed per lot, holds; `check_ledger` is clean (each
entry's legs sum to zero per asset, balances are their postings). Entry ids and how many expiry
entries there are differ by design and are not compared.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from clearing.core.check import check_ledger
from clearing.core.db import make_engine, transaction
from clearing.core.kinds import EntryKind
from clearing.core.ledger import Ledger, expire_due_lots
from clearing.core.ledger.expiry import ExpiryChunk, due_accounts, expire_chunk
from clearing.core.models import Account, Balance, Hold, JournalEntry, Lot, LotMovement, Posting
from clearing.core.tasks import run_expiry
from tests.factories import (
    T0,
    accrue,
    authorise,
    balance,
    build_world,
    capture,
    issuer_of,
    member,
)

RUN = T0 + timedelta(days=760)
"""BANKA's lots (12 months) of the first 395 days are due, BANKB's (24 months) of day 0."""


class Stopped(Exception):
    """The run is killed after a chunk committed."""


def _world(engine: Engine) -> None:
    w = build_world(engine)
    for n in range(8):
        name = f"a{n}"
        member(engine, w.bank_a, "BANKA", name)
        accrue(engine, w.bank_a, "BANKA", name, 1000 + 37 * n, now=T0)
        accrue(engine, w.bank_a, "BANKA", name, 500, now=T0 + timedelta(days=30))
        accrue(engine, w.bank_a, "BANKA", name, 250, now=T0 + timedelta(days=500))  # not due
    for n in range(3):
        name = f"b{n}"
        member(engine, w.bank_b, "BANKB", name)
        accrue(engine, w.bank_b, "BANKB", name, 900 + n, now=T0)
        accrue(engine, w.bank_b, "BANKB", name, 100, now=T0 + timedelta(days=100))  # not due
    member(engine, w.carrier, "MOBILE", "c0")
    accrue(engine, w.carrier, "MOBILE", "c0", 700, now=T0)  # never expires
    # a1 spent 400 points (200 fen at 0.005) on day 100: taken from its earliest lot.
    out = authorise(engine, w.shop, "BANKA", "a1", 200, now=T0 + timedelta(days=100))
    capture(engine, w.shop, out.id, now=T0 + timedelta(days=100, minutes=1))
    # a3 holds 1,600 of its 1,861 points at the run: 261 are free, fewer than its 1,611 due.
    authorise(engine, w.shop, "BANKA", "a3", 800, now=RUN - timedelta(minutes=5))
    # a4 holds all its 1,898 points: nothing of its due points expires while held.
    authorise(engine, w.shop, "BANKA", "a4", 949, now=RUN - timedelta(minutes=5))
    # a5's hold lapsed long ago: the run releases it first, then expires all that is due.
    authorise(engine, w.shop, "BANKA", "a5", 500, now=T0 + timedelta(days=600))


def _per_member(engine: Engine) -> None:
    with transaction(engine) as session:
        Ledger(session).release_expired_holds(RUN)
        assert expire_due_lots(session, RUN, limit=100_000) > 0


def _set_based(engine: Engine) -> None:
    chunks: list[ExpiryChunk] = []

    def killed_after_two(done: ExpiryChunk) -> None:
        chunks.append(done)
        if len(chunks) == 2:
            raise Stopped

    with pytest.raises(Stopped):
        run_expiry(engine, RUN, chunk=2, progress=killed_after_two)
    with transaction(engine) as session:
        # Two chunks of two accounts (a0 to a3) committed; what they expired stays expired,
        # and a3 keeps due lots under its hold.
        assert due_accounts(session, RUN) == 11 - 3
    released, points = run_expiry(engine, RUN, chunk=3)
    assert released == 0  # released by the first, killed run
    assert points > 0
    # Run again: nothing is due but a4's held points, and nothing expires twice.
    assert run_expiry(engine, RUN)[1] == 0


def _ranked(engine: Engine) -> dict[str, Any]:
    with engine.connect() as c:
        ids = sorted(
            {*c.execute(select(Account.id)).scalars(), *c.execute(select(Lot.id)).scalars()}
            | set(c.execute(select(Hold.id)).scalars())
        )
        rank = {found: n for n, found in enumerate(ids)}
        balances = {
            rank[a]: (int(b), int(h))
            for a, b, h in c.execute(
                select(
                    Balance.account_id, func.sum(Balance.balance), func.sum(Balance.held)
                ).group_by(Balance.account_id)
            )
        }
        lots = sorted(
            (rank[i], rank[a], p, r, str(e))
            for i, a, p, r, e in c.execute(
                select(Lot.id, Lot.account_id, Lot.points, Lot.remaining, Lot.expires_at)
            )
        )
        postings = {
            rank[a]: int(s)
            for a, s in c.execute(
                select(Posting.account_id, func.sum(Posting.amount)).group_by(Posting.account_id)
            )
        }
        moved = {
            rank[lot]: int(s)
            for lot, s in c.execute(
                select(LotMovement.lot_id, func.sum(LotMovement.points)).group_by(
                    LotMovement.lot_id
                )
            )
        }
        holds = sorted(
            (rank[i], s, str(t))
            for i, s, t in c.execute(select(Hold.id, Hold.status, Hold.closed_at))
        )
    return {
        "balances": balances,
        "lots": lots,
        "postings": postings,
        "moved": moved,
        "holds": holds,
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def twins(
    request: pytest.FixtureRequest, sqlite_template: Path, tmp_path: Path
) -> Iterator[tuple[Engine, Engine]]:
    """Two fresh databases of one kind."""
    if request.param == "sqlite":
        urls = []
        for name in ("one", "two"):
            shutil.copyfile(sqlite_template, tmp_path / f"{name}.db")
            urls.append(f"sqlite:///{tmp_path / name}.db")
    else:
        fresh: Callable[[], str] = request.getfixturevalue("pg_databases")
        urls = [fresh(), fresh()]
    one, two = make_engine(urls[0]), make_engine(urls[1])
    yield one, two
    one.dispose()
    two.dispose()


def test_set_based_expiry_keeps_the_books_of_the_per_member_path(
    twins: tuple[Engine, Engine],
) -> None:
    per_member, set_based = twins
    for engine in twins:
        _world(engine)
    _per_member(per_member)
    _set_based(set_based)
    expected, found = _ranked(per_member), _ranked(set_based)
    assert found == expected
    for engine in twins:
        with transaction(engine) as session:
            assert check_ledger(session) == []
    # Worked by hand, on the set-based twin: (balance, available) after the run.
    bank_a = issuer_of(set_based, "BANKA")
    # a0: 1,000 + 500 due expire; the 250 of day 500 stay.
    assert balance(set_based, bank_a, "BANKA", "a0", RUN) == (250, 250)
    # a1: 1,037 + 500 due, 400 spent from the first lot on day 100: 1,137 expire.
    assert balance(set_based, bank_a, "BANKA", "a1", RUN) == (250, 250)
    # a3: 1,861 with 1,600 held: 261 expire (from the first lot), 1,600 stay, all held.
    assert balance(set_based, bank_a, "BANKA", "a3", RUN) == (1600, 0)
    # a4: 1,898 all held: nothing expires.
    assert balance(set_based, bank_a, "BANKA", "a4", RUN) == (1898, 0)
    # a5: its lapsed hold released, 1,185 + 500 expire.
    assert balance(set_based, bank_a, "BANKA", "a5", RUN) == (250, 250)
    # b2: 902 of day 0 (24 months) expire; MOBILE's points never do.
    assert balance(set_based, issuer_of(set_based, "BANKB"), "BANKB", "b2", RUN) == (100, 100)
    assert balance(set_based, issuer_of(set_based, "MOBILE"), "MOBILE", "c0", RUN) == (700, 700)
    with set_based.connect() as c:
        kinds = list(
            c.execute(select(func.count()).where(JournalEntry.kind == EntryKind.EXPIRY)).scalars()
        )
    with per_member.connect() as c:
        per = c.execute(
            select(func.count()).where(JournalEntry.kind == EntryKind.EXPIRY)
        ).scalar_one()
    assert per == 7 + 3  # a4 expires nothing
    assert kinds[0] < per


def test_a_chunk_expires_only_accounts_after_its_cursor(engine: Engine) -> None:
    _world(engine)
    with transaction(engine) as session:
        Ledger(session).release_expired_holds(RUN)
        # Four accounts, entries of at most three members: two entries.
        first = expire_chunk(session, RUN, None, 4, entry_members=3)
    assert first is not None
    assert first.accounts == 4
    with engine.connect() as c:
        legs = c.execute(
            select(func.count())
            .select_from(Posting)
            .join(JournalEntry, JournalEntry.id == Posting.entry_id)
            .where(JournalEntry.kind == EntryKind.EXPIRY)
            .group_by(Posting.entry_id)
            .order_by(func.count())
        ).scalars()
        assert list(legs) == [2, 4]  # 1 member + expired; 3 members + expired
    with transaction(engine) as session:
        rest = expire_chunk(session, RUN, first.last_account, 30_000)
        assert rest is not None
        assert rest.accounts == 11 - 4
        assert expire_chunk(session, RUN, rest.last_account, 10) is None
        # Only a3 and a4 still have due lots, under their holds.
        assert due_accounts(session, RUN) == 2
    with pytest.raises(ValueError, match="chunk size"), transaction(engine) as session:
        expire_chunk(session, RUN, None, 0)

"""Totals past 2^63: a day of the largest amounts the platform takes settles exactly.

Each obligation is at most MAX_AMOUNT (10^15 - 1) minor units, but a day's totals per pair, per
party, per batch and in every file sum many of them: numpy/pandas int64 would wrap, SQLite's SUM
raises, a bigint column overflows, Excel numbers keep 15 digits, camt.053 amounts 18.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from factories import org
from settlement_factories import PLATFORM, WINDOW_START, line, meta, party
from settlement_world import AFTER_DAY2, DAY1, LargeDay, book_large_day, settlement_settings
from sqlalchemy import Engine

from clearing.config import Settings
from clearing.db import transaction
from clearing.money import MAX_AMOUNT, parse_minor
from clearing.platform_key import load_or_create
from settlement import repository as repo
from settlement.camt053 import CAMT_MAX
from settlement.files import CAMT_NAME, CSV_NAME, write_party_files
from settlement.lines import ObligationLine, lines_to_frame
from settlement.netting import Totals, check_invariants, clear
from settlement.service import EarlierBatchOpen, run_batch, verify_tree
from settlement.statement import StatementTotals
from settlement.sums import exact_group_sums, exact_sum, fits_int64_sum
from settlement.tasks import catch_up
from settlement.verify import verify_directory

INT64_MAX = 2**63 - 1


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return settlement_settings(db_url, tmp_path)


# pure: the sum helpers, netting and statement totals -------------------------------------------


def test_exact_sums_where_int64_wraps() -> None:
    rng = np.random.default_rng(7)
    values = rng.integers(MAX_AMOUNT - 1000, MAX_AMOUNT, size=20_000, dtype=np.int64)
    values[::3] *= -1
    values[::5] = MAX_AMOUNT
    values[1] = np.iinfo(np.int64).min
    values[2] = np.iinfo(np.int64).max
    exact = sum(int(v) for v in values.tolist())
    assert not fits_int64_sum(values)
    assert exact_sum(values) == exact
    positive = np.abs(values[3:])
    total = sum(int(v) for v in positive.tolist())
    assert total > INT64_MAX
    # numpy wraps without a word: the reason for these helpers.
    assert int(positive.sum()) != total
    assert exact_sum(positive) == total
    assert exact_sum(np.array([1, 2, 3], dtype=np.int64)) == 6
    assert exact_sum(np.array([10**30, -1], dtype=object)) == 10**30 - 1

    frame = pd.DataFrame(
        {
            "key": np.array(["a", "b", "c", "a"] * 4_999, dtype=object),
            "amount": positive[:19_996],
            "small": np.ones(19_996, dtype=np.int64),
        }
    )
    keys, sums, counts = exact_group_sums(frame, ["key"], ["amount", "small"])
    want: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for key, amount in zip(frame["key"].tolist(), frame["amount"].tolist(), strict=True):
        want[key][0] += amount
        want[key][1] += 1
    assert dict(zip(keys, zip(sums["amount"], counts, strict=True), strict=True)) == {
        k: (v[0], v[1]) for k, v in want.items()
    }
    assert sums["small"] == counts
    assert max(sums["amount"]) > INT64_MAX


def _triangle(n: int, currency: str = "CNY") -> list[ObligationLine]:
    """n maximal obligations round bank-a -> shop-x -> bank-b -> bank-a, a fee every 10th, one
    reference a second, sorted as the ledger sends them."""
    ring = ("bank-a", "shop-x", "bank-b")
    lines: list[ObligationLine] = []
    for k in range(n):
        a = k % 3
        ref = f"r{k:07d}"
        lines.append(
            line(
                ref,
                1,
                "checkout_capture",
                ring[a],
                ring[(a + 1) % 3],
                MAX_AMOUNT - a,
                currency=currency,
                points=MAX_AMOUNT,
            )
        )
        if k % 10 == 0:
            lines.append(
                line(
                    ref,
                    2,
                    "fee",
                    ring[a],
                    PLATFORM.id,
                    MAX_AMOUNT // 100,
                    currency=currency,
                    points=None,
                )
            )
    return [
        replace(
            ln,
            booked_at=WINDOW_START + timedelta(seconds=int(ln.reference[1:]), microseconds=ln.seq),
        )
        for ln in lines
    ]


def test_netting_past_int64_is_exact() -> None:
    lines = _triangle(30_000)
    gross: dict[tuple[str, str], int] = defaultdict(int)
    positions: dict[str, int] = defaultdict(int)
    for ln in lines:
        gross[(ln.payer, ln.payee)] += ln.amount
        positions[ln.payee] += ln.amount
        positions[ln.payer] -= ln.amount
    assert max(gross.values()) > INT64_MAX
    frame = lines_to_frame(lines)
    # one frame, and the same lines in uneven chunks: neither path may wrap
    for chunks in ([frame], [frame.iloc[:7], frame.iloc[7:20_001], frame.iloc[20_001:]]):
        result = clear(chunks)
        assert {(p, q): g.amount for (_c, p, q, _e), g in result.gross.items()} == gross
        assert dict(result.currency_positions("CNY")) == positions
        total = sum(ln.amount for ln in lines)
        assert total > INT64_MAX
        assert result.input_totals["CNY"] == Totals(total, len(lines), 30_000 * MAX_AMOUNT)
        want = {"CNY": Totals(total, len(lines), 30_000 * MAX_AMOUNT)}
        assert check_invariants(result, expected=want, platform_id=PLATFORM.id) == []


def test_statement_totals_past_int64_are_exact() -> None:
    n = 30_000
    rows = pd.DataFrame(
        {
            "line_no": np.arange(1, n + 1, dtype=np.int64),
            "reference": [f"r{k}" for k in range(n)],
            "original_reference": [""] * n,
            "event_type": ["checkout_capture"] * n,
            "counterparty": ["shop-x", "bank-b"] * (n // 2),
            "program": ["P"] * n,
            "points": np.full(n, MAX_AMOUNT, dtype=np.int64),
            "point_value": ["0.01"] * n,
            "point_value_version": ["1"] * n,
            "gross": np.where(np.arange(n) % 3 == 0, -MAX_AMOUNT, MAX_AMOUNT).astype(np.int64),
            "fee": np.full(n, -(MAX_AMOUNT // 100), dtype=np.int64),
            "booked_at": np.arange(n, dtype=np.int64),
        }
    )
    fast, slow = StatementTotals(), StatementTotals()
    fast.add_frame(rows)
    # Object columns of Python ints take the row-by-row path: the reference.
    slow.add_frame(rows.astype({"gross": object, "fee": object, "points": object}))
    assert fast.credits > INT64_MAX
    assert fast.debits > INT64_MAX // 2
    assert fast.points == n * MAX_AMOUNT
    assert (fast.count, fast.credits, fast.debits, fast.points) == (
        slow.count,
        slow.credits,
        slow.debits,
        slow.points,
    )
    assert fast.summary == slow.summary
    assert fast.batches == slow.batches


@pytest.mark.parametrize("currency", ["HKD", "JPY", "KWD"])
def test_files_of_large_totals_verify(tmp_path: Path, currency: str) -> None:
    # 1,600 maximal lines: trailer totals pass Excel's 15 digits and one camt.053 amount's 18.
    lines = _triangle(1_600, currency)
    key = Ed25519PrivateKey.generate()
    nets: dict[str, int] = defaultdict(int)
    for ln in lines:
        nets[ln.payee] += ln.amount
        nets[ln.payer] -= ln.amount
    for limit in (100, 10_000):  # batched camt.053 entries; one entry per detail
        # (the platform's statement, twice as long, only in batch form: XSD checks take time)
        for who in (PLATFORM.id, "bank-a") if limit == 100 else ("bank-a",):
            folder = tmp_path / f"{who}-{limit}"
            files = write_party_files(
                folder,
                party(who, currency),
                lines,
                meta(currency),
                signing_key=key,
                key_id="k1",
                detail_limit=limit,
                expected_net=nets[who],
            )
            assert verify_directory(folder, key.public_key()) == []
            assert files.totals.credits + files.totals.debits > CAMT_MAX
            trailer = _records(folder / CSV_NAME, "T")[0]
            assert parse_minor(trailer[4], currency) == files.totals.credits
            assert int(trailer[6]) == files.totals.points
        camt = (tmp_path / f"bank-a-{limit}" / CAMT_NAME).read_text()
        # bank-a pays shop-x more than one camt.053 amount holds: the entry comes in pieces.
        assert ("<NtryRef>B2.2</NtryRef>" in camt) == (limit == 100)


def _records(path: Path, kind: str) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [r for r in csv.reader(fh) if r and r[0] == kind]


# on both databases: a day of maximal amounts, through the batch --------------------------------


def _check_published(engine: Engine, settings: Settings, day: LargeDay) -> None:
    batch = run_batch(engine, DAY1, day.currency, AFTER_DAY2, settings)
    assert batch.state == "published", batch.error
    assert day.amount_total > INT64_MAX
    assert day.points_total > INT64_MAX
    assert min(day.paid[p] for p in day.parties) > INT64_MAX
    assert (batch.line_count, batch.amount_total, batch.points_total, batch.fee_income) == (
        day.line_count,
        day.amount_total,
        day.points_total,
        day.fee_income,
    )
    stored = {p.org_id: p.net for p in batch.positions}
    assert stored == day.positions
    assert sum(stored.values()) == 0
    with transaction(engine) as session:
        reread = repo.batch_by_id(session, batch.id)
        assert reread is not None
        assert reread.amount_total == day.amount_total
        start, end = repo.utc(reread.window_start), repo.utc(reread.window_end)
        assert repo.window_totals(session, day.currency, start, end) == Totals(
            day.amount_total, day.line_count, day.points_total
        )
        assert repo.ledger_positions(session, day.currency, start, end) == {
            p: v for p, v in day.positions.items() if v or p != day.platform
        }
    public = load_or_create(settings.platform_key_path).public_key
    checked, errors = verify_tree(Path(batch.directory), public)
    assert errors == []
    assert checked == 4
    folder = Path(batch.directory)
    summaries = {r[1]: r for r in _records(folder / str(day.platform) / CSV_NAME, "S")}
    for who in day.parties:
        # The platform receives what a party pays and pays what it receives, fees apart.
        s = summaries[str(who)]
        assert parse_minor(s[3], day.currency) == day.paid[who]
        assert parse_minor(s[2], day.currency) == day.received[who]
        assert parse_minor(s[4], day.currency) == day.fees_paid[who]
        own = _records(folder / str(who) / CSV_NAME, "T")[0]
        assert parse_minor(own[5], day.currency) == day.positions[who]


def test_day_of_maximal_amounts_settles_on_both_databases(
    engine: Engine, settings: Settings
) -> None:
    platform = org(engine, "platform", "Points Clearing Platform", "CNY").org_id
    for currency in ("HKD", "JPY"):
        _check_published(engine, settings, book_large_day(engine, currency, platform))


def test_a_failing_currency_is_reported_and_does_not_stop_the_others(
    engine: Engine, settings: Settings
) -> None:
    platform = org(engine, "platform", "Points Clearing Platform", "CNY").org_id
    for currency in ("HKD", "JPY"):
        book_large_day(engine, currency, platform, lines=30, skew=3, fee_every=4)
        book_large_day(
            engine, currency, platform, lines=3, skew=0, at=AFTER_DAY2 - timedelta(hours=20)
        )
    # A stray file where HKD's folders go: every HKD attempt fails the same way.
    settings.settlement_dir.mkdir(parents=True)
    (settings.settlement_dir / "HKD").write_text("not a folder")
    done = catch_up(engine, settings, AFTER_DAY2, currencies=["HKD", "JPY"])
    assert [(b.currency, b.business_date, b.state) for b in done.settled] == [
        ("JPY", DAY1, "published"),
        ("JPY", DAY1 + timedelta(days=1), "published"),
    ]
    assert len(done.errors) == 1
    assert done.errors[0].startswith(f"HKD {DAY1}:")
    # The later day names the earlier one and why it failed, not only that it is open.
    with pytest.raises(EarlierBatchOpen) as blocked:
        run_batch(engine, DAY1 + timedelta(days=1), "HKD", AFTER_DAY2, settings)
    assert blocked.value.extra["batch"] == "SB-HKD-20261120"
    assert "not a folder" not in blocked.value.detail
    assert "failed: NotADirectoryError" in blocked.value.detail
    assert blocked.value.extra["batch_error"].startswith("NotADirectoryError")
    (settings.settlement_dir / "HKD").unlink()
    again = catch_up(engine, settings, AFTER_DAY2, currencies=["HKD", "JPY"])
    assert again.errors == []
    assert [(b.currency, b.state) for b in again.settled] == [("HKD", "published")] * 2

"""Totals past 2^63: a day of the largest amounts the platform takes settles exactly.

Each obligation is at most MAX_AMOUNT (10^15 - 1) minor units, but a day's totals per pair, per
party, per batch and in every file sum many of them: numpy/pandas int64 would wrap, SQLite's SUM
raises, a bigint column overflows, Excel numbers keep 15 digits, camt.053 amounts 18.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import defaultdict
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.money import MAX_AMOUNT, parse_minor
from clearing.web.platform_key import load_or_create
from settlement import repository as repo
from settlement.camt053 import CAMT_MAX, OMITTED_TOO_LARGE, validation_errors
from settlement.files import CAMT_NAME, CSV_NAME, XLSX_NAME, write_party_files
from settlement.lines import ObligationLine, lines_to_frame
from settlement.manifest import MANIFEST_NAME, SIGNATURE_NAME, manifest_bytes, sign_manifest
from settlement.netting import Totals, check_invariants, clear
from settlement.service import EarlierBatchOpen, run_batch, verify_tree
from settlement.statement import StatementTotals
from settlement.sums import exact_group_sums, exact_sum, fits_int64_sum
from settlement.tasks import catch_up
from settlement.verify import verify_directory
from tests.factories import org
from tests.settlement.settlement_factories import PLATFORM, WINDOW_START, line, meta, party
from tests.settlement.settlement_world import (
    AFTER_DAY2,
    DAY1,
    LargeDay,
    book_large_day,
    settlement_settings,
)

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


# a party whose figures a camt.053 cannot carry: its folder goes out without one ------------------

OMISSION = [{"name": CAMT_NAME, "reason": OMITTED_TOO_LARGE}]


def _manifest(folder: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((folder / MANIFEST_NAME).read_bytes())
    return loaded


def _resign(folder: Path, key: Ed25519PrivateKey, omitted: dict[str, str] | None) -> None:
    """Rewrite the folder's manifest from the files it holds, `omitted` declared, and sign it
    with the platform's key: verify must judge the folder, not only the signature."""
    manifest = _manifest(folder)
    names = [n for n in (CSV_NAME, XLSX_NAME, CAMT_NAME) if (folder / n).is_file()]
    hashes = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}
    data = manifest_bytes(
        str(manifest["batch"]), str(manifest["party"]), str(manifest["key_id"]), hashes, omitted
    )
    (folder / MANIFEST_NAME).write_bytes(data)
    (folder / SIGNATURE_NAME).write_bytes(sign_manifest(data, key))


def _big_net_day() -> tuple[list[ObligationLine], dict[str, int]]:
    """bank-a pays 1,100 maximal amounts to shop-x and bank-b in turn, a fee every 10th: its
    net passes 10^18, theirs (about 5.5 x 10^17) and the platform's do not."""
    lines: list[ObligationLine] = []
    for k in range(1_100):
        ref = f"r{k:07d}"
        payee = ("shop-x", "bank-b")[k % 2]
        lines.append(line(ref, 1, "checkout_capture", "bank-a", payee, MAX_AMOUNT, minute=0))
        if k % 10 == 0:
            lines.append(line(ref, 2, "fee", "bank-a", PLATFORM.id, 1_000, points=None))
    # One reference a second, sorted as the ledger sends them.
    lines = [
        replace(
            ln,
            booked_at=WINDOW_START
            + timedelta(seconds=int(ln.reference[1:]) + 1, microseconds=ln.seq),
        )
        for ln in lines
    ]
    nets: dict[str, int] = defaultdict(int)
    for ln in lines:
        nets[ln.payee] += ln.amount
        nets[ln.payer] -= ln.amount
    return lines, nets


@pytest.mark.parametrize("limit", [100, 10_000])  # batched camt.053 entries; one per detail
def test_a_net_past_18_digits_publishes_without_camt(tmp_path: Path, limit: int) -> None:
    lines, nets = _big_net_day()
    assert -nets["bank-a"] > CAMT_MAX
    assert max(abs(nets[p]) for p in ("shop-x", "bank-b", PLATFORM.id)) <= CAMT_MAX
    key = Ed25519PrivateKey.generate()
    who = ("bank-a", "shop-x", "bank-b", PLATFORM.id)
    for run in ("first", "again"):
        for org_id in who:
            files = write_party_files(
                tmp_path / run / org_id,
                party(org_id),
                lines,
                meta(),
                signing_key=key,
                key_id="k1",
                detail_limit=limit,
                expected_net=nets[org_id],
            )
            assert files.totals.net == nets[org_id]
            assert dict(files.omitted) == (
                {CAMT_NAME: OMITTED_TOO_LARGE} if org_id == "bank-a" else {}
            )
    for org_id in who:
        folder = tmp_path / "first" / org_id
        assert verify_directory(folder, key.public_key()) == []
        manifest = _manifest(folder)
        listed = [f["name"] for f in manifest["files"]]  # type: ignore[attr-defined]
        if org_id == "bank-a":
            assert not (folder / CAMT_NAME).exists()
            assert listed == [CSV_NAME, XLSX_NAME]
            assert manifest["omitted"] == OMISSION
        else:
            assert (folder / CAMT_NAME).is_file()
            assert listed == [CAMT_NAME, CSV_NAME, XLSX_NAME]
            assert "omitted" not in manifest
        # Deterministic: the same lines give the same bytes, omission and all.
        again = tmp_path / "again" / org_id
        assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in again.iterdir())
        for path in folder.iterdir():
            assert path.read_bytes() == (again / path.name).read_bytes(), path.name
    # The CSV stays complete and authoritative: its trailer holds the net camt.053 could not.
    trailer = _records(tmp_path / "first" / "bank-a" / CSV_NAME, "T")[0]
    assert parse_minor(trailer[5], "CNY") == nets["bank-a"]


def test_a_detail_past_18_digits_omits_camt_only_in_detail_form(tmp_path: Path) -> None:
    # One reference of 1,001 maximal obligations to one payee is one detail past 10^18; a
    # second pays it all back, so the net is 0. Batch entries (per counterparty and event
    # type) net these two and fit; one entry per detail cannot be written.
    back = [
        line("r2", seq, "checkout_capture", "shop-x", "bank-a", MAX_AMOUNT, minute=2)
        for seq in range(1_001)
    ]
    lines = [
        line("r1", seq, "checkout_capture", "bank-a", "shop-x", MAX_AMOUNT, minute=1)
        for seq in range(1_001)
    ] + back
    key = Ed25519PrivateKey.generate()
    for limit, omitted in ((1, {}), (10_000, {CAMT_NAME: OMITTED_TOO_LARGE})):
        folder = tmp_path / str(limit)
        files = write_party_files(
            folder,
            party("bank-a"),
            lines,
            meta(),
            signing_key=key,
            key_id="k1",
            detail_limit=limit,
            expected_net=0,
        )
        assert dict(files.omitted) == omitted
        assert (folder / CAMT_NAME).exists() == (not omitted)
        assert verify_directory(folder, key.public_key()) == []
        assert files.totals.count == 2
        assert files.totals.credits == 1_001 * MAX_AMOUNT > CAMT_MAX


def test_verify_refuses_a_camt_missing_without_declaration(tmp_path: Path) -> None:
    lines, _nets = _big_net_day()
    key = Ed25519PrivateKey.generate()
    folders: dict[str, Path] = {}
    for org_id in ("bank-a", "shop-x"):
        folders[org_id] = folder = tmp_path / org_id
        write_party_files(
            folder, party(org_id), lines, meta(), signing_key=key, key_id="k1", detail_limit=100
        )
        assert verify_directory(folder, key.public_key()) == []
    public = key.public_key()
    small, big = folders["shop-x"], folders["bank-a"]
    camt = (small / CAMT_NAME).read_bytes()

    # Simply missing: the manifest lists it.
    (small / CAMT_NAME).unlink()
    assert f"{MANIFEST_NAME}: lists {CAMT_NAME}, which is missing" in verify_directory(
        small, public
    )
    # Missing, and a validly signed manifest that neither lists nor declares it omitted.
    _resign(small, key, None)
    errors = verify_directory(small, public)
    assert f"{MANIFEST_NAME}: does not list {CAMT_NAME}" in errors
    assert f"{CAMT_NAME} is missing" in errors
    # Declared omitted where every figure fits: not a reason.
    _resign(small, key, {CAMT_NAME: OMITTED_TOO_LARGE})
    assert verify_directory(small, public) == [
        f"{MANIFEST_NAME}: declares {CAMT_NAME} omitted, but every figure of "
        f"{CSV_NAME} fits a camt.053 amount"
    ]
    # A reason nobody defined, or a file that may never be left out.
    for omitted, error in (
        ({CAMT_NAME: "too_long"}, f"omits {CAMT_NAME} for an unknown reason 'too_long'"),
        ({XLSX_NAME: OMITTED_TOO_LARGE}, f"declares '{XLSX_NAME}' omitted"),
    ):
        _resign(big, key, omitted)
        assert any(error in e for e in verify_directory(big, public)), omitted
    _resign(big, key, {CAMT_NAME: OMITTED_TOO_LARGE})
    assert verify_directory(big, public) == []
    # Present although declared omitted.
    (big / CAMT_NAME).write_bytes(camt)
    assert f"{CAMT_NAME} is present, but {MANIFEST_NAME} declares it omitted" in (
        verify_directory(big, public)
    )
    # Declared omitted and listed at once.
    _resign(big, key, {CAMT_NAME: OMITTED_TOO_LARGE})
    assert f"{MANIFEST_NAME}: {CAMT_NAME} is both listed and declared omitted" in (
        verify_directory(big, public)
    )


def test_a_party_net_past_18_digits_settles_on_both_databases(
    engine: Engine, settings: Settings
) -> None:
    platform = org(engine, "platform", "Points Clearing Platform", "CNY").org_id
    # 1,500 maximal payments from the first party, to the other two in turn: its net passes
    # 10^18 (its position account spreads it over its balance slots), the others' stay within.
    day = book_large_day(
        engine, "HKD", platform, lines=300, skew=1_500, fee_every=7, skew_to=(1, 2)
    )
    big = day.parties[0]
    assert -day.positions[big] > CAMT_MAX
    assert all(abs(v) <= CAMT_MAX for p, v in day.positions.items() if p != big)
    batch = run_batch(engine, DAY1, "HKD", AFTER_DAY2, settings)
    assert batch.state == "published", batch.error
    stored = {p.org_id: p.net for p in batch.positions}
    assert stored == day.positions
    assert sum(stored.values()) == 0
    public = load_or_create(settings.platform_key_path).public_key
    checked, errors = verify_tree(Path(batch.directory), public)
    assert errors == []
    assert checked == 4
    root = Path(batch.directory)
    for who in [*day.parties, platform]:
        folder = root / str(who)
        manifest = _manifest(folder)
        own = _records(folder / CSV_NAME, "T")[0]
        assert parse_minor(own[5], "HKD") == day.positions[who]
        if who == big:
            assert not (folder / CAMT_NAME).exists()
            assert manifest["omitted"] == OMISSION
        else:
            assert "omitted" not in manifest
            assert validation_errors(folder / CAMT_NAME) == []
    with transaction(engine) as session:
        recorded = {(f.org_id, f.name) for f in repo.files(session, batch.id)}
    assert (big, CAMT_NAME) not in recorded
    assert (big, MANIFEST_NAME) in recorded
    assert (day.parties[1], CAMT_NAME) in recorded

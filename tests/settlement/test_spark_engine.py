"""The Spark engine (local mode) settles every window byte-identically to the pandas engine.

One Spark session serves the whole module (spark_engine keeps one per process); each Spark
job takes seconds, so the generated days are few.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from sqlalchemy import Engine, delete

from clearing.core.config import Settings
from clearing.core.db import transaction
from settlement import repository as repo
from settlement.files import CSV_NAME, write_batch_folders
from settlement.lines import ObligationLine
from settlement.manifest import MANIFEST_NAME
from settlement.models import SettlementBatch, SettlementFile, SettlementPosition
from settlement.netting import Totals, clear
from settlement.probe import BatchProbe
from settlement.schemas import BatchOut
from settlement.service import SettlementInvariantBroken, net_and_write, run_batch
from settlement.spark_engine import (
    read_window,
    spark_clearing,
    spark_net_and_write,
    spark_session,
    spark_write_folders,
)
from settlement.statement import StatementInputError
from settlement.verify import verify_directory
from settlement.window_export import export_window, window_path
from tests.settlement.settlement_factories import (
    PLATFORM,
    chunked,
    days,
    line,
    meta,
    orgs_of,
    party,
)
from tests.settlement.settlement_world import (
    AFTER_DAY2,
    DAY1,
    DAY2,
    book_large_day,
    book_two_days,
    settlement_settings,
)

MASTER = "local[2]"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = KEY.public_key()


@pytest.fixture(scope="module", autouse=True)
def _spark() -> None:
    """Start the module's Spark session once (the engine keeps it for the process)."""
    spark_session(MASTER)


def published_tree(root: Path) -> dict[str, bytes]:
    """Every published file under `root` by relative path (the hidden `.window` export and any
    other hidden folder left out)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def folder_tree(folders: dict[str, Path]) -> dict[str, dict[str, bytes]]:
    """Every party's files by party and name."""
    return {
        org: {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
        for org, folder in folders.items()
    }


def totals_of(lines: list[ObligationLine]) -> Totals:
    return Totals(
        sum(item.amount for item in lines), len(lines), sum(item.points or 0 for item in lines)
    )


def reset_settlement(engine: Engine) -> None:
    """Forget every batch (the ledger stays): the same days can be settled once more."""
    with transaction(engine) as session:
        for table in (SettlementFile, SettlementPosition, SettlementBatch):
            session.execute(delete(table))


def positions_of(batch: BatchOut) -> list[tuple[object, ...]]:
    return [
        (p.org_id, p.party_kind, p.net, p.file_id, p.statement_sequence, p.previous_file_id)
        for p in batch.positions
    ]


SETTLED = [("CNY", DAY1), ("HKD", DAY1), ("CNY", DAY2), ("HKD", DAY2)]
"""CNY: the two days of the world; HKD: one day of maximal amounts, then an empty day."""


def test_booked_days_settle_byte_identically_on_both_engines(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    book_two_days(engine)
    with transaction(engine) as session:
        platform = repo.platform_organisation(session)
        assert platform is not None
        platform_id = platform.id
    hkd = book_large_day(engine, "HKD", platform_id, lines=60, skew=5, fee_every=4)
    base = settlement_settings(db_url, tmp_path)
    runs: dict[str, tuple[Settings, list[BatchOut]]] = {}
    for name in ("pandas", "spark"):
        chosen = dataclasses.replace(
            base, settlement_engine=name, settlement_dir=tmp_path / name / "settlement"
        )
        reset_settlement(engine)
        batches = [run_batch(engine, day, cur, AFTER_DAY2, chosen) for cur, day in SETTLED]
        runs[name] = (chosen, batches)
    (pandas_settings, by_pandas), (spark_settings, by_spark) = runs["pandas"], runs["spark"]
    for one, other in zip(by_pandas, by_spark, strict=True):
        assert other.state == one.state == "published"
        assert positions_of(other) == positions_of(one)
        assert (other.line_count, other.amount_total, other.points_total, other.fee_income) == (
            one.line_count,
            one.amount_total,
            one.points_total,
            one.fee_income,
        )
    assert [b.line_count for b in by_spark] == [
        by_spark[0].line_count,
        hkd.line_count,
        by_spark[2].line_count,
        0,
    ]
    assert by_spark[1].amount_total == hkd.amount_total
    assert {p.org_id: p.net for p in by_spark[1].positions if p.net} == {
        k: v for k, v in hkd.positions.items() if v
    }
    pandas_tree = published_tree(pandas_settings.settlement_dir)
    spark_tree = published_tree(spark_settings.settlement_dir)
    assert {name.rsplit("/", 1)[-1] for name in pandas_tree} >= {CSV_NAME, MANIFEST_NAME}
    assert sum(name.endswith(MANIFEST_NAME) for name in pandas_tree) == sum(
        len(b.positions) for b in by_pandas
    )
    assert spark_tree == pandas_tree
    # The Spark run read its windows from the export, one per batch, the empty day's too.
    exported = sorted(spark_settings.settlement_dir.joinpath(".window").glob("*/*"))
    assert [
        p.relative_to(spark_settings.settlement_dir / ".window").as_posix() for p in exported
    ] == [f"currency={cur}/business_date={day.isoformat()}" for cur, day in sorted(SETTLED)]


@given(lines=days(currencies=("CNY",)))
@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_generated_days_net_and_write_byte_identically(
    tmp_path: Path, lines: list[ObligationLine]
) -> None:
    base = tmp_path / f"run-{time.monotonic_ns()}"
    orgs = sorted({*orgs_of(lines), PLATFORM.id, "idle-party"})
    parties = [PLATFORM if org == PLATFORM.id else party(org) for org in orgs]
    metas = {org: meta() for org in orgs}
    expected = {"CNY": totals_of(lines)} if lines else {}
    window = base / "window"
    export_window([lines], window, totals_of(lines))
    pandas_folders = {org: base / "pandas" / org for org in orgs}
    spark_folders = {org: base / "spark" / org for org in orgs}

    by_pandas = net_and_write(
        functools.partial(chunked, lines, 7),
        pandas_folders,
        parties,
        metas,
        signing_key=KEY,
        key_id="k-2026",
        expected=expected,
        platform_id=PLATFORM.id,
    )
    by_spark = spark_net_and_write(
        window,
        spark_folders,
        parties,
        metas,
        signing_key=KEY,
        key_id="k-2026",
        expected=expected,
        platform_id=PLATFORM.id,
        master=MASTER,
    )

    assert by_pandas.errors == []
    assert by_spark.errors == []
    assert by_spark.clearing == by_pandas.clearing
    assert folder_tree(spark_folders) == folder_tree(pandas_folders)
    for org in orgs:
        got, want = by_spark.written.parties[org], by_pandas.written.parties[org]
        assert (got.file_id, dict(got.hashes), got.totals, dict(got.omitted)) == (
            want.file_id,
            dict(want.hashes),
            want.totals,
            dict(want.omitted),
        )
        assert verify_directory(spark_folders[org], PUBLIC) == []


class WriterWitness(BatchProbe):
    """Appends the id of the process that wrote each party's statements to a file (the
    probe is pickled into the Spark tasks: nothing it records there comes back)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def party_written(self, n: int) -> None:
        with open(self.path, "a") as out:
            out.write(f"{os.getpid()}\n")


def long_day(count: int) -> list[ObligationLine]:
    """`count` captures of one merchant with their fees, and a refund of the first."""
    out: list[ObligationLine] = []
    for n in range(count):
        ref = f"{n + 1:032x}"
        issuer = ("bank-a", "bank-b")[n % 2]
        out.append(line(ref, 0, "checkout_capture", issuer, "shop-x", 1_000 + n, minute=n % 600))
        if n % 3 == 0:
            out.append(line(ref, 1, "fee", "shop-x", PLATFORM.id, 7, minute=n % 600, points=None))
    out.append(
        line(
            "f" * 32,
            0,
            "checkout_refund",
            "shop-x",
            "bank-a",
            500,
            original=f"{1:032x}",
            minute=700,
        )
    )
    return sorted(out, key=lambda item: (item.booked_at, item.reference, item.seq))


def test_statements_above_the_detail_limit_match(tmp_path: Path) -> None:
    lines = long_day(90)
    orgs = sorted({*orgs_of(lines), PLATFORM.id})
    parties = [PLATFORM if org == PLATFORM.id else party(org) for org in orgs]
    metas = {org: meta() for org in orgs}
    nets = clear([lines]).currency_positions("CNY")
    export_window([lines], tmp_path / "window", totals_of(lines))
    limit = 60
    expected_nets = {org: nets.get(org, 0) for org in orgs}
    folders = {name: {org: tmp_path / name / org for org in orgs} for name in ("p", "s")}
    by_pandas = write_batch_folders(
        functools.partial(chunked, lines, 16),
        folders["p"],
        parties,
        metas,
        signing_key=KEY,
        key_id="k-2026",
        expected_nets=expected_nets,
        detail_limit=limit,
        max_rows_per_sheet=30,
    )
    witness = WriterWitness(tmp_path / "writers.txt")
    by_spark = spark_write_folders(
        tmp_path / "window",
        folders["s"],
        parties,
        metas,
        signing_key=KEY,
        key_id="k-2026",
        expected_nets=expected_nets,
        master=MASTER,
        probe=witness,
        detail_limit=limit,
        max_rows_per_sheet=30,
    )
    # Every party's statements were written by a Spark task, none by this (the driver's)
    # process, and each party in exactly one task.
    writers = witness.path.read_text().split()
    assert len(writers) == len(orgs)
    assert str(os.getpid()) not in writers
    counts = {org: by_spark.parties[org].totals.count for org in orgs}
    assert counts == {org: by_pandas.parties[org].totals.count for org in orgs}
    # Above the limit: the merchant and the platform; below: each bank (46 rows at most).
    assert counts["shop-x"] > limit
    assert counts[PLATFORM.id] > limit
    assert all(counts[b] <= limit for b in ("bank-a", "bank-b"))
    assert folder_tree(folders["s"]) == folder_tree(folders["p"])


def test_statement_above_the_default_detail_limit_matches(tmp_path: Path) -> None:
    from settlement.files import DETAIL_LIMIT

    lines = long_day(DETAIL_LIMIT + 50)
    orgs = sorted({*orgs_of(lines), PLATFORM.id})
    parties = [PLATFORM if org == PLATFORM.id else party(org) for org in orgs]
    metas = {org: meta() for org in orgs}
    expected = {"CNY": totals_of(lines)}
    export_window([lines], tmp_path / "window", totals_of(lines))
    folders = {name: {org: tmp_path / name / org for org in orgs} for name in ("p", "s")}
    by_pandas = net_and_write(
        functools.partial(chunked, lines, 4_096),
        folders["p"],
        parties,
        metas,
        signing_key=KEY,
        key_id="k-2026",
        expected=expected,
        platform_id=PLATFORM.id,
    )
    by_spark = spark_net_and_write(
        tmp_path / "window",
        folders["s"],
        parties,
        metas,
        signing_key=KEY,
        key_id="k-2026",
        expected=expected,
        platform_id=PLATFORM.id,
        master=MASTER,
    )
    assert by_pandas.errors == by_spark.errors == []
    assert by_spark.written.parties["shop-x"].totals.count > DETAIL_LIMIT
    assert by_spark.clearing == by_pandas.clearing
    assert folder_tree(folders["s"]) == folder_tree(folders["p"])


def rewrite_part(folder: Path, change: dict[int, int]) -> None:
    """Rewrite the window's one part file with the amounts of rows `change` adds to."""
    (part,) = sorted(folder.glob("part-*.parquet"))
    table = pq.read_table(part)
    amounts = table.column("amount").to_pylist()
    for row, delta in change.items():
        amounts[row] += delta
    at = table.schema.get_field_index("amount")
    table = table.set_column(at, table.schema.field(at), pa.array(amounts, pa.int64()))
    pq.write_table(table, part)


def test_a_window_with_an_amount_changed_is_refused(tmp_path: Path) -> None:
    lines = long_day(12)
    orgs = sorted({*orgs_of(lines), PLATFORM.id})
    parties = [PLATFORM if org == PLATFORM.id else party(org) for org in orgs]
    window = tmp_path / "window"
    export_window([lines], window, totals_of(lines))
    rewrite_part(window, {3: 1})

    result = spark_net_and_write(
        window,
        {org: tmp_path / "out" / org for org in orgs},
        parties,
        {org: meta() for org in orgs},
        signing_key=KEY,
        key_id="k-2026",
        expected={"CNY": totals_of(lines)},
        platform_id=PLATFORM.id,
        master=MASTER,
    )

    assert any("differ from ledger control totals" in e for e in result.errors)


class StopAt(BatchProbe):
    """Stops the batch (an exception) once it reaches `point`."""

    def __init__(self, point: str) -> None:
        self.point = point

    def reached(self, point: str) -> None:
        if point == self.point:
            raise RuntimeError(f"stopped at {point}")


def test_tampered_export_is_refused_and_nothing_published(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    book_two_days(engine)
    chosen = dataclasses.replace(settlement_settings(db_url, tmp_path), settlement_engine="spark")
    run_batch(engine, DAY1, "CNY", AFTER_DAY2, chosen)
    with pytest.raises(RuntimeError, match="stopped at exported"):
        run_batch(engine, DAY2, "CNY", AFTER_DAY2, chosen, probe=StopAt("exported"))
    window = window_path(chosen.settlement_dir, "CNY", DAY2)
    frame = pq.read_table(window).to_pandas()
    # One fen moved from one obligation to another of other parties: the count and sums the
    # export is checked against still hold, so only the netting can tell.
    first = 0
    other = next(
        n
        for n in range(1, len(frame))
        if {frame["payer"][n], frame["payee"][n]}.isdisjoint(
            {frame["payer"][first], frame["payee"][first]}
        )
    )
    rewrite_part(window, {first: 1, other: -1})

    with pytest.raises(SettlementInvariantBroken, match="position account moved"):
        run_batch(engine, DAY2, "CNY", AFTER_DAY2, chosen)

    with transaction(engine) as session:
        batch = repo.get_batch(session, "CNY", DAY2)
        assert batch is not None
        assert batch.state == "exported"
        assert batch.error is not None
        assert "position account moved" in batch.error
        assert repo.positions(session, batch.id) == []
    published = chosen.settlement_dir / "CNY" / DAY2.isoformat()
    assert not published.exists()
    assert not list(published.parent.glob(f".{DAY2.isoformat()}*"))


def test_anomalies_are_reported_as_the_clearer_reports_them(tmp_path: Path) -> None:
    lines = sorted(
        [
            line("a" * 32, 0, "checkout_capture", "bank-a", "shop-x", 100, minute=1),
            line("b" * 32, 0, "checkout_capture", "shop-x", "shop-x", 50, minute=2),
            line("c" * 32, 0, "no_such_event", "bank-a", "shop-x", 70, minute=3),
            line("d" * 32, 0, "conversion", "bank-a", "bank-b", 0, minute=4),
            line("e" * 32, 0, "conversion", "bank-b", "bank-a", 9, minute=5, points=-3),
            *(
                line(f"{n:032x}", 0, "conversion", "bank-b", "bank-b", 5, minute=6)
                for n in range(7)
            ),
        ],
        key=lambda item: (item.booked_at, item.reference, item.seq),
    )
    export_window([lines], tmp_path / "window", totals_of(lines))

    got = spark_clearing(read_window(spark_session(MASTER), tmp_path / "window"))

    want = clear([lines], source_unique=True)
    assert len(want.anomalies) == 4
    assert got == want


def test_wrong_nets_publish_nothing(tmp_path: Path) -> None:
    lines = long_day(12)
    orgs = sorted({*orgs_of(lines), PLATFORM.id})
    parties = [PLATFORM if org == PLATFORM.id else party(org) for org in orgs]
    export_window([lines], tmp_path / "window", totals_of(lines))
    nets = clear([lines]).currency_positions("CNY")
    folders = {org: tmp_path / "out" / org for org in orgs}

    with pytest.raises(StatementInputError, match="statement of shop-x nets"):
        spark_write_folders(
            tmp_path / "window",
            folders,
            parties,
            {org: meta() for org in orgs},
            signing_key=KEY,
            key_id="k-2026",
            expected_nets={**nets, "shop-x": nets["shop-x"] + 1},
            master=MASTER,
        )

    # The executors wrote every statement under its partial name; none got its final name.
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name[0] != "."]


def test_a_batch_resumed_at_netted_writes_the_same_files(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    book_two_days(engine)
    base = settlement_settings(db_url, tmp_path)
    trees = {}
    for name in ("pandas", "spark"):
        chosen = dataclasses.replace(
            base, settlement_engine=name, settlement_dir=tmp_path / name / "settlement"
        )
        reset_settlement(engine)
        if name == "spark":
            # Stopped once the positions are committed: the rerun writes the files from them.
            with pytest.raises(RuntimeError, match="stopped at netted"):
                run_batch(engine, DAY1, "CNY", AFTER_DAY2, chosen, probe=StopAt("netted"))
            with transaction(engine) as session:
                stopped = repo.get_batch(session, "CNY", DAY1)
                assert stopped is not None
                assert stopped.state == "netted"
        batch = run_batch(engine, DAY1, "CNY", AFTER_DAY2, chosen)
        assert batch.state == "published"
        trees[name] = published_tree(chosen.settlement_dir)
    assert trees["spark"] == trees["pandas"]

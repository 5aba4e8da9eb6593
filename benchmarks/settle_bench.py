"""Settlement of one business day on PostgreSQL, against a plain GROUP BY as the reference.

Usage:
    CLEARING_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \\
    .venv/bin/python benchmarks/settle_bench.py [--rows 10000000] [--chunk 500000] [--out DIR]

Creates a scratch database next to the admin URL's, loads `--rows` obligations of one day
(`--mix`, below; fees as lines of their own) into a table shaped like the ledger's
`obligations`, then times:

- reference: `SELECT currency, payer, payee, event_type, sum(amount), count(*) ... GROUP BY`;
- ours: `settlement.service.net_and_write`, the function `run_batch` runs for its netting
  and files pass (from state closing), with `--workers` processes (default 2), each reading
  the window through `settlement.repository.WindowSource` with `--reader` (default psql:
  psql COPY into pandas, connection taken from the engine URL); clearing rides on the calling
  process's stream; then its invariants (against the ledger's control totals; each
  statement's net against its position) and, here only, the gross obligations against the
  GROUP BY. Every file is written: CSV, XLSX and camt.053 (policy:
  settlement.files.DETAIL_LIMIT), manifests signed with an Ed25519 key made for the run.
  `total_seconds` is wall time for all of it (plus the control-totals query that the
  service runs in its closing step); per-phase figures are seconds summed over the workers,
  timed by a `PhaseTimer` probe injected into the files pass (settlement.probe). `--db NAME`
  keeps (and later reuses) the loaded database.

Not timed (the scratch database holds the obligations table only, no ledger): the batch row
and its state commits, the party and previous-statement look-ups, the comparison of each
party's net with its position account's movement (`repository.ledger_positions`, a GROUP BY
over the window's postings), the staging rename and the re-verification of every folder at
publish (`check_published_files`).

Party mixes (`--mix`; every mix has the platform, whose statement holds every line):

- standard: 20 issuers, 200 merchants (each above DETAIL_LIMIT detail lines from about 1M
  obligations: CSV detail only, summary-only XLSX, batched camt.053);
- under-threshold: as many issuers and merchants as keep each one about 10% under
  DETAIL_LIMIT (`under_threshold_parties`): every one gets the full XLSX detail and a camt.053
  entry per line, so the format work grows with the day (67 issuers, 47 merchants at 1M);
- many-parties: 2,003 issuers and 7,997 merchants (10,000 parties besides the platform: a
  scheme with many merchants; per-party folders, workbooks, signatures, fsyncs).

Party counts are kept prime to 10 (an issuer's share of each kind of transaction is the same
for every issuer) and merchants' to 7 (the loader spreads them by tx * 7). benchmarks/
settle_curve.py runs this script over sizes and mixes and prints the cost curve.

The last line printed is one JSON object with every figure. The scratch database is dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from clearing.core.kinds import OrgKind
from settlement.files import DETAIL_LIMIT
from settlement.lines import Party
from settlement.netting import Totals
from settlement.probe import BatchProbe
from settlement.repository import WINDOW_READERS, WindowSource
from settlement.service import net_and_write
from settlement.statement import StatementMeta

ADMIN_URL = os.environ.get(
    "CLEARING_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
START = datetime(2026, 3, 1, 16, 0, tzinfo=UTC)  # 2026-03-02 00:00 Asia/Shanghai
END = START + timedelta(days=1)
PLATFORM_KEY = "platform"

SCHEMA = """
CREATE TABLE obligations (
    entry_id uuid NOT NULL,
    seq smallint NOT NULL,
    event_type varchar(40) NOT NULL,
    payer_org_id uuid NOT NULL,
    payee_org_id uuid NOT NULL,
    currency varchar(3) NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    program_code varchar(40),
    points bigint,
    point_value numeric(24, 12),
    point_value_version integer,
    original_entry_id uuid,
    booked_at timestamptz NOT NULL,
    PRIMARY KEY (entry_id, seq)
)
"""
# One transaction per tx: its main obligation (seq 0) and its fee (seq 1). tx % 10 picks the
# kind: 0-5 checkout capture + merchant fee, 6-7 conversion + issuer fee, 8 checkout refund +
# fee refund, 9 merchant-funded accrual + merchant fee.
LOAD = """
INSERT INTO obligations
SELECT md5('tx' || tx)::uuid, s.seq,
       CASE WHEN s.seq = 0 THEN
            CASE WHEN k < 6 THEN 'checkout_capture' WHEN k < 8 THEN 'conversion'
                 WHEN k = 8 THEN 'checkout_refund' ELSE 'merchant_funded_accrual' END
       ELSE CASE WHEN k = 8 THEN 'fee_refund' ELSE 'fee' END END,
       CASE WHEN s.seq = 0 THEN
            CASE WHEN k < 8 THEN issuer WHEN k = 8 THEN merchant ELSE merchant END
       ELSE CASE WHEN k = 8 THEN platform WHEN k IN (6, 7) THEN issuer ELSE merchant END END,
       CASE WHEN s.seq = 0 THEN
            CASE WHEN k < 6 THEN merchant WHEN k < 8 THEN other WHEN k = 8 THEN issuer
                 ELSE issuer END
       ELSE CASE WHEN k = 8 THEN merchant ELSE platform END END,
       'CNY',
       CASE WHEN s.seq = 0 THEN pts / 2 + 1 ELSE pts / 2 * 6 / 1000 + 1 END,
       CASE WHEN s.seq = 0 THEN 'PRG-' || (tx %% 20) END,
       CASE WHEN s.seq = 0 THEN pts END,
       CASE WHEN s.seq = 0 THEN 0.005 END,
       CASE WHEN s.seq = 0 THEN 1 + tx %% 3 END,
       CASE WHEN k = 8 THEN md5('tx' || greatest(tx - 10, 1))::uuid END,
       %(start)s::timestamptz + (tx * %(step)s) * interval '1 microsecond'
FROM (
    SELECT tx, tx %% 10 AS k, 1 + (tx * 7919) %% 1000000 AS pts,
           md5('issuer-' || (tx %% %(issuers)s))::uuid AS issuer,
           md5('issuer-' || ((tx + 3) %% %(issuers)s))::uuid AS other,
           md5('merchant-' || ((tx * 7) %% %(merchants)s))::uuid AS merchant,
           md5('platform')::uuid AS platform
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS tx
) AS t
CROSS JOIN (VALUES (0), (1)) AS s(seq)
WHERE tx * 2 + s.seq < %(limit)s
"""
STREAM = """
COPY (
    SELECT entry_id, seq, original_entry_id, event_type, payer_org_id, payee_org_id, currency,
           amount, program_code, coalesce(points, 0), point_value, point_value_version,
           (extract(epoch FROM booked_at) * 1000000)::bigint
    FROM obligations
    WHERE currency = 'CNY' AND booked_at >= %(start)s AND booked_at < %(end)s
    ORDER BY booked_at, entry_id, seq
) TO STDOUT (FORMAT csv)
"""
GROUP_BY = """
SELECT currency, payer_org_id, payee_org_id, event_type, sum(amount), count(*)
FROM obligations
WHERE currency = 'CNY' AND booked_at >= %(start)s AND booked_at < %(end)s
GROUP BY currency, payer_org_id, payee_org_id, event_type
"""
CONTROL = """
SELECT currency, sum(amount), count(*), sum(coalesce(points, 0))
FROM obligations WHERE booked_at >= %(start)s AND booked_at < %(end)s GROUP BY currency
"""


class PhaseTimer(BatchProbe):
    """Wall seconds per phase of the files pass, and of each worker's whole share."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.shares: list[float] = []

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time one stretch of `name`."""
        began = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - began
            if name == "share":
                self.shares.append(elapsed)
            else:
                self.seconds[name] += elapsed

    def merge(self, worker: BatchProbe) -> None:
        """Add the files worker's figures (its share after the calling process's)."""
        assert isinstance(worker, PhaseTimer)
        for name, value in worker.seconds.items():
            self.seconds[name] += value
        self.shares.extend(worker.shares)


def peak_rss_mib() -> tuple[float, float]:
    """Peak resident set size of this process and of its largest waited-for child (the files
    worker or a psql), MiB (ru_maxrss is KiB). Their sum bounds the run's peak."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return own / 1024, kids / 1024


MIXES = ("standard", "under-threshold", "many-parties")
UNDER_THRESHOLD_FILL = 0.9
"""The under-threshold mix aims every issuer and merchant at this share of DETAIL_LIMIT."""


def _coprime(count: int, *primes: int) -> int:
    while any(count % q == 0 for q in primes):
        count += 1
    return count


def under_threshold_parties(rows: int, detail_limit: int = DETAIL_LIMIT) -> tuple[int, int]:
    """Issuers and merchants that keep each one just under `detail_limit` detail lines."""
    # Per transaction (two obligations) the loader gives issuers 1.2 detail lines and
    # merchants 0.8 (a fee folds into its transaction's line), the platform 1.
    txs = (rows + 1) // 2
    target = detail_limit * UNDER_THRESHOLD_FILL
    issuers = _coprime(max(1, -(-txs * 6 // 5 // int(target))), 2, 5)
    merchants = _coprime(max(1, -(-txs * 4 // 5 // int(target))), 2, 5, 7)
    return issuers, merchants


def mix_parties(mix: str, rows: int, detail_limit: int = DETAIL_LIMIT) -> tuple[int, int]:
    """(issuers, merchants) of a party mix at `rows` obligations."""
    if mix == "standard":
        return 20, 200
    if mix == "under-threshold":
        return under_threshold_parties(rows, detail_limit)
    if mix == "many-parties":
        return 2_003, 7_997
    raise ValueError(f"unknown mix {mix!r}")


def load(conn: psycopg.Connection[Any], rows: int, issuers: int = 20, merchants: int = 200) -> None:
    """Create and fill the obligations table, in slices (one transaction each)."""
    conn.execute(SCHEMA)
    txs = (rows + 1) // 2
    step = 86_400_000_000 // (txs + 2)
    per = 1_000_000
    for lo in range(1, txs + 1, per):
        conn.execute(
            LOAD,
            {
                "start": START,
                "step": step,
                "lo": lo,
                "hi": min(lo + per - 1, txs),
                "limit": rows + 2,
                "issuers": issuers,
                "merchants": merchants,
            },
        )
    # The ledger's index (migration 0001): the window in statement order, no sort.
    conn.execute(
        "CREATE INDEX ix_obligations_window ON obligations (currency, booked_at, entry_id, seq)"
    )
    conn.execute("VACUUM ANALYZE obligations")


def org_ids(
    conn: psycopg.Connection[Any], issuers: int = 20, merchants: int = 200
) -> tuple[str, list[str], list[str]]:
    """The platform's, issuers' and merchants' ids (md5 uuids, as the loader made them)."""
    row = conn.execute(
        "SELECT md5('platform')::uuid::text, "
        "array(SELECT md5('issuer-' || n)::uuid::text FROM generate_series(0, %s - 1) n), "
        "array(SELECT md5('merchant-' || n)::uuid::text FROM generate_series(0, %s - 1) n)",
        (issuers, merchants),
    ).fetchone()
    assert row is not None
    return row[0], list(row[1]), list(row[2])


def parties_and_metas(
    conn: psycopg.Connection[Any], issuers: int = 20, merchants: int = 200
) -> tuple[str, list[Party], dict[str, StatementMeta]]:
    """The platform's id, every party of the loaded day and their statements' header values."""
    platform_id, issuer_ids, merchant_ids = org_ids(conn, issuers, merchants)
    parties = [Party(platform_id, "Points Clearing Platform", OrgKind.PLATFORM, "CNY")]
    parties += [Party(i, f"Issuer {n}", OrgKind.ISSUER, "CNY") for n, i in enumerate(issuer_ids)]
    parties += [
        Party(m, f"Merchant {n}", OrgKind.MERCHANT, "CNY") for n, m in enumerate(merchant_ids)
    ]
    meta = StatementMeta(
        batch_id="bench-CNY-20260302",
        settlement_date=date(2026, 3, 2),
        window_start=START,
        window_end=END,
        zone="Asia/Shanghai",
        currency="CNY",
        generated_at=datetime(2026, 3, 2, 17, 0, tzinfo=UTC),
        sequence=1,
        previous_file_id=None,
    )
    return platform_id, parties, {p.id: meta for p in parties}


def timed_copy(conn: psycopg.Connection[Any]) -> float:
    """Seconds to stream the ordered window to nowhere (the server side of streaming)."""
    began = time.perf_counter()
    with conn.cursor() as cur, cur.copy(STREAM, {"start": START, "end": END}) as copy:
        for _block in copy:
            pass
    return time.perf_counter() - began


def main() -> int:
    """Run the benchmark; print a table, then one JSON line.

    Long on purpose: the script's phases, in the order they run and print; each measurement
    lives in its own function above.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=500_000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--detail-limit", type=int, default=DETAIL_LIMIT)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--no-index-study", action="store_true", help="skip the bare COPY timing")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reader", choices=WINDOW_READERS, default="psql")
    parser.add_argument("--db", default=None, help="reuse (or create and keep) this database")
    parser.add_argument("--mix", choices=MIXES, default="standard", help="party mix (docstring)")
    args = parser.parse_args()
    issuers, merchants = mix_parties(args.mix, args.rows, args.detail_limit)
    out = args.out or Path(tempfile.mkdtemp(prefix="settle-bench-"))
    scratch = args.db or f"settle_bench_{os.getpid()}"
    admin = psycopg.connect(ADMIN_URL, autocommit=True)
    exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (scratch,)).fetchone()
    if not exists:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    url = psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=scratch)
    figures: dict[str, Any] = {"rows": args.rows, "chunk": args.chunk, "mix": args.mix}
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            began = time.perf_counter()
            if exists:
                count = conn.execute("SELECT count(*) FROM obligations").fetchone()
                if count is None or count[0] != args.rows:
                    raise SystemExit(f"database {scratch} holds {count} rows, not {args.rows}")
            else:
                load(conn, args.rows, issuers, merchants)
            figures["load_seconds"] = round(time.perf_counter() - began, 2)

            began = time.perf_counter()
            reference = conn.execute(GROUP_BY, {"start": START, "end": END}).fetchall()
            figures["group_by_seconds"] = round(time.perf_counter() - began, 2)

            platform_id, parties, metas = parties_and_metas(conn, issuers, merchants)
            folders = {p.id: out / p.id for p in parties}
            engine = create_engine(
                make_url(ADMIN_URL).set(drivername="postgresql+psycopg", database=scratch)
            )
            key = Ed25519PrivateKey.generate()
            timer = PhaseTimer()

            t0 = time.perf_counter()
            control = {
                str(c): Totals(int(a), int(n), int(p))
                for c, a, n, p in conn.execute(CONTROL, {"start": START, "end": END})
            }
            # What run_batch runs from state closing: one pass that nets and writes every
            # folder, then the invariants (the service reads parties, metas and control totals
            # from its tables; here they are made above and by CONTROL).
            result = net_and_write(
                WindowSource(engine, "CNY", START, END, args.reader, chunk_rows=args.chunk),
                folders,
                parties,
                metas,
                signing_key=key,
                key_id="bench",
                expected=control,
                platform_id=platform_id,
                workers=args.workers,
                probe=timer,
            )
            t_files = time.perf_counter()
            written, clearing, errors = result.written, result.clearing, list(result.errors)
            for c, payer, payee, ev, amount, count in reference:
                got = clearing.gross.get((c, str(payer), str(payee), ev))
                if got is None or (got.amount, got.count) != (int(amount), int(count)):
                    errors.append(f"gross of {payer}->{payee} {ev} differs from GROUP BY")
            if len(reference) != len(clearing.gross):
                errors.append("gross obligations differ in number from GROUP BY")
            files = written.parties
            t_end = time.perf_counter()
            if errors:
                raise SystemExit("invariants broken: " + "; ".join(errors[:5]))
            seconds = dict(timer.seconds)
            total = t_end - t0
            figures.update(
                {
                    "workers": written.workers,
                    "worker_wall_seconds": [round(w, 2) for w in timer.shares],
                    "stream_parse_cpu_seconds": round(seconds.get("stream", 0.0), 2),
                    "clear_seconds": round(seconds.get("tap", 0.0), 2),
                    "net_and_write_seconds": round(t_files - t0, 2),
                    "group_by_check_seconds": round(t_end - t_files, 2),
                    "reader": args.reader,
                    "detail_rows_cpu_seconds": round(seconds.get("details", 0.0), 2),
                    "csv_format_write_cpu_seconds": round(seconds.get("csv", 0.0), 2),
                    "xlsx_cpu_seconds": round(seconds.get("xlsx", 0.0), 2),
                    "camt_cpu_seconds": round(seconds.get("camt", 0.0), 2),
                    "manifests_cpu_seconds": round(seconds.get("manifests", 0.0), 2),
                    "publish_seconds": round(seconds.get("publish", 0.0), 2),
                    "seconds_per_million": round(total * 1_000_000 / args.rows, 2),
                    "max_party_lines": max(
                        f.totals.count for pid, f in files.items() if pid != platform_id
                    ),
                    "parties_under_limit": sum(
                        1
                        for pid, f in files.items()
                        if pid != platform_id and f.totals.count <= args.detail_limit
                    ),
                    "total_seconds": round(total, 2),
                    "rows_per_second": round(args.rows / total),
                    "ratio": round(total / figures["group_by_seconds"], 2),
                    "target_seconds": 120,
                    "target_met": total <= 120,
                    "parties": len(parties),
                    "detail_lines": sum(f.totals.count for f in files.values()),
                    "csv_bytes": sum(
                        (f.directory / "statement.csv").stat().st_size for f in files.values()
                    ),
                    "platform_net": files[platform_id].totals.net,
                    "fee_income": clearing.fee_income.get("CNY", 0),
                }
            )
            own, kids = peak_rss_mib()
            figures["peak_rss_mib"] = round(max(own, kids))
            figures["peak_rss_mib_both_processes"] = round(own + kids)
            figures["memory_met"] = own + kids < 4096
            if not args.no_index_study:
                figures["ordered_copy_seconds"] = round(timed_copy(conn), 2)
    finally:
        if not args.keep_db and not args.db:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch))
            )
        admin.close()
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    rows = [
        ("rows", f"{figures['rows']:,}"),
        ("PostgreSQL GROUP BY (reference)", f"{figures['group_by_seconds']:.1f} s"),
        ("workers (wall s each)", str(figures["worker_wall_seconds"])),
        ("stream + parse (CPU, all workers)", f"{figures['stream_parse_cpu_seconds']:.1f} s"),
        ("clear", f"{figures['clear_seconds']:.1f} s"),
        ("net_and_write (wall)", f"{figures['net_and_write_seconds']:.1f} s"),
        ("gross vs GROUP BY check", f"{figures['group_by_check_seconds']:.1f} s"),
        ("detail rows (CPU)", f"{figures['detail_rows_cpu_seconds']:.1f} s"),
        ("CSV format + write + hash (CPU)", f"{figures['csv_format_write_cpu_seconds']:.1f} s"),
        ("XLSX (CPU)", f"{figures['xlsx_cpu_seconds']:.1f} s"),
        ("camt.053 (CPU)", f"{figures['camt_cpu_seconds']:.1f} s"),
        ("manifests + signatures (CPU)", f"{figures['manifests_cpu_seconds']:.1f} s"),
        ("publish: fsync + rename (wall)", f"{figures['publish_seconds']:.1f} s"),
        ("total (wall, everything)", f"{figures['total_seconds']:.1f} s"),
        ("rows/s", f"{figures['rows_per_second']:,}"),
        ("seconds per million obligations", f"{figures['seconds_per_million']:.1f} s"),
        ("ratio total / GROUP BY", f"{figures['ratio']:.2f}"),
        ("peak RSS (largest process)", f"{figures['peak_rss_mib']:,} MiB"),
        ("peak RSS (both workers, bound)", f"{figures['peak_rss_mib_both_processes']:,} MiB"),
    ]
    for label, value in rows:
        print(f"{label:<34} {value:>14}")
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

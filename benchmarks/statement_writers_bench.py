"""A party's XLSX and camt.053 detail rows: openpyxl and the per-row writers against ours.

    .venv/bin/python benchmarks/statement_writers_bench.py [--rows 200000]

Writes one party's statement.csv of `--rows` detail rows (captures from 40 issuers with their
fees, every fifth a refund, CNY) through the files step's own CSV writer, then times in one
run, each on the same rows (CPU seconds of this process, and wall):
- the old way: the per-row parse of the finished CSV into DetailRow objects (csv.reader,
  Decimal, datetime per row), then (a) an openpyxl write-only workbook with the same cells,
  as settlement.statement_xlsx wrote it before (tests/settlement/xlsx_reference.py, which the
  tests also read back against ours), and (c) camt.053 entries by `Camt053Writer.write_row`;
- ours: the CSV's detail texts read in chunks (`csv_detail_chunks`), then (b)
  `XlsxStatementWriter.write_details` and (c) `Camt053Writer.write_details`.
Each writer's time includes its finish (summary, trailer, package). The two camt.053 files are
compared byte for byte. Prints rows per second of each and the ratios ours / old (writers
alone, and with the CSV read), then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clearing.core.kinds import OrgKind
from settlement.camt053 import Camt053Writer
from settlement.files import write_statement_csv
from settlement.lines import ObligationLine, Party
from settlement.statement import StatementMeta
from settlement.statement_csv import csv_detail_chunks
from settlement.statement_xlsx import XlsxStatementWriter
from tests.settlement.xlsx_reference import (
    OpenpyxlStatementWriter,
    csv_body_sha256,
    csv_detail_rows,
)

T = TypeVar("T")
START = datetime(2026, 3, 1, 16, 0, tzinfo=UTC)
PARTY = Party("shop-x", "Shop X, Co.", OrgKind.MERCHANT, "CNY")
META = StatementMeta(
    batch_id="batch-20260302-CNY",
    settlement_date=date(2026, 3, 2),
    window_start=START,
    window_end=START + timedelta(days=1),
    zone="Asia/Shanghai",
    currency="CNY",
    generated_at=datetime(2026, 3, 2, 17, 5, tzinfo=UTC),
    sequence=42,
    previous_file_id=None,
)


def lines(rows: int) -> list[ObligationLine]:
    """`rows` references of the party: a capture or a refund, and a fee on most."""
    out: list[ObligationLine] = []
    step = timedelta(days=1) / max(rows, 1)
    for n in range(rows):
        ref = f"{n + 1:032x}"
        issuer = f"bank-{n % 40:02d}"
        refund = n % 5 == 4
        amount = 100 + (n * 7919) % 500_000
        at = START + step * n
        event, payer, payee = (
            ("checkout_refund", PARTY.id, issuer)
            if refund
            else ("checkout_capture", issuer, PARTY.id)
        )
        out.append(
            ObligationLine(
                reference=ref,
                seq=0,
                original_reference=f"{n:032x}" if refund else None,
                event_type=event,
                payer=payer,
                payee=payee,
                currency="CNY",
                amount=amount,
                program="PRG-A" if n % 3 else None,
                points=amount // 10 if n % 3 else None,
                point_value=Decimal("0.005000000000") if n % 3 else None,
                point_value_version=2 if n % 3 else None,
                booked_at=at,
            )
        )
        if n % 4:
            fee_payer, fee_payee = ("platform", PARTY.id) if refund else (PARTY.id, "platform")
            out.append(
                ObligationLine(
                    reference=ref,
                    seq=1,
                    original_reference=f"{n:032x}" if refund else None,
                    event_type="fee_refund" if refund else "fee",
                    payer=fee_payer,
                    payee=fee_payee,
                    currency="CNY",
                    amount=amount // 100 + 1,
                    program=None,
                    points=None,
                    point_value=None,
                    point_value_version=None,
                    booked_at=at + timedelta(microseconds=1),
                )
            )
    return out


def timed(run: Callable[[], T]) -> tuple[T, float, float]:
    """run()'s result, its CPU seconds (this process) and its wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = run()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    """Run the comparison and print its figures, JSON last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        csv_path = base / "statement.csv"
        totals = write_statement_csv(csv_path, PARTY, lines(args.rows), META)
        body = csv_body_sha256(csv_path)
        rows = totals.count

        detail_rows, parse_cpu, parse_wall = timed(
            lambda: list(csv_detail_rows(csv_path, META.currency))
        )
        chunks, read_cpu, read_wall = timed(lambda: list(csv_detail_chunks(csv_path)))
        # The inputs stay alive through every writer: out of the collector's way, so that no
        # writer pays for scanning them (openpyxl's many small objects trigger full passes).
        gc.collect()
        gc.freeze()

        def openpyxl_xlsx() -> None:
            writer = OpenpyxlStatementWriter(PARTY, META)
            for row in detail_rows:
                writer.write_row(row)
            writer.finish(totals, body, base / "openpyxl.xlsx")

        def our_xlsx() -> None:
            writer = XlsxStatementWriter(base / "ours.xlsx", PARTY, META)
            for chunk in chunks:
                writer.write_details(chunk)
            writer.finish(totals, body)

        def old_camt() -> bytes:
            with tempfile.TemporaryFile() as entries, open(base / "old.xml", "wb") as out:
                writer = Camt053Writer(PARTY, META, entries)
                for row in detail_rows:
                    writer.write_row(row)
                writer.finish(totals, out)
            return (base / "old.xml").read_bytes()

        def our_camt() -> bytes:
            with tempfile.TemporaryFile() as entries, open(base / "ours.xml", "wb") as out:
                writer = Camt053Writer(PARTY, META, entries)
                for chunk in chunks:
                    writer.write_details(chunk)
                writer.finish(totals, out)
            return (base / "ours.xml").read_bytes()

        _, px_cpu, px_wall = timed(openpyxl_xlsx)
        _, ox_cpu, ox_wall = timed(our_xlsx)
        old_bytes, pc_cpu, pc_wall = timed(old_camt)
        our_bytes, oc_cpu, oc_wall = timed(our_camt)
        if old_bytes != our_bytes:
            raise SystemExit("camt.053 bytes differ between write_row and write_details")
        sizes = {
            "openpyxl_xlsx_bytes": (base / "openpyxl.xlsx").stat().st_size,
            "our_xlsx_bytes": (base / "ours.xlsx").stat().st_size,
            "camt_bytes": len(our_bytes),
        }

    def rate(cpu: float) -> float:
        return rows / cpu if cpu > 0 else float("inf")

    figures = {
        "rows": rows,
        "old_csv_parse_cpu_s": round(parse_cpu, 3),
        "our_csv_read_cpu_s": round(read_cpu, 3),
        "openpyxl_xlsx_cpu_s": round(px_cpu, 3),
        "our_xlsx_cpu_s": round(ox_cpu, 3),
        "old_camt_cpu_s": round(pc_cpu, 3),
        "our_camt_cpu_s": round(oc_cpu, 3),
        "openpyxl_xlsx_rows_per_s": round(rate(px_cpu)),
        "our_xlsx_rows_per_s": round(rate(ox_cpu)),
        "old_camt_rows_per_s": round(rate(pc_cpu)),
        "our_camt_rows_per_s": round(rate(oc_cpu)),
        "xlsx_ratio_ours_over_openpyxl": round(px_cpu / ox_cpu, 1),
        "camt_ratio_ours_over_old": round(pc_cpu / oc_cpu, 1),
        "xlsx_with_csv_read_ratio": round((parse_cpu + px_cpu) / (read_cpu + ox_cpu), 1),
        "camt_with_csv_read_ratio": round((parse_cpu + pc_cpu) / (read_cpu + oc_cpu), 1),
        "both_files_with_csv_read_ratio": round(
            (parse_cpu + px_cpu + pc_cpu) / (read_cpu + ox_cpu + oc_cpu), 1
        ),
        "wall_s": {
            "old_csv_parse": round(parse_wall, 3),
            "our_csv_read": round(read_wall, 3),
            "openpyxl_xlsx": round(px_wall, 3),
            "our_xlsx": round(ox_wall, 3),
            "old_camt": round(pc_wall, 3),
            "our_camt": round(oc_wall, 3),
        },
        **sizes,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(f"{rows:,} detail rows, CPU seconds of this process")
    print(f"  old CSV parse (per row)   {parse_cpu:8.2f} s")
    print(f"  our CSV read (texts)      {read_cpu:8.2f} s")
    print(f"  (a) openpyxl XLSX         {px_cpu:8.2f} s  {rate(px_cpu):>12,.0f} rows/s")
    print(f"  (b) our XLSX              {ox_cpu:8.2f} s  {rate(ox_cpu):>12,.0f} rows/s")
    print(f"  (c) camt.053 write_row    {pc_cpu:8.2f} s  {rate(pc_cpu):>12,.0f} rows/s")
    print(f"  (c) camt.053 ours         {oc_cpu:8.2f} s  {rate(oc_cpu):>12,.0f} rows/s")
    print(f"  XLSX ours / openpyxl: {figures['xlsx_ratio_ours_over_openpyxl']}x")
    print(f"  camt ours / write_row: {figures['camt_ratio_ours_over_old']}x")
    print(f"  both files with the CSV read: {figures['both_files_with_csv_read_ratio']}x")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()

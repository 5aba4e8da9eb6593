"""Pure settlement at scale: clear + invariants + the platform's CSV over synthetic lines.

Usage: .venv/bin/python benchmarks/settle_pure.py [--lines 10000000] [--chunk 250000] [--out DIR]
Lines are generated chunk by chunk, twice (once per pass), and never held all at once.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from settlement.files import write_statement_csv
from settlement.lines import ObligationLine, Party
from settlement.netting import check_invariants, clear
from settlement.statement import StatementMeta

PLATFORM = "platform"
ISSUERS = [f"issuer-{n:02d}" for n in range(20)]
MERCHANTS = [f"merchant-{n:03d}" for n in range(200)]
START = datetime(2026, 3, 1, 16, 0, tzinfo=UTC)
DAY_US = 86_400 * 1_000_000
POINT_VALUE = Decimal("0.005")


def chunks(total: int, size: int) -> Iterator[list[ObligationLine]]:
    """`total` lines sorted by (booked_at, reference, seq), `size` at a time; deterministic."""
    made = 0
    tx = 0
    chunk: list[ObligationLine] = []
    while made < total:
        tx += 1
        ref = f"{tx:032x}"
        at = START + timedelta(microseconds=tx * (DAY_US // (total // 2 + 2)))
        issuer = ISSUERS[tx % len(ISSUERS)]
        merchant = MERCHANTS[(tx * 7) % len(MERCHANTS)]
        points = 1_000 + tx % 9_000
        value = points // 2  # 0.005 CNY per point = 0.5 fen
        kind = tx % 10
        if kind < 6:
            main = ObligationLine(
                ref,
                0,
                None,
                "checkout_capture",
                issuer,
                merchant,
                "CNY",
                value,
                "PRG",
                points,
                POINT_VALUE,
                1,
                at,
            )
            fee = ObligationLine(
                ref,
                1,
                None,
                "fee",
                merchant,
                PLATFORM,
                "CNY",
                value * 6 // 1000 + 1,
                None,
                None,
                None,
                None,
                at,
            )
        elif kind < 8:
            other = ISSUERS[(tx + 3) % len(ISSUERS)]
            main = ObligationLine(
                ref,
                0,
                None,
                "conversion",
                issuer,
                other,
                "CNY",
                value,
                "PRG",
                points,
                POINT_VALUE,
                1,
                at,
            )
            fee = ObligationLine(
                ref,
                1,
                None,
                "fee",
                issuer,
                PLATFORM,
                "CNY",
                value // 100 + 1,
                None,
                None,
                None,
                None,
                at,
            )
        else:
            orig = f"{max(tx - 10, 1):032x}"
            main = ObligationLine(
                ref,
                0,
                orig,
                "checkout_refund",
                merchant,
                issuer,
                "CNY",
                value,
                "PRG",
                points,
                POINT_VALUE,
                1,
                at,
            )
            fee = ObligationLine(
                ref,
                1,
                orig,
                "fee_refund",
                PLATFORM,
                merchant,
                "CNY",
                value * 6 // 1000 + 1,
                None,
                None,
                None,
                None,
                at,
            )
        for line in (main, fee)[: total - made]:
            chunk.append(line)
            made += 1
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def lines(total: int, size: int) -> Iterator[ObligationLine]:
    """The same lines one by one."""
    for chunk in chunks(total, size):
        yield from chunk


def main() -> int:
    """Run the benchmark and print elapsed seconds and peak RSS."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=250_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="settle-bench-"))
    out.mkdir(parents=True, exist_ok=True)

    began = time.perf_counter()
    clearing = clear(chunks(args.lines, args.chunk))
    errors = check_invariants(clearing, platform_id=PLATFORM)
    cleared = time.perf_counter()
    meta = StatementMeta(
        batch_id="bench-CNY-20260302",
        settlement_date=date(2026, 3, 2),
        window_start=START,
        window_end=START + timedelta(days=1),
        zone="Asia/Shanghai",
        currency="CNY",
        generated_at=datetime(2026, 3, 2, 17, 0, tzinfo=UTC),
        sequence=1,
        previous_file_id=None,
    )
    platform = Party(PLATFORM, "Points Clearing Platform", "platform", "CNY")
    path = out / "platform.csv"
    totals = write_statement_csv(path, platform, lines(args.lines, args.chunk), meta)
    written = time.perf_counter()

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"lines: {clearing.line_count:,}  invariant errors: {len(errors)}")
    print(f"platform net (fee income): {totals.net} fen = {clearing.fee_income.get('CNY')} fen")
    print(f"csv detail rows: {totals.count:,}  size: {path.stat().st_size / 2**20:,.0f} MiB")
    print(f"clear + invariants: {cleared - began:,.1f} s")
    print(f"platform csv:       {written - cleared:,.1f} s")
    print(f"total:              {written - began:,.1f} s")
    print(f"peak RSS:           {peak_kib / 1024:,.0f} MiB")
    if args.out is None:
        path.unlink()
        out.rmdir()
    return 1 if errors or totals.net != clearing.fee_income.get("CNY") else 0


if __name__ == "__main__":
    sys.exit(main())

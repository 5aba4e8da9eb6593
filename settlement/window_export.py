"""A batch's window leaves the ledger as Parquet, partitioned by currency and business date.

These are the files a change-data-capture pipeline would land on object storage in production
(settlement/SCALE.md): the Spark engine reads them instead of the database. The export is a
step of the batch's state machine (closing -> exported): it is written into a staging folder,
read back and checked against the ledger's control totals frozen at closing, and only then
renamed into place, so a crash leaves either no export or a complete, checked one.

Layout: `<settlement_dir>/.window/currency=<CUR>/business_date=<YYYY-MM-DD>/part-NNNNN.parquet`,
each part at most PART_ROWS lines in statement order (booked_at, reference, seq), columns
LINE_COLUMNS in the canonical form of `lines.normalize_frame` (text as written in files, so
nothing is re-formatted between the engines).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from settlement.files import Chunk, fsync_path, line_chunks
from settlement.lines import LINE_COLUMNS, ensure_frame
from settlement.netting import Totals

WINDOW_DIR = ".window"
PART_ROWS = 1_000_000
"""Lines per Parquet part: parts are what Spark splits the read by."""
ROW_GROUP_ROWS = 131_072

SCHEMA = pa.schema(
    [
        ("reference", pa.string()),
        ("seq", pa.int64()),
        ("original_reference", pa.string()),
        ("event_type", pa.string()),
        ("payer", pa.string()),
        ("payee", pa.string()),
        ("currency", pa.string()),
        ("amount", pa.int64()),
        ("program", pa.string()),
        ("points", pa.int64()),
        ("point_value", pa.string()),
        ("point_value_version", pa.string()),
        ("booked_at", pa.timestamp("us", tz="UTC")),
    ]
)
assert tuple(SCHEMA.names) == LINE_COLUMNS, "the export's columns are the lines' fields"


class WindowExportMismatch(ValueError):
    """The exported files do not hold what the ledger's control totals say."""


def window_path(settlement_dir: Path, currency: str, business_date: date) -> Path:
    """Where a batch's exported window lives."""
    return (
        settlement_dir
        / WINDOW_DIR
        / f"currency={currency}"
        / f"business_date={business_date.isoformat()}"
    )


def export_window(lines: Iterable[Chunk], target: Path, expected: Totals) -> Totals:
    """Write `lines` (sorted chunks) as Parquet parts at `target`, checked against `expected`.

    The parts go into a staging folder first; they are read back, their count and exact sums
    compared with `expected`, then the folder is renamed to `target` (an earlier export there
    is replaced). On any failure nothing is left at `target` or in staging.
    """
    staging = target.with_name(f".{target.name}.staging")
    for leftover in (staging, target):
        if leftover.exists():
            shutil.rmtree(leftover)
    staging.mkdir(parents=True)
    try:
        _write_parts(line_chunks(lines), staging)
        got = exported_totals(staging)
        if got != expected:
            raise WindowExportMismatch(
                f"the exported window holds {got}, the ledger's control totals are {expected}"
            )
        os.replace(staging, target)
        with contextlib.suppress(OSError):
            fsync_path(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return got


def _write_parts(chunks: Iterator[Chunk], folder: Path) -> None:
    part = 0
    writer: pq.ParquetWriter | None = None
    rows_in_part = 0
    try:
        for chunk in chunks:
            frame = ensure_frame(chunk)
            at = 0
            while at < len(frame):
                if writer is None:
                    writer = pq.ParquetWriter(folder / f"part-{part:05d}.parquet", SCHEMA)
                take = min(len(frame) - at, PART_ROWS - rows_in_part)
                writer.write_table(_table(frame.iloc[at : at + take]), ROW_GROUP_ROWS)
                at += take
                rows_in_part += take
                if rows_in_part >= PART_ROWS:
                    writer.close()
                    writer = None
                    fsync_path(folder / f"part-{part:05d}.parquet")
                    part += 1
                    rows_in_part = 0
        if writer is None and part == 0:
            # An empty window still has one (empty) part: the reader sees its schema.
            writer = pq.ParquetWriter(folder / "part-00000.parquet", SCHEMA)
        if writer is not None:
            writer.close()
            writer = None
            fsync_path(folder / f"part-{part:05d}.parquet")
    finally:
        if writer is not None:
            writer.close()
    fsync_path(folder)


def _table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame[list(LINE_COLUMNS)], schema=SCHEMA, preserve_index=False)


def exported_totals(folder: Path) -> Totals:
    """Count, amount and points of the exported lines, summed exactly (past 2^63)."""
    exact = pa.decimal128(38, 0)
    count = amount = points = 0
    for path in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(path, columns=["amount", "points"])
        count += table.num_rows
        for name in ("amount", "points"):
            total = pc.sum(pc.cast(table[name], exact)).as_py()
            value = 0 if total is None else int(total)
            if name == "amount":
                amount += value
            else:
                points += value
    return Totals(amount=amount, count=count, points=points)


def read_window(folder: Path) -> Iterator[pd.DataFrame]:
    """The exported lines back as frames (one per row group), in statement order."""
    for path in sorted(folder.glob("part-*.parquet")):
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            yield parquet.read_row_group(group).to_pandas()

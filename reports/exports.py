"""A report's table as a file: CSV, XLSX or Parquet, each typed after the report's columns.

- CSV (UTF-8, a header row, `\\n` line ends): dates ISO (YYYY-MM-DD), points and counts as
  integers, rates as exact decimal text. Money is integer minor units, as everywhere on the
  platform, next to the row's `currency`; each money column is followed by `<name>_decimal`,
  the same amount in major units with exactly the currency's digits (`12345` CNY -> `123.45`),
  for a person opening the file in a spreadsheet.
- XLSX: one sheet, typed cells: dates as dates, integers as numbers, rates as numbers, and the
  same `<name>_decimal` columns as numbers formatted with the currency's digits. Written in
  openpyxl's write-only mode (rows streamed to the file, never a sheet held in memory).
- Parquet: one column per report column and no added ones (machines compute major units from
  the currency): date32, string, int64, and decimal128(38, s) for rates, `s` the most
  fractional digits any value of the column has, so that no rate is rounded on the way out.
  Row groups of `ROW_GROUP` rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, BinaryIO

from clearing.core.money import exponent, format_minor
from reports.query import Column, ColumnKind, ReportTable

ROW_GROUP = 65_536
"""Rows per chunk: a CSV chunk sent at once, a Parquet row group."""

DECIMAL_SUFFIX = "_decimal"


def _money_in_major(table: ReportTable) -> bool:
    """Whether money columns get a `_decimal` twin: only where the rows name their currency."""
    names = {c.name for c in table.columns}
    return "currency" in names and any(c.kind is ColumnKind.MONEY for c in table.columns)


def export_header(table: ReportTable) -> list[str]:
    """The header of the CSV and XLSX exports: the columns, each money one with its twin."""
    twins = _money_in_major(table)
    header: list[str] = []
    for column in table.columns:
        header.append(column.name)
        if twins and column.kind is ColumnKind.MONEY:
            header.append(column.name + DECIMAL_SUFFIX)
    return header


def cell_text(value: Any) -> str:
    """A value as text: dates ISO, decimals positional (never `1E-7`), the rest as `str`."""
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _csv_cell(value: Any, column: Column) -> str:
    return cell_text(value)


def _rows_with_twins(
    table: ReportTable, cell: Callable[[Any, Column], Any], twin: Callable[[int, str], Any]
) -> Iterator[list[Any]]:
    """Each row's cells, with `twin(amount, currency)` after each money cell where it has one."""
    twins = _money_in_major(table)
    currency_at = [c.name for c in table.columns].index("currency") if twins else -1
    for row in table.rows:
        out: list[Any] = []
        for value, column in zip(row, table.columns, strict=True):
            out.append(cell(value, column))
            if twins and column.kind is ColumnKind.MONEY:
                currency = row[currency_at]
                out.append(None if value is None or not currency else twin(value, currency))
        yield out


def csv_chunks(table: ReportTable, rows_per_chunk: int = ROW_GROUP) -> Iterator[bytes]:
    """The CSV export in chunks of UTF-8 bytes, the header first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(export_header(table))
    for count, cells in enumerate(_rows_with_twins(table, _csv_cell, format_minor), 1):
        writer.writerow("" if c is None else c for c in cells)
        if count % rows_per_chunk == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def write_csv(table: ReportTable, out: BinaryIO) -> None:
    """Write the CSV export to a binary stream."""
    for chunk in csv_chunks(table):
        out.write(chunk)


def _major(amount: int, currency: str) -> Decimal:
    """`amount` minor units in major units, exact (a decimal shift, no rounding)."""
    return Decimal(format_minor(amount, currency))


def write_xlsx(table: ReportTable, out: BinaryIO) -> None:
    """Write the XLSX export (one sheet named after the report) to a binary stream."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    book = Workbook(write_only=True)
    sheet = book.create_sheet(table.report[:31])
    sheet.append(export_header(table))

    def cell(value: Any, column: Column) -> Any:
        if column.kind is ColumnKind.DATE and value is not None:
            typed = WriteOnlyCell(sheet, value=value)
            typed.number_format = "yyyy-mm-dd"
            return typed
        return value

    def twin(amount: int, currency: str) -> Any:
        digits = exponent(currency)
        typed = WriteOnlyCell(sheet, value=_major(amount, currency))
        typed.number_format = "0." + "0" * digits if digits else "0"
        return typed

    for cells in _rows_with_twins(table, cell, twin):
        sheet.append(cells)
    book.save(out)


def _fraction_digits(value: Decimal) -> int:
    exp = value.as_tuple().exponent
    return max(0, -exp) if isinstance(exp, int) else 0


def parquet_schema(table: ReportTable) -> Any:
    """The Arrow schema of the Parquet export (see the module's docstring)."""
    import pyarrow as pa

    fields = []
    for at, column in enumerate(table.columns):
        if column.kind is ColumnKind.DATE:
            kind = pa.date32()
        elif column.kind is ColumnKind.TEXT:
            kind = pa.string()
        elif column.kind is ColumnKind.RATE:
            scale = max(
                (_fraction_digits(r[at]) for r in table.rows if r[at] is not None), default=0
            )
            kind = pa.decimal128(38, min(scale, 37))
        else:
            kind = pa.int64()
        fields.append(pa.field(column.name, kind))
    return pa.schema(fields)


def _chunks(rows: list[tuple[Any, ...]], size: int) -> Iterable[list[tuple[Any, ...]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def write_parquet(table: ReportTable, out: BinaryIO, rows_per_group: int = ROW_GROUP) -> None:
    """Write the Parquet export to a binary stream, one row group per chunk of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema(table)
    with pq.ParquetWriter(out, schema) as writer:
        if not table.rows:
            writer.write_table(schema.empty_table())
        for chunk in _chunks(table.rows, rows_per_group):
            arrays = [
                pa.array([row[at] for row in chunk], type=field.type)
                for at, field in enumerate(schema)
            ]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))


@dataclass(frozen=True, slots=True)
class ExportFormat:
    """A file format a report exports to: its suffix, media type and writer."""

    name: str
    suffix: str
    media_type: str
    write: Callable[[ReportTable, BinaryIO], None]


EXPORTS: dict[str, ExportFormat] = {
    "csv": ExportFormat("csv", ".csv", "text/csv; charset=utf-8", write_csv),
    "xlsx": ExportFormat(
        "xlsx",
        ".xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        write_xlsx,
    ),
    "parquet": ExportFormat("parquet", ".parquet", "application/vnd.apache.parquet", write_parquet),
}


def export_bytes(table: ReportTable, fmt: str) -> bytes:
    """The whole export in `fmt` (a report's table is already grouped: days x parties rows)."""
    buffer = io.BytesIO()
    EXPORTS[fmt].write(table, buffer)
    return buffer.getvalue()


def export_filename(table: ReportTable, query_from: date, query_to: date, fmt: str) -> str:
    """The file's name: the report and its dates, e.g. `checkout_volume_2026-11-20_2026-11-21.csv`."""
    return f"{table.report}_{query_from.isoformat()}_{query_to.isoformat()}{EXPORTS[fmt].suffix}"

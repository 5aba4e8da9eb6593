"""The statement XLSX as openpyxl wrote it before our own writer: the reference that tests and
benchmarks/statement_writers_bench.py compare settlement.statement_xlsx against (the same cells
read back), with the per-row CSV parse that used to feed it."""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell.cell import WriteOnlyCell
from openpyxl.writer.excel import ExcelWriter

from clearing.core.money import exponent, format_minor, parse_minor
from settlement.lines import Party
from settlement.statement import DetailRow, StatementMeta, StatementTotals, utc_text
from settlement.statement_csv import DETAIL_FIELDS, HEADER_FIELDS, SUMMARY_FIELDS, header_values
from settlement.statement_xlsx import EXCEL_EXACT, EXCEL_MAX_ROWS, TRAILER_LABELS


def csv_detail_rows(path: Path, currency: str) -> Iterator[DetailRow]:
    """The detail records of a written CSV statement, back as rows (the old per-row parse)."""
    with open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        for rec in csv.reader(text):
            if rec[0] != "D":
                if rec[0] in ("S", "T"):
                    return
                continue
            yield DetailRow(
                int(rec[1]),
                rec[2],
                rec[3] or None,
                rec[4],
                rec[5],
                rec[6] or None,
                int(rec[7]),
                Decimal(rec[8]) if rec[8] else None,
                int(rec[9]) if rec[9] else None,
                parse_minor(rec[10], currency),
                parse_minor(rec[11], currency),
                datetime.fromisoformat(rec[14]),
            )


class _FixedTimeZip(zipfile.ZipFile):
    """A ZipFile stamping every entry with one fixed time, so reruns give the same bytes."""

    def __init__(self, path: Path, stamp: tuple[int, int, int, int, int, int]) -> None:
        super().__init__(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
        self._stamp = stamp

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=self._stamp)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        return info

    def writestr(  # type: ignore[override]
        self, zinfo_or_arcname: str | zipfile.ZipInfo, data: bytes | str, *args: Any, **kw: Any
    ) -> None:
        name = (
            zinfo_or_arcname.filename
            if isinstance(zinfo_or_arcname, zipfile.ZipInfo)
            else zinfo_or_arcname
        )
        super().writestr(self._info(name), data)

    def write(  # type: ignore[override]
        self, filename: str | Path, arcname: str | None = None, *args: Any, **kw: Any
    ) -> None:
        # openpyxl's write-only sheets arrive as temp files: stream them, never their mtime.
        name = arcname if arcname is not None else Path(filename).name
        with open(filename, "rb") as src, self.open(self._info(name), "w", force_zip64=True) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def _text(ws: Any, value: str) -> Any:
    # openpyxl turns any text starting with "=" into a formula; names and ids are data.
    if value.startswith("="):
        cell = WriteOnlyCell(ws, value)
        cell.data_type = "s"
        return cell
    return value


def _count(value: int) -> int | str:
    # Points and counts follow the same rule as money (EXCEL_EXACT).
    return value if abs(value) < EXCEL_EXACT else str(value)


class OpenpyxlStatementWriter:
    """Writes one XLSX statement (write-only openpyxl), splitting details across sheets."""

    def __init__(
        self,
        party: Party,
        meta: StatementMeta,
        *,
        max_rows_per_sheet: int = EXCEL_MAX_ROWS,
        details_omitted: int | None = None,
        detail_limit: int | None = None,
    ) -> None:
        """`details_omitted`: the detail count of a statement too large for the workbook; its
        details are then left out (statement.csv has them) and the Header sheet says so."""
        if not 2 <= max_rows_per_sheet <= EXCEL_MAX_ROWS:
            raise ValueError(f"max_rows_per_sheet must be in 2..{EXCEL_MAX_ROWS}")
        self._exp = exponent(meta.currency)
        self._money_format = "0" if self._exp == 0 else "0." + "0" * self._exp
        self._meta = meta
        self._max_rows = max_rows_per_sheet
        self._wb = Workbook(write_only=True)
        moment = meta.generated_at.astimezone(UTC).replace(tzinfo=None)
        self._wb.properties.created = moment
        self._wb.properties.modified = moment
        self._wb.properties.creator = "points-clearing settlement"
        header = self._wb.create_sheet("Header")
        for label, value in zip(HEADER_FIELDS[1:], header_values(party, meta)[1:], strict=True):
            header.append([label, _text(header, value)])
        self._omitted = details_omitted
        if details_omitted is not None:
            header.append(
                [
                    "details",
                    f"omitted: {details_omitted} detail lines exceed this workbook's limit of "
                    f"{detail_limit if detail_limit is not None else 'its limit'}; "
                    "every line is in statement.csv",
                ]
            )
        self._sheet: Any = None
        self._sheet_rows = 0
        self._sheets = 0

    def _money(self, ws: Any, minor: int) -> Any:
        if abs(minor) >= EXCEL_EXACT:
            return format_minor(minor, self._meta.currency)
        cell = WriteOnlyCell(ws, Decimal(minor).scaleb(-self._exp))
        cell.number_format = self._money_format
        return cell

    def write_row(self, row: DetailRow) -> None:
        """Append one detail row, opening the next Details sheet when one is full."""
        if self._sheet is None or self._sheet_rows >= self._max_rows:
            self._sheets += 1
            title = "Details" if self._sheets == 1 else f"Details {self._sheets}"
            self._sheet = self._wb.create_sheet(title)
            self._sheet.append(list(DETAIL_FIELDS[1:]))
            self._sheet_rows = 1
        ws = self._sheet
        net = row.gross + row.fee
        ws.append(
            [
                row.line_no,
                row.reference,
                row.original_reference or "",
                row.event_type,
                _text(ws, row.counterparty),
                _text(ws, row.program or ""),
                _count(row.points),
                row.point_value if row.point_value is not None else "",
                row.point_value_version if row.point_value_version is not None else "",
                self._money(ws, row.gross),
                self._money(ws, row.fee),
                self._money(ws, net),
                "C" if net >= 0 else "D",
                utc_text(row.booked_at),
            ]
        )
        self._sheet_rows += 1

    def discard(self) -> None:
        """Close and delete the sheets' temp files when the statement is abandoned."""
        for ws in self._wb.worksheets:
            # openpyxl has no public way to drop a write-only sheet; without this its row
            # generator and temp file linger until garbage collection.
            if not ws.closed:
                ws.close()
            writer = getattr(ws, "_writer", None)
            if writer is not None:
                with contextlib.suppress(OSError, KeyError):
                    writer.cleanup()

    def finish(self, totals: StatementTotals, csv_body_sha256: str, path: Path) -> None:
        """Write summary and trailer sheets and save the workbook to `path`."""
        if self._sheet is None and self._omitted is None:
            self._sheet = self._wb.create_sheet("Details")
            self._sheet.append(list(DETAIL_FIELDS[1:]))
        summary = self._wb.create_sheet("Summary")
        summary.append(list(SUMMARY_FIELDS[1:]))
        rows = totals.sorted_summary()
        for counterparty, s in rows:
            summary.append(
                [
                    _text(summary, counterparty),
                    self._money(summary, s.gross_payable),
                    self._money(summary, s.gross_receivable),
                    self._money(summary, s.fees),
                    self._money(summary, s.net),
                    _count(s.count),
                ]
            )
        trailer = self._wb.create_sheet("Trailer")
        values: list[Any] = [
            _count(totals.count),
            len(rows),
            self._money(trailer, totals.debits),
            self._money(trailer, totals.credits),
            self._money(trailer, totals.net),
            _count(totals.points),
            csv_body_sha256,
            0 if self._omitted is not None else totals.count,
        ]
        for label, value in zip(TRAILER_LABELS, values, strict=True):
            trailer.append([label, value])
        day: date = self._meta.settlement_date
        with _FixedTimeZip(path, (max(day.year, 1980), day.month, day.day, 0, 0, 0)) as archive:
            # Workbook.save would stamp properties.modified with the wall clock.
            ExcelWriter(self._wb, archive).save()


def csv_body_sha256(path: Path) -> str:
    """The body hash a CSV statement's trailer states (its last field)."""
    with open(path, encoding="utf-8", newline="") as text:
        *_, trailer = csv.reader(text)
    return trailer[-1]


def write_reference_xlsx(
    csv_path: Path,
    out: Path,
    party: Party,
    meta: StatementMeta,
    totals: StatementTotals,
    *,
    max_rows_per_sheet: int = EXCEL_MAX_ROWS,
    detail_limit: int = 10_000,
) -> None:
    """The workbook the openpyxl writer made of a written CSV statement, by the same policy."""
    omitted = totals.count if totals.count > detail_limit else None
    writer = OpenpyxlStatementWriter(
        party,
        meta,
        max_rows_per_sheet=max_rows_per_sheet,
        details_omitted=omitted,
        detail_limit=detail_limit,
    )
    if omitted is None:
        for row in csv_detail_rows(csv_path, meta.currency):
            writer.write_row(row)
    writer.finish(totals, csv_body_sha256(csv_path), out)


Cells = dict[str, list[list[tuple[object, str, str]]]]


def read_back(path: Path) -> Cells:
    """Every cell of every sheet as openpyxl reads it: value, number format, data type."""
    from openpyxl import load_workbook

    workbook = load_workbook(path)
    try:
        return {
            sheet.title: [
                [(cell.value, cell.number_format, cell.data_type) for cell in row]
                for row in sheet.iter_rows()
            ]
            for sheet in workbook.worksheets
        }
    finally:
        workbook.close()

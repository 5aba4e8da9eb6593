"""The XLSX settlement statement: the CSV layout in sheets, streamed as SpreadsheetML of our own.

A minimal OOXML package (content types, relationships, workbook, styles, core properties and
one worksheet per sheet with inline strings), the sheet XML built per chunk of rows from the
CSV's exact texts and streamed into its zip member: memory stays bounded by a chunk, and the
same input gives the same bytes (fixed entry times, fixed compression level).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Sequence
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import IO

from clearing.core.money import exponent, format_minor
from settlement.lines import Party
from settlement.statement import StatementMeta, StatementTotals
from settlement.statement_csv import DETAIL_FIELDS, HEADER_FIELDS, SUMMARY_FIELDS, header_values
from settlement.statement_csv import DetailTexts as DetailTexts

EXCEL_MAX_ROWS = 1_048_576
EXCEL_EXACT = 10**15
"""Numbers of this magnitude and above are written as exact text: Excel keeps 15 significant
digits, so a day's totals would be rounded."""
TRAILER_LABELS = (
    "detail_count",
    "summary_count",
    "total_debits",
    "total_credits",
    "net",
    "points_total",
    "csv_body_sha256",
    "details_in_workbook",
)
COMPRESS_LEVEL = 1
"""zlib level of every member: the bytes depend on it, so it is fixed; level 1 compresses the
repetitive sheet XML about as well as the default at a fraction of the time."""
CREATOR = "points-clearing settlement"

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_SHEET_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
_SHEET_HEAD = (
    f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="{_MAIN}">'
    "<sheetData>"
)
_SHEET_TAIL = "</sheetData></worksheet>"
_COLUMNS = "ABCDEFGHIJKLMN"
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_BUILTIN_FORMATS = {"0": 1, "0.00": 2}
"""SpreadsheetML's built-in number formats: ids 1 and 2 need no numFmt of their own."""
_CUSTOM_FORMAT = 164
_EMPTY_TEXT = ' t="inlineStr"/>'

Fragment = Callable[[str], str]
"""One cell's XML after `<c r="X9"`: its type, style and value, closed."""


class XlsxTextError(ValueError):
    """A text holds a character XML 1.0 cannot carry (a control character)."""


def _escape(value: str) -> str:
    if _ILLEGAL.search(value):
        raise XlsxTextError(f"text {value!r} holds a character an XLSX cell cannot carry")
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _text_cell(value: str) -> str:
    if not value:
        return _EMPTY_TEXT
    # Leading or trailing blanks are kept only with xml:space="preserve". An inline string is
    # never a formula, so text starting with "=" stays data.
    space = ' xml:space="preserve"' if value[0].isspace() or value[-1].isspace() else ""
    return f' t="inlineStr"><is><t{space}>{_escape(value)}</t></is></c>'


def _number_cell(value: str) -> str:
    return f"><v>{value}</v></c>" if value else _EMPTY_TEXT


def _digits(text: str) -> int:
    return len(text) - text.startswith("-") - ("." in text)


def _count_cell(value: str) -> str:
    # Points and counts follow the same rule as money (EXCEL_EXACT).
    if _digits(value) > 15:
        return _text_cell(value)
    return _number_cell(value)


def _point_value_cell(value: str) -> str:
    # The same 16 significant digits a Decimal got from openpyxl ("%.16g"): one number per rate.
    return _number_cell(format(float(Decimal(value)), ".16g")) if value else _EMPTY_TEXT


def _money_cell(value: str) -> str:
    """A money text of the CSV (format_minor) as a styled number, or as text from EXCEL_EXACT."""
    if _digits(value) > 15:
        return _text_cell(value)
    # The CSV's exact decimal text is a valid number as it stands (trailing zeros included).
    return f' s="1"><v>{value}</v></c>'


def _money_cells(values: Sequence[str]) -> list[str]:
    """_money_cell of a column of money texts."""
    # Texts of at most 15 characters hold at most 15 digits: the common case, in one pass.
    if values and max(map(len, values)) <= 15:
        return [f' s="1"><v>{v}</v></c>' for v in values]
    return [_money_cell(v) for v in values]


def _by_value(values: Sequence[str], render: Fragment) -> list[str]:
    """render() once per distinct value, spread back to every row."""
    lookup = {v: render(v) for v in dict.fromkeys(values)}
    return list(map(lookup.__getitem__, values))


def _texts(values: Sequence[str]) -> list[str]:
    """Text cells of a column of mostly distinct values (references, instants)."""
    joined = "".join(values)
    if not values or _ILLEGAL.search(joined) or any(c in joined for c in "&<> \t\r\n"):
        return [_text_cell(v) for v in values]
    if all(values):
        return [f' t="inlineStr"><is><t>{v}</t></is></c>' for v in values]
    return [f' t="inlineStr"><is><t>{v}</t></is></c>' if v else _EMPTY_TEXT for v in values]


def _row_template(width: int) -> str:
    cells = "".join(f'<c r="{_COLUMNS[i]}{{0}}"{{{i + 1}}}' for i in range(width))
    return f'<row r="{{0}}">{cells}</row>'


_DETAIL_ROW = _row_template(len(DETAIL_FIELDS) - 1).format
_ROW_FORMATS = {n: _row_template(n).format for n in range(1, 7)}


def _member(name: str, stamp: tuple[int, int, int, int, int, int]) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=stamp)
    info.compress_type = zipfile.ZIP_DEFLATED
    # ZipFile.open takes the level from the entry, not from the archive.
    info._compresslevel = COMPRESS_LEVEL  # type: ignore[attr-defined]
    info.external_attr = 0o644 << 16
    return info


class XlsxStatementWriter:
    """Streams one XLSX statement into `path`, splitting details across sheets."""

    def __init__(
        self,
        path: Path,
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
        self._path = path
        self._max_rows = max_rows_per_sheet
        self._omitted = details_omitted
        day = meta.settlement_date
        self._stamp = (max(day.year, 1980), day.month, day.day, 0, 0, 0)
        self._titles: list[str] = []
        self._sheet: IO[bytes] | None = None
        self._sheet_rows = 0
        self._zip = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
        try:
            rows = [
                [label, _text_cell(value)]
                for label, value in zip(
                    HEADER_FIELDS[1:], header_values(party, meta)[1:], strict=True
                )
            ]
            if details_omitted is not None:
                limit = detail_limit if detail_limit is not None else "its limit"
                note = (
                    f"omitted: {details_omitted} detail lines exceed this workbook's limit of "
                    f"{limit}; every line is in statement.csv"
                )
                rows.append(["details", _text_cell(note)])
            self._small_sheet("Header", rows)
        except BaseException:
            self.discard()
            raise

    def _open_sheet(self, title: str) -> IO[bytes]:
        self._titles.append(title)
        name = f"xl/worksheets/sheet{len(self._titles)}.xml"
        sheet = self._zip.open(_member(name, self._stamp), "w", force_zip64=True)
        sheet.write(_SHEET_HEAD.encode())
        return sheet

    def _small_sheet(self, title: str, rows: list[list[str]]) -> None:
        """A sheet of a few rows; each row's first cell is a label, the others fragments."""
        sheet = self._open_sheet(title)
        body = []
        for n, (label, *cells) in enumerate(rows, start=1):
            body.append(_ROW_FORMATS[len(cells) + 1](n, _text_cell(label), *cells))
        sheet.write("".join(body).encode())
        sheet.write(_SHEET_TAIL.encode())
        sheet.close()

    def _next_details_sheet(self) -> IO[bytes]:
        self._close_details()
        count = sum(1 for t in self._titles if t.startswith("Details"))
        sheet = self._open_sheet("Details" if count == 0 else f"Details {count + 1}")
        names = [_text_cell(f) for f in DETAIL_FIELDS[1:]]
        sheet.write(_DETAIL_ROW(1, *names).encode())
        self._sheet = sheet
        self._sheet_rows = 1
        return sheet

    def _close_details(self) -> None:
        if self._sheet is not None:
            self._sheet.write(_SHEET_TAIL.encode())
            self._sheet.close()
            self._sheet = None

    def write_details(self, chunk: DetailTexts) -> None:
        """Append a chunk of detail rows (the CSV's texts), opening Details sheets as they fill."""
        size = len(chunk.line_no)
        if size == 0:
            return
        columns = [
            [f"><v>{v}</v></c>" for v in chunk.line_no],
            _texts(chunk.reference),
            _texts(chunk.original_reference),
            _by_value(chunk.event_type, _text_cell),
            _by_value(chunk.counterparty, _text_cell),
            _by_value(chunk.program, _text_cell),
            _by_value(chunk.points, _count_cell),
            _by_value(chunk.point_value, _point_value_cell),
            _by_value(chunk.point_value_version, _number_cell),
            _money_cells(chunk.gross),
            _money_cells(chunk.fee),
            _money_cells(chunk.net),
            _by_value(chunk.dc, _text_cell),
            _texts(chunk.booked_at),
        ]
        at = 0
        while at < size:
            if self._sheet is None or self._sheet_rows >= self._max_rows:
                self._next_details_sheet()
            assert self._sheet is not None
            take = min(size - at, self._max_rows - self._sheet_rows)
            first = self._sheet_rows + 1
            rows = map(
                _DETAIL_ROW,
                map(str, range(first, first + take)),
                *(column[at : at + take] for column in columns),
            )
            self._sheet.write("".join(rows).encode("utf-8"))
            self._sheet_rows += take
            at += take

    def _money(self, minor: int) -> str:
        return _money_cell(format_minor(minor, self._meta.currency))

    def discard(self) -> None:
        """Close and delete the partial file when the statement is abandoned."""
        try:
            if self._sheet is not None:
                self._sheet.close()
                self._sheet = None
            self._zip.close()
        finally:
            self._path.unlink(missing_ok=True)

    def finish(self, totals: StatementTotals, csv_body_sha256: str) -> None:
        """Write the summary and trailer sheets and the package parts, and close the file."""
        try:
            self._finish(totals, csv_body_sha256)
        except BaseException:
            self.discard()
            raise

    def _finish(self, totals: StatementTotals, csv_body_sha256: str) -> None:
        if self._sheet is None and self._omitted is None and len(self._titles) == 1:
            self._next_details_sheet()
        self._close_details()
        summary = totals.sorted_summary()
        rows: list[list[str]] = [list(SUMMARY_FIELDS[1:])]
        rows[0] = [rows[0][0], *(_text_cell(f) for f in rows[0][1:])]
        for counterparty, s in summary:
            rows.append(
                [
                    counterparty,
                    self._money(s.gross_payable),
                    self._money(s.gross_receivable),
                    self._money(s.fees),
                    self._money(s.net),
                    _count_cell(str(s.count)),
                ]
            )
        self._small_sheet("Summary", rows)
        values = [
            _count_cell(str(totals.count)),
            _number_cell(str(len(summary))),
            self._money(totals.debits),
            self._money(totals.credits),
            self._money(totals.net),
            _count_cell(str(totals.points)),
            _text_cell(csv_body_sha256),
            _number_cell("0" if self._omitted is not None else str(totals.count)),
        ]
        self._small_sheet(
            "Trailer", [[label, v] for label, v in zip(TRAILER_LABELS, values, strict=True)]
        )
        for name, text in self._package_parts():
            with self._zip.open(_member(name, self._stamp), "w", force_zip64=True) as part:
                part.write(text.encode("utf-8"))
        self._zip.close()

    def _package_parts(self) -> list[tuple[str, str]]:
        decl = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        count = len(self._titles)
        sheet_types = "".join(
            f'<Override PartName="/xl/worksheets/sheet{n}.xml" ContentType="{_SHEET_TYPE}"/>'
            for n in range(1, count + 1)
        )
        office = "application/vnd.openxmlformats-officedocument"
        content_types = (
            f"{decl}<Types "
            'xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" '
            'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            f'ContentType="{office}.spreadsheetml.sheet.main+xml"/>'
            f'<Override PartName="/xl/styles.xml" ContentType="{office}.spreadsheetml.styles+xml"/>'
            '<Override PartName="/docProps/core.xml" '
            'ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
            f"{sheet_types}</Types>"
        )
        root_rels = (
            f'{decl}<Relationships xmlns="{_PKG_REL}">'
            f'<Relationship Id="rId1" Type="{_REL}/officeDocument" Target="xl/workbook.xml"/>'
            '<Relationship Id="rId2" '
            f'Type="{_PKG_REL}/metadata/core-properties" Target="docProps/core.xml"/>'
            "</Relationships>"
        )
        sheets = "".join(
            f'<sheet name="{_escape(title)}" sheetId="{n}" r:id="rId{n}"/>'
            for n, title in enumerate(self._titles, start=1)
        )
        workbook = (
            f'{decl}<workbook xmlns="{_MAIN}" xmlns:r="{_REL}">'
            f"<bookViews><workbookView/></bookViews><sheets>{sheets}</sheets></workbook>"
        )
        workbook_rels = (
            f'{decl}<Relationships xmlns="{_PKG_REL}">'
            + "".join(
                f'<Relationship Id="rId{n}" Type="{_REL}/worksheet" '
                f'Target="worksheets/sheet{n}.xml"/>'
                for n in range(1, count + 1)
            )
            + f'<Relationship Id="rId{count + 1}" Type="{_REL}/styles" Target="styles.xml"/>'
            "</Relationships>"
        )
        format_id = _BUILTIN_FORMATS.get(self._money_format, _CUSTOM_FORMAT)
        formats = (
            ""
            if format_id != _CUSTOM_FORMAT
            else f'<numFmts count="1"><numFmt numFmtId="{_CUSTOM_FORMAT}" '
            f'formatCode="{self._money_format}"/></numFmts>'
        )
        styles = (
            f'{decl}<styleSheet xmlns="{_MAIN}">{formats}'
            '<fonts count="1"><font><sz val="11"/><name val="Calibri"/><family val="2"/></font>'
            "</fonts>"
            '<fills count="2"><fill><patternFill patternType="none"/></fill>'
            '<fill><patternFill patternType="gray125"/></fill></fills>'
            '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border>'
            "</borders>"
            '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/>'
            "</cellStyleXfs>"
            '<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
            f'<xf numFmtId="{format_id}" fontId="0" fillId="0" borderId="0" xfId="0" '
            'applyNumberFormat="1"/></cellXfs>'
            '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/>'
            "</cellStyles></styleSheet>"
        )
        moment = self._meta.generated_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        core = (
            f"{decl}<cp:coreProperties "
            'xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:dcterms="http://purl.org/dc/terms/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            f"<dc:creator>{CREATOR}</dc:creator>"
            f'<dcterms:created xsi:type="dcterms:W3CDTF">{moment}</dcterms:created>'
            f'<dcterms:modified xsi:type="dcterms:W3CDTF">{moment}</dcterms:modified>'
            "</cp:coreProperties>"
        )
        return [
            ("xl/styles.xml", styles),
            ("xl/workbook.xml", workbook),
            ("xl/_rels/workbook.xml.rels", workbook_rels),
            ("docProps/core.xml", core),
            ("_rels/.rels", root_rels),
            ("[Content_Types].xml", content_types),
        ]

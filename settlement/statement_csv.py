"""The CSV settlement statement (layout in FILES.md), written streaming with its control totals."""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import datetime
from typing import BinaryIO
from zoneinfo import ZoneInfo

from settlement.currencies import exponent, format_minor
from settlement.lines import Party
from settlement.statement import (
    DetailRow,
    StatementMeta,
    StatementTotals,
    decimal_text,
    statement_file_id,
    utc_text,
)

LAYOUT = "PCS-STATEMENT-1"
HEADER_FIELDS = (
    "record",
    "layout",
    "file_id",
    "sequence",
    "previous_file_id",
    "batch_id",
    "settlement_date",
    "window_start",
    "window_end",
    "zone",
    "party_id",
    "party_name",
    "party_kind",
    "currency",
    "generated_at",
)
DETAIL_FIELDS = (
    "record",
    "line_no",
    "reference",
    "original_reference",
    "event_type",
    "counterparty",
    "program",
    "points",
    "point_value",
    "point_value_version",
    "gross",
    "fee",
    "net",
    "dc",
    "booked_at",
)
SUMMARY_FIELDS = (
    "record",
    "counterparty",
    "gross_payable",
    "gross_receivable",
    "fees",
    "net",
    "detail_count",
)
TRAILER_FIELDS = (
    "record",
    "detail_count",
    "summary_count",
    "total_debits",
    "total_credits",
    "net",
    "points_total",
    "body_sha256",
)
_FLUSH_ROWS = 4096


def window_text(moment: datetime, zone: str) -> str:
    """ISO 8601 text of a window bound at the business day's local offset."""
    return moment.astimezone(ZoneInfo(zone)).isoformat()


def header_values(party: Party, meta: StatementMeta) -> list[str]:
    """Values of the header record, shared with the XLSX layout."""
    return [
        "H",
        LAYOUT,
        statement_file_id(meta, party.id),
        str(meta.sequence),
        meta.previous_file_id or "",
        meta.batch_id,
        meta.settlement_date.isoformat(),
        window_text(meta.window_start, meta.zone),
        window_text(meta.window_end, meta.zone),
        meta.zone,
        party.id,
        party.name,
        party.kind,
        meta.currency,
        utc_text(meta.generated_at),
    ]


class CsvStatementWriter:
    """Writes one CSV statement to a binary handle, hashing the body as it goes."""

    def __init__(self, sink: BinaryIO, party: Party, meta: StatementMeta) -> None:
        exponent(meta.currency)
        self._sink = sink
        self._currency = meta.currency
        self._hash = hashlib.sha256()
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer, lineterminator="\r\n")
        self._pending = 0
        self._last_booked: datetime | None = None
        self._last_booked_text = ""
        self._csv.writerow(header_values(party, meta))

    def _flush(self) -> None:
        data = self._buffer.getvalue().encode("utf-8")
        self._hash.update(data)
        self._sink.write(data)
        self._buffer.seek(0)
        self._buffer.truncate()
        self._pending = 0

    def write_row(self, row: DetailRow) -> None:
        """Append one detail record."""
        cur = self._currency
        net = row.gross + row.fee
        if row.booked_at != self._last_booked:
            self._last_booked = row.booked_at
            self._last_booked_text = utc_text(row.booked_at)
        self._csv.writerow(
            (
                "D",
                row.line_no,
                row.reference,
                row.original_reference or "",
                row.event_type,
                row.counterparty,
                row.program or "",
                row.points,
                decimal_text(row.point_value),
                "" if row.point_value_version is None else row.point_value_version,
                format_minor(row.gross, cur),
                format_minor(row.fee, cur),
                format_minor(net, cur),
                "C" if net >= 0 else "D",
                self._last_booked_text,
            )
        )
        self._pending += 1
        if self._pending >= _FLUSH_ROWS:
            self._flush()

    def finish(self, totals: StatementTotals) -> str:
        """Write summary and trailer records; returns the body SHA-256 written in the trailer."""
        cur = self._currency
        summary = totals.sorted_summary()
        for counterparty, s in summary:
            self._csv.writerow(
                (
                    "S",
                    counterparty,
                    format_minor(s.gross_payable, cur),
                    format_minor(s.gross_receivable, cur),
                    format_minor(s.fees, cur),
                    format_minor(s.net, cur),
                    s.count,
                )
            )
        self._flush()
        body_sha = self._hash.hexdigest()
        self._csv.writerow(
            (
                "T",
                totals.count,
                len(summary),
                format_minor(totals.debits, cur),
                format_minor(totals.credits, cur),
                format_minor(totals.net, cur),
                totals.points,
                body_sha,
            )
        )
        self._sink.write(self._buffer.getvalue().encode("utf-8"))
        self._buffer.seek(0)
        self._buffer.truncate()
        return body_sha

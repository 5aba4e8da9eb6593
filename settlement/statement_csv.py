"""The CSV settlement statement (layout in FILES.md), written streaming with its control totals."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator, Sequence
from datetime import datetime
from itertools import islice, repeat
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from clearing.core.money import exponent, format_minor
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
_SPECIAL = (",", '"', "\r", "\n")
_STR = np.dtypes.StringDType()


def _quote(value: str) -> str:
    # RFC 4180 as csv.writer writes it (QUOTE_MINIMAL): only fields that need it.
    if value and any(c in value for c in _SPECIAL):
        return '"' + value.replace('"', '""') + '"'
    return value


def _quoted(values: Any) -> list[str]:
    texts: list[str] = values.tolist() if hasattr(values, "tolist") else list(values)
    joined = "".join(texts)
    if any(c in joined for c in _SPECIAL):
        return [_quote(t) for t in texts]
    return texts


def _by_value(values: Any, render: Any) -> list[str]:
    """render() applied once per distinct value, spread back to every row."""
    codes, uniques = pd.factorize(values)
    texts = np.array([render(u) for u in uniques.tolist()] or [""], dtype=object)
    result: list[str] = texts[codes].tolist()
    return result


def _by_combination(columns: Sequence[Any], render: Any) -> list[str]:
    """render(*values) once per distinct combination of `columns`, spread back to every row."""
    key = np.zeros(len(columns[0]), dtype=np.int64)
    for column in columns:
        codes, uniques = pd.factorize(column)
        key = key * max(len(uniques), 1) + codes
        key, _ = pd.factorize(key)
        key = key.astype(np.int64, copy=False)
    codes, firsts = np.unique(key, return_index=True)
    lookup = np.empty(len(codes) or 1, dtype=object)
    for code, at in zip(codes.tolist(), firsts.tolist(), strict=True):
        lookup[code] = render(*(column[at] for column in columns))
    result: list[str] = lookup[key].tolist()
    return result


def money_texts(values: Any, currency: str, *, with_dc: bool = False) -> list[str]:
    """format_minor of every value (optionally followed by ",C"/",D"), exact, vectorised."""
    exp = exponent(currency)
    codes, uniques = pd.factorize(values)
    if values.dtype != np.int64 or len(uniques) == 0:
        texts = [format_minor(int(v), currency) for v in uniques.tolist()]
        if with_dc:
            texts = [
                f"{t},{'C' if v >= 0 else 'D'}"
                for t, v in zip(texts, uniques.tolist(), strict=True)
            ]
        return np.array(texts or [""], dtype=object)[codes].tolist()  # type: ignore[no-any-return]
    u = np.asarray(uniques, dtype=np.int64)
    negative = u < 0
    magnitude = np.abs(u).astype(np.uint64)  # |int64 min| fits in uint64
    text = magnitude.astype(_STR)
    if exp:
        text = np.strings.zfill(text, exp + 1)
        size = np.strings.str_len(text)
        text = np.strings.add(
            np.strings.add(np.strings.slice(text, 0, size - exp), "."),
            np.strings.slice(text, size - exp, size),
        )
    text = np.strings.add(np.where(negative, "-", "").astype(_STR), text)
    if with_dc:
        text = np.strings.add(text, np.where(u >= 0, ",C", ",D").astype(_STR))
    return text.astype(object)[codes].tolist()  # type: ignore[no-any-return]


def utc_texts(micros: Any) -> list[str]:
    """ISO 8601 UTC text with microseconds and Z of int64 microseconds since the epoch."""
    codes, uniques = pd.factorize(micros)
    texts = np.char.add(
        np.datetime_as_string(
            np.asarray(uniques, dtype=np.int64).astype("datetime64[us]"), unit="us"
        ),
        "Z",
    ).astype(object)
    result: list[str] = texts[codes].tolist() if len(texts) else []
    return result


def detail_records(details: pd.DataFrame, currency: str) -> list[str]:
    """The D records of a detail frame (settlement.statement.DETAIL_COLUMNS), without CRLF."""
    if len(details) == 0:
        return []
    exponent(currency)
    gross = details["gross"].to_numpy()
    fee = details["fee"].to_numpy()
    net = gross + fee

    middle = _by_combination(
        [details[c].to_numpy() for c in ("event_type", "counterparty", "program")],
        lambda e, c, p: f"{_quote(str(e))},{_quote(str(c))},{_quote(str(p))}",
    )
    value = _by_combination(
        [details[c].to_numpy() for c in ("point_value", "point_value_version")],
        lambda v, n: f"{_quote(str(v))},{_quote(str(n))}",
    )
    return list(
        map(
            ",".join,
            zip(
                repeat("D"),
                map(str, details["line_no"].tolist()),
                _quoted(details["reference"].to_numpy()),
                _quoted(details["original_reference"].to_numpy()),
                middle,
                _by_value(details["points"].to_numpy(), str),
                value,
                money_texts(gross, currency),
                money_texts(fee, currency),
                money_texts(net, currency, with_dc=True),
                utc_texts(details["booked_at"].to_numpy()),
            ),
        )
    )


class DetailTexts(NamedTuple):
    """A chunk of D records as the CSV holds them: one column of exact texts per field."""

    line_no: Sequence[str]
    reference: Sequence[str]
    original_reference: Sequence[str]
    event_type: Sequence[str]
    counterparty: Sequence[str]
    program: Sequence[str]
    points: Sequence[str]
    point_value: Sequence[str]
    point_value_version: Sequence[str]
    gross: Sequence[str]
    fee: Sequence[str]
    net: Sequence[str]
    dc: Sequence[str]
    booked_at: Sequence[str]


DETAIL_CHUNK = 16_384


def csv_detail_chunks(path: Path, size: int = DETAIL_CHUNK) -> Iterator[DetailTexts]:
    """The D records of a written CSV statement, in chunks of columns of their texts.

    No field is parsed: the CSV holds the exact text of every figure, which is what the XLSX
    and camt.053 writers print."""
    with open(path, encoding="utf-8", newline="") as text:
        records = csv.reader(text)
        next(records, None)  # H
        while True:
            rows = list(islice(records, size))
            if not rows:
                return
            end = len(rows)
            if rows[-1][0] != "D":
                # D records run until the first S or T, which ends them.
                end = next(i for i, rec in enumerate(rows) if rec[0] != "D")
            if end:
                yield DetailTexts(*list(zip(*rows[:end], strict=True))[1:])
            if end < len(rows):
                return


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
        self.file_hash = hashlib.sha256()
        """SHA-256 of every byte written, trailer included: the manifest's hash of the file."""
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer, lineterminator="\r\n")
        self._pending = 0
        self._last_booked: datetime | None = None
        self._last_booked_text = ""
        self._csv.writerow(header_values(party, meta))

    def _flush(self) -> None:
        data = self._buffer.getvalue().encode("utf-8")
        self._hash.update(data)
        self.file_hash.update(data)
        self._sink.write(data)
        self._buffer.seek(0)
        self._buffer.truncate()
        self._pending = 0

    def write_records(self, records: list[str]) -> None:
        """Append D records made by `detail_records`, in order."""
        if not records:
            return
        if self._buffer.tell():
            self._flush()
        records.append("")
        data = "\r\n".join(records).encode("utf-8")
        records.pop()
        self._hash.update(data)
        self.file_hash.update(data)
        self._sink.write(data)

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
        tail = self._buffer.getvalue().encode("utf-8")
        self.file_hash.update(tail)
        self._sink.write(tail)
        self._buffer.seek(0)
        self._buffer.truncate()
        return body_sha

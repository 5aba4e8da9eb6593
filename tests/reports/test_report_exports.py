"""Each export reads back (csv, openpyxl, pyarrow, pandas) as the table it was made from, typed."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from decimal import Decimal

import openpyxl
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine

from clearing.core.db import transaction
from reports.catalogue import REPORTS
from reports.exports import (
    EXPORTS,
    csv_chunks,
    export_bytes,
    export_filename,
    export_header,
    write_parquet,
)
from reports.query import Column, ColumnKind, ReportQuery, ReportTable
from tests.reports.flow_world import DAY1, DAY2, book_flows

K = ColumnKind


def sample() -> ReportTable:
    """Every kind of column, two currencies of different digits, a negative and a missing value."""
    return ReportTable(
        "sample",
        (
            Column("business_date", K.DATE),
            Column("party", K.TEXT),
            Column("currency", K.TEXT),
            Column("points", K.POINTS),
            Column("net", K.MONEY),
            Column("count", K.COUNT),
            Column("point_value", K.RATE),
        ),
        [
            (date(2026, 11, 20), 'Bank A, "quoted"', "CNY", 10_000, 12_345, 3, Decimal("0.005")),
            (date(2026, 11, 21), "商户", "JPY", -5, -1_234, 1, Decimal("0.000000123456")),
            (date(2026, 11, 22), "Zero", "CNY", 0, -7, 0, None),
        ],
    )


def test_csv_reads_back_with_minor_units_and_their_decimal_twins() -> None:
    table = sample()
    data = export_bytes(table, "csv")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert rows[0] == [
        "business_date", "party", "currency", "points", "net", "net_decimal", "count",
        "point_value",
    ]  # fmt: skip
    assert rows[1] == ["2026-11-20", 'Bank A, "quoted"', "CNY", "10000", "12345", "123.45", "3",
                       "0.005"]  # fmt: skip
    assert rows[2] == ["2026-11-21", "商户", "JPY", "-5", "-1234", "-1234", "1", "0.000000123456"]
    assert rows[3] == ["2026-11-22", "Zero", "CNY", "0", "-7", "-0.07", "0", ""]
    frame = pd.read_csv(io.BytesIO(data), dtype={"point_value": str, "net_decimal": str})
    assert frame["net"].tolist() == [r[4] for r in table.rows]
    assert [Decimal(v) for v in frame["net_decimal"]] == [
        Decimal("123.45"), Decimal("-1234"), Decimal("-0.07"),
    ]  # fmt: skip
    # chunked, the bytes are the same
    assert b"".join(csv_chunks(table, rows_per_chunk=1)) == data


def test_xlsx_cells_are_typed() -> None:
    table = sample()
    book = openpyxl.load_workbook(io.BytesIO(export_bytes(table, "xlsx")))
    sheet = book["sample"]
    values = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert list(values[0]) == export_header(table)
    first = values[1]
    assert isinstance(first[0], datetime)
    assert first[0].date() == date(2026, 11, 20)
    # numbers are numbers: Excel holds them as doubles, exact at these sizes
    assert first[1:8] == ['Bank A, "quoted"', "CNY", 10_000, 12_345, 123.45, 3, 0.005]
    assert isinstance(first[3], int)
    assert values[2][4:6] == [-1_234, -1_234]
    assert values[3][7] is None
    assert sheet.cell(row=2, column=1).number_format == "yyyy-mm-dd"
    assert sheet.cell(row=2, column=6).number_format == "0.00"
    assert sheet.cell(row=3, column=6).number_format == "0"


def test_parquet_columns_are_typed_and_exact() -> None:
    table = sample()
    read = pq.read_table(io.BytesIO(export_bytes(table, "parquet")))
    assert read.schema.field("business_date").type == pa.date32()
    assert read.schema.field("party").type == pa.string()
    assert read.schema.field("net").type == pa.int64()
    assert read.schema.field("count").type == pa.int64()
    assert read.schema.field("point_value").type == pa.decimal128(38, 12)
    assert read.column_names == [c.name for c in table.columns]
    assert [tuple(r.values()) for r in read.to_pylist()] == table.rows
    frame = pd.read_parquet(io.BytesIO(export_bytes(table, "parquet")))
    assert frame["points"].dtype == "int64"


def test_parquet_in_row_groups() -> None:
    table = sample()
    buffer = io.BytesIO()
    write_parquet(table, buffer, rows_per_group=2)
    meta = pq.ParquetFile(io.BytesIO(buffer.getvalue())).metadata
    assert meta.num_row_groups == 2
    assert meta.num_rows == 3


@pytest.mark.parametrize("fmt", sorted(EXPORTS))
def test_an_empty_report_exports_its_header(fmt: str) -> None:
    empty = ReportTable("empty", sample().columns, [])
    data = export_bytes(empty, fmt)
    if fmt == "csv":
        assert data.decode().splitlines() == [",".join(export_header(empty))]
    elif fmt == "xlsx":
        sheet = openpyxl.load_workbook(io.BytesIO(data))["empty"]
        assert [list(r) for r in sheet.iter_rows(values_only=True)] == [export_header(empty)]
    else:
        read = pq.read_table(io.BytesIO(data))
        assert read.num_rows == 0
        assert read.column_names == [c.name for c in empty.columns]


def test_a_real_report_round_trips_through_every_format(engine: Engine) -> None:
    book_flows(engine)
    with transaction(engine) as session:
        table = REPORTS["checkout_volume"].run(session, ReportQuery(DAY1, DAY2, None))
    assert table.rows
    read = pq.read_table(io.BytesIO(export_bytes(table, "parquet")))
    assert [tuple(r.values()) for r in read.to_pylist()] == table.rows
    frame = pd.read_csv(io.BytesIO(export_bytes(table, "csv")), dtype={"merchant_id": str})
    assert frame["net"].tolist() == [r[12] for r in table.rows]
    assert frame["business_date"].tolist() == [r[0].isoformat() for r in table.rows]
    sheet = openpyxl.load_workbook(io.BytesIO(export_bytes(table, "xlsx")))["checkout_volume"]
    cells = list(sheet.iter_rows(min_row=2, values_only=True))
    assert [(c[0].date(), c[1]) for c in cells] == [(r[0], r[1]) for r in table.rows]
    assert export_filename(table, DAY1, DAY2, "xlsx") == (
        "checkout_volume_2026-11-20_2026-11-21.xlsx"
    )

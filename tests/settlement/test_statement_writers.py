"""Our XLSX writer reads back as openpyxl's did; camt.053 per chunk is write_row's bytes."""

from __future__ import annotations

import dataclasses
import io
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from python_calamine import CalamineWorkbook

from clearing.core.money import MAX_AMOUNT
from settlement.camt053 import Camt053Writer, CamtAmountTooLarge
from settlement.files import CAMT_NAME, CSV_NAME, XLSX_NAME, PartyFiles, write_party_files
from settlement.lines import ObligationLine
from settlement.statement_csv import csv_detail_chunks
from settlement.statement_xlsx import XlsxStatementWriter, XlsxTextError
from settlement.verify import verify_directory
from tests.settlement.settlement_factories import PLATFORM, days, line, meta, orgs_of, party
from tests.settlement.xlsx_reference import csv_detail_rows, read_back, write_reference_xlsx

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = KEY.public_key()


def awkward_day(currency: str) -> list[ObligationLine]:
    """Every kind of cell: formula-like, escaped and blank-edged text, fees and none, refunds,
    lines without points, amounts either side of EXCEL_EXACT, a rate of many digits."""
    lines: list[ObligationLine] = []
    payers = ["bank-a", "=shop-y", "a&b <c>", " padded ", "bank-a"]
    amounts = [1, 10, 12_345, MAX_AMOUNT, 10**14, 999, MAX_AMOUNT - 1, 250_000, 7, 100]
    for n, amount in enumerate(amounts):
        ref = f"{n:032x}" if n % 3 else "r&<" + "x" * 40  # longer than camt's Max35Text
        points = None if n % 4 == 0 else (10**15 + n if n == 3 else 1_000 * n)
        original = f"{n - 1:032x}" if n % 5 == 4 else None
        event = "checkout_refund" if original else "checkout_capture"
        payer = payers[n % len(payers)]
        lines.append(
            line(
                ref,
                0,
                event,
                payer,
                "shop-x",
                amount,
                currency=currency,
                minute=n,
                original=original,
                points=points,
            )
        )
        if n == 6:
            # A second obligation of the reference: the detail's gross passes EXCEL_EXACT.
            lines.append(
                line(
                    ref,
                    2,
                    event,
                    payer,
                    "shop-x",
                    amount,
                    currency=currency,
                    minute=n,
                    original=original,
                    points=points,
                )
            )
        if n % 2:
            lines.append(
                line(
                    ref,
                    1,
                    "fee",
                    "shop-x",
                    PLATFORM.id,
                    amount // 100 + 1,
                    currency=currency,
                    minute=n,
                    points=None,
                )
            )
    lines[1] = dataclasses.replace(lines[1], point_value=Decimal("1234567.000000012345"))
    lines.sort(key=lambda ln: (ln.booked_at, ln.reference, ln.seq))
    return lines


def write(
    folder: Path, org: str, lines: list[ObligationLine], currency: str, **kw: int
) -> PartyFiles:
    return write_party_files(
        folder, party(org, currency), lines, meta(currency), signing_key=KEY, key_id="k", **kw
    )


def assert_reads_back_as_openpyxl(
    folder: Path, org: str, currency: str, files: PartyFiles, **kw: int
) -> None:
    reference = folder.parent / f"{folder.name}-reference.xlsx"
    write_reference_xlsx(
        folder / CSV_NAME, reference, party(org, currency), meta(currency), files.totals, **kw
    )
    assert read_back(folder / XLSX_NAME) == read_back(reference)


def assert_well_formed(path: Path) -> list[str]:
    """Every member parses as XML; returns the member names."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        for name in names:
            ET.fromstring(archive.read(name))
        types = archive.read("[Content_Types].xml").decode()
    for name in names:
        if name.startswith("xl/worksheets/"):
            assert f'PartName="/{name}"' in types
    return names


@pytest.mark.parametrize("currency", ["CNY", "JPY", "KWD"])
def test_every_cell_reads_back_as_openpyxl_wrote_it(tmp_path: Path, currency: str) -> None:
    lines = awkward_day(currency)
    for org in orgs_of(lines):
        folder = tmp_path / org.strip().replace(" ", "_")
        files = write(folder, org, lines, currency, max_rows_per_sheet=3)
        assert_reads_back_as_openpyxl(folder, org, currency, files, max_rows_per_sheet=3)
        assert verify_directory(folder, PUBLIC) == []
        names = assert_well_formed(folder / XLSX_NAME)
        assert len([n for n in names if n.startswith("xl/worksheets/")]) >= 4


def test_a_second_reader_sees_the_same_cells(tmp_path: Path) -> None:
    # calamine (Rust) shares no code with openpyxl: the package is not only openpyxl-readable.
    lines = awkward_day("KWD")
    write(tmp_path, "shop-x", lines, "KWD", max_rows_per_sheet=4)
    ours = read_back(tmp_path / XLSX_NAME)
    book = CalamineWorkbook.from_path(str(tmp_path / XLSX_NAME))
    assert book.sheet_names == list(ours)
    for title, rows in ours.items():
        seen = book.get_sheet_by_name(title).to_python()
        want = [[None if c[0] is None else c[0] for c in row] for row in rows]
        got = [[None if v == "" else v for v in row] for row in seen]
        assert got == want, title


def test_cells_keep_their_kinds(tmp_path: Path) -> None:
    lines = awkward_day("CNY")
    files = write(tmp_path, "shop-x", lines, "CNY", max_rows_per_sheet=4)
    cells = read_back(tmp_path / XLSX_NAME)
    rows = [r for t, sheet in cells.items() if t.startswith("Details") for r in sheet[1:]]
    assert len(rows) == files.totals.count == 10
    # Three details and the field names per sheet.
    assert [t for t in cells if t.startswith("Details")] == [
        "Details",
        "Details 2",
        "Details 3",
        "Details 4",
    ]
    counterparties = {r[4][0] for r in rows}
    assert {"=shop-y", "a&b <c>", " padded "} <= counterparties
    assert all(r[4][2] == "s" for r in rows)  # "=shop-y" is data, never a formula
    gross = [r[9] for r in rows]
    assert ("19999999999999.96", "General", "s") in gross  # 2 x (MAX_AMOUNT - 1): exact text
    assert (9999999999999.99, "0.00", "n") in gross  # MAX_AMOUNT: still a number
    assert (1000000000000, "0.00", "n") in gross  # 10**14 fen
    assert any(r[6] == ("1000000000000003", "General", "s") for r in rows)  # points past 10**15
    assert any(r[7][0] == pytest.approx(1234567.000000012) for r in rows)
    originals = [r[2][0] for r in rows]
    assert None in originals  # a blank original reference is an empty cell
    assert all(o is None or (isinstance(o, str) and len(o) == 32) for o in originals)


def test_same_input_gives_the_same_bytes(tmp_path: Path) -> None:
    lines = awkward_day("CNY")
    write(tmp_path / "one", "shop-x", lines, "CNY", max_rows_per_sheet=3)
    time.sleep(1.1)  # a clock in any zip entry or property would show
    write(tmp_path / "two", "shop-x", lines, "CNY", max_rows_per_sheet=3)
    one = (tmp_path / "one" / XLSX_NAME).read_bytes()
    assert one == (tmp_path / "two" / XLSX_NAME).read_bytes()
    with zipfile.ZipFile(io.BytesIO(one)) as archive:
        assert {i.date_time for i in archive.infolist()} == {(2026, 3, 2, 0, 0, 0)}
        core = archive.read("docProps/core.xml").decode()
    assert ">2026-03-02T17:05:00Z</dcterms:created>" in core
    assert ">2026-03-02T17:05:00Z</dcterms:modified>" in core


def test_empty_statement_reads_back_as_openpyxl_wrote_it(tmp_path: Path) -> None:
    files = write(tmp_path / "e", "bank-c", [], "CNY")
    assert_reads_back_as_openpyxl(tmp_path / "e", "bank-c", "CNY", files)
    assert list(read_back(tmp_path / "e" / XLSX_NAME)) == [
        "Header",
        "Details",
        "Summary",
        "Trailer",
    ]
    assert_well_formed(tmp_path / "e" / XLSX_NAME)


def test_omitted_details_read_back_as_openpyxl_wrote_them(tmp_path: Path) -> None:
    lines = awkward_day("CNY")
    files = write(tmp_path / "p", PLATFORM.id, lines, "CNY", detail_limit=3)
    assert_reads_back_as_openpyxl(tmp_path / "p", PLATFORM.id, "CNY", files, detail_limit=3)
    cells = read_back(tmp_path / "p" / XLSX_NAME)
    assert list(cells) == ["Header", "Summary", "Trailer"]
    assert "every line is in statement.csv" in str(cells["Header"][-1][1][0])
    assert verify_directory(tmp_path / "p", PUBLIC) == []


def test_a_control_character_is_refused_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "s.xlsx"
    bad = party("bank-a")
    bad = type(bad)(bad.id, "name\x01", bad.kind, bad.currency)
    with pytest.raises(XlsxTextError):
        XlsxStatementWriter(path, bad, meta())
    assert not path.exists()


def reference_camt(folder: Path, org: str, currency: str, files: PartyFiles) -> bytes:
    """The camt.053 as write_row made it from the old per-row parse of the CSV."""
    out = io.BytesIO()
    with tempfile.TemporaryFile() as entries:
        writer = Camt053Writer(party(org, currency), meta(currency), entries)
        for row in csv_detail_rows(folder / CSV_NAME, currency):
            writer.write_row(row)
        writer.finish(files.totals, out)
    return out.getvalue()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(days())
def test_camt_per_chunk_is_byte_identical_to_row_by_row(
    tmp_path: Path, lines: list[ObligationLine]
) -> None:
    base = tmp_path / f"run-{time.monotonic_ns()}"
    for currency in sorted({ln.currency for ln in lines} | {"CNY"}):
        day = [ln for ln in lines if ln.currency == currency]
        for org in [*orgs_of(day), PLATFORM.id]:
            folder = base / currency / org
            files = write(folder, org, day, currency)
            assert (folder / CAMT_NAME).read_bytes() == reference_camt(folder, org, currency, files)


def test_camt_of_awkward_texts_is_byte_identical_to_row_by_row(tmp_path: Path) -> None:
    for currency in ("CNY", "JPY", "KWD"):
        lines = awkward_day(currency)
        for org in orgs_of(lines):
            folder = tmp_path / currency / org.strip().replace(" ", "_")
            files = write(folder, org, lines, currency)
            camt = (folder / CAMT_NAME).read_bytes()
            assert camt == reference_camt(folder, org, currency, files)
            assert b"&amp;" in camt or org != "a&b <c>"


def test_a_detail_too_large_for_camt_raises_per_chunk(tmp_path: Path) -> None:
    # 1,001 maximal obligations of one reference make one detail past 18 digits.
    lines = [line("a" * 32, s, "conversion", "bank-a", "bank-b", MAX_AMOUNT) for s in range(1001)]
    folder = tmp_path / "f"
    write_party_files(
        folder, party("bank-b"), lines, meta(), signing_key=KEY, key_id="k"
    )  # the folder is published without camt (manifest says why)
    assert not (folder / CAMT_NAME).exists()
    chunk = next(csv_detail_chunks(folder / CSV_NAME))
    with tempfile.TemporaryFile() as entries:
        writer = Camt053Writer(party("bank-b"), meta(), entries)
        with pytest.raises(CamtAmountTooLarge):
            writer.write_details(chunk)

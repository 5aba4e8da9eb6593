"""Settlement files: layouts, reproducible bytes, XSD-valid camt.053, signed manifest, verify."""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import subprocess
import time
import zipfile
from collections.abc import Sized
from pathlib import Path

import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook

from clearing.core.kinds import OrgKind
from clearing.core.money import UnknownCurrency
from settlement.camt053 import validation_errors
from settlement.files import (
    CAMT_NAME,
    CSV_NAME,
    WORKER_START_METHOD,
    XLSX_NAME,
    BatchFiles,
    PartyFiles,
    write_batch_folders,
    write_party_files,
    write_statement_csv,
)
from settlement.lines import LineFrameError, ObligationLine, Party, lines_to_frame
from settlement.manifest import MANIFEST_NAME, SIGNATURE_NAME
from settlement.netting import clear
from settlement.statement import StatementInputError, StatementTotals, iter_detail_rows
from settlement.statement_csv import CsvStatementWriter
from settlement.verify import verify_directory
from tests.settlement import probes
from tests.settlement.settlement_factories import (
    PLATFORM,
    chunked,
    days,
    line,
    meta,
    orgs_of,
    party,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = KEY.public_key()


def sample_day() -> list[ObligationLine]:
    """A capture with its fee, a conversion with its fee, then a partial refund of the capture."""
    capture, conversion, refund = "a" * 32, "b" * 32, "c" * 32
    return [
        line(capture, 0, "checkout_capture", "bank-a", "shop-x", 10_000, minute=1),
        line(capture, 1, "fee", "shop-x", PLATFORM.id, 60, minute=1, points=None),
        line(conversion, 0, "conversion", "bank-a", "bank-b", 5_000, minute=2),
        line(conversion, 1, "fee", "bank-a", PLATFORM.id, 30, minute=2, points=None),
        line(refund, 0, "checkout_refund", "shop-x", "bank-a", 4_000, original=capture, minute=3),
        line(
            refund,
            1,
            "fee_refund",
            PLATFORM.id,
            "shop-x",
            24,
            original=capture,
            minute=3,
            points=None,
        ),
    ]


def write(directory: Path, org: str, lines: list[ObligationLine], **kw: object) -> PartyFiles:
    """Write `org`'s folder with the test key and check its camt against the XSD."""
    cur = lines[0].currency if lines else "CNY"
    result = write_party_files(
        directory,
        party(org, cur),
        lines,
        meta(cur),
        signing_key=KEY,
        key_id="k-2026",
        **kw,  # type: ignore[arg-type]
    )
    assert validation_errors(directory / CAMT_NAME) == []
    return result


def folder_bytes(directory: Path) -> dict[str, bytes]:
    """Every file of a folder by name."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_party_statements_fold_fees_into_their_transactions(tmp_path: Path) -> None:
    lines = sample_day()
    merchant = write(tmp_path / "shop-x", "shop-x", lines)
    text = (tmp_path / "shop-x" / CSV_NAME).read_bytes().decode()
    records = text.split("\r\n")
    assert records[1].startswith(f"D,1,{'a' * 32},,checkout_capture,bank-a,PRG-A,100,0.005,2,")
    assert ",100.00,-0.60,99.40,C," in records[1]
    assert ",-40.00,0.24,-39.76,D," in records[2]
    assert records[3] == "S,bank-a,40.00,100.00,-0.36,59.64,2"
    assert merchant.totals.net == 5_964
    platform = write(tmp_path / "platform", PLATFORM.id, lines)
    assert platform.totals.net == 66  # 60 + 30 - 24 of fee income
    positions = clear([lines]).positions
    for org in orgs_of(lines):
        result = write(tmp_path / org, org, lines)
        assert result.totals.net == positions[("CNY", org)]
        assert verify_directory(tmp_path / org, PUBLIC) == []


def test_manifest_is_canonical_and_signed(tmp_path: Path) -> None:
    write(tmp_path, "bank-a", sample_day())
    data = (tmp_path / MANIFEST_NAME).read_bytes()
    manifest = json.loads(data)
    assert data == json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    assert manifest["party"] == "bank-a"
    assert manifest["key_id"] == "k-2026"
    assert [f["name"] for f in manifest["files"]] == sorted([CSV_NAME, XLSX_NAME, CAMT_NAME])
    signature = (tmp_path / SIGNATURE_NAME).read_bytes()
    assert len(signature) == 64
    PUBLIC.verify(signature, data)


def test_second_run_is_byte_identical(tmp_path: Path) -> None:
    lines = sample_day()
    first = write(tmp_path / "one", "shop-x", lines)
    time.sleep(2.1)  # zip timestamps have a 2 s resolution: a clock leak would show
    second = write(tmp_path / "two", "shop-x", lines)
    assert folder_bytes(tmp_path / "one") == folder_bytes(tmp_path / "two")
    assert first.hashes == second.hashes
    with zipfile.ZipFile(tmp_path / "one" / XLSX_NAME) as archive:
        assert {info.date_time for info in archive.infolist()} == {(2026, 3, 2, 0, 0, 0)}
        core = archive.read("docProps/core.xml").decode()
    assert "2026-03-02T17:05:00Z" in core


def test_verify_catches_a_tampered_csv_byte(tmp_path: Path) -> None:
    write(tmp_path, "shop-x", sample_day())
    path = tmp_path / CSV_NAME
    data = bytearray(path.read_bytes())
    at = data.index(b"99.40")
    data[at : at + 5] = b"99.41"
    path.write_bytes(bytes(data))
    errors = verify_directory(tmp_path, PUBLIC)
    assert any("differs from manifest" in e for e in errors)
    assert any("net is not gross + fee" in e for e in errors)
    assert any("body SHA-256" in e for e in errors)


def test_verify_catches_a_recomputed_but_inconsistent_trailer(tmp_path: Path) -> None:
    write(tmp_path, "shop-x", sample_day())
    path = tmp_path / CSV_NAME
    path.write_bytes(path.read_bytes().replace(b"T,2,1,39.76,", b"T,3,1,39.76,"))
    errors = verify_directory(tmp_path, PUBLIC)
    assert any("trailer detail_count 3, recomputed 2" in e for e in errors)


def test_verify_catches_a_tampered_manifest_and_a_bad_signature(tmp_path: Path) -> None:
    write(tmp_path, "bank-b", sample_day())
    manifest = tmp_path / MANIFEST_NAME
    original = manifest.read_bytes()
    manifest.write_bytes(original.replace(b'"party":"bank-b"', b'"party":"bank-c"'))
    assert any("signature does not verify" in e for e in verify_directory(tmp_path, PUBLIC))
    manifest.write_bytes(original)
    assert verify_directory(tmp_path, PUBLIC) == []
    other = Ed25519PrivateKey.from_private_bytes(bytes(32))
    assert any(
        "signature does not verify" in e for e in verify_directory(tmp_path, other.public_key())
    )
    (tmp_path / SIGNATURE_NAME).write_bytes(other.sign(original))
    assert any("signature does not verify" in e for e in verify_directory(tmp_path, PUBLIC))


def test_verify_cross_checks_camt_closing_balance(tmp_path: Path) -> None:
    write(tmp_path, "shop-x", sample_day())
    path = tmp_path / CAMT_NAME
    path.write_text(
        path.read_text().replace('<Amt Ccy="CNY">59.64</Amt>', '<Amt Ccy="CNY">59.65</Amt>', 1)
    )
    errors = verify_directory(tmp_path, PUBLIC)
    assert any("closing balance 5965 differs from CSV net 5964" in e for e in errors)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not on PATH")
def test_openssl_verifies_the_manifest_signature(tmp_path: Path) -> None:
    write(tmp_path, "shop-x", sample_day())
    pem = tmp_path / "platform.pem"
    pem.write_bytes(
        PUBLIC.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    command = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pem), "-rawin"]
    command += ["-in", MANIFEST_NAME, "-sigfile", SIGNATURE_NAME]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (tmp_path / MANIFEST_NAME).write_bytes(b"{}\n")
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode != 0


def test_details_split_across_sheets(tmp_path: Path) -> None:
    lines = [
        line(f"{n:032x}", 0, "conversion", "bank-a", "bank-b", 100 + n, minute=n) for n in range(7)
    ]
    write(tmp_path, "bank-a", lines, max_rows_per_sheet=3)
    workbook = load_workbook(tmp_path / XLSX_NAME, read_only=True)
    titles = workbook.sheetnames
    workbook.close()
    assert titles == [
        "Header",
        "Details",
        "Details 2",
        "Details 3",
        "Details 4",
        "Summary",
        "Trailer",
    ]
    assert verify_directory(tmp_path, PUBLIC) == []


def test_text_that_looks_like_a_formula_stays_text(tmp_path: Path) -> None:
    lines = [line("a" * 32, 0, "checkout_capture", "bank-a", "=shop-y", 500)]
    write(tmp_path, "=shop-y", lines)
    workbook = load_workbook(tmp_path / XLSX_NAME)
    header = {row[0].value: row[1] for row in workbook["Header"].iter_rows()}
    assert header["party_id"].value == "=shop-y"
    assert header["party_id"].data_type == "s"
    assert verify_directory(tmp_path, PUBLIC) == []


def test_zero_exponent_currency_and_long_ids(tmp_path: Path) -> None:
    issuer = "0f5c2a8e-93b1-4c1e-9f7d-1b2d3c4e5f60"  # a UUID is longer than camt's Max34Text
    reference = "f" * 64
    lines = [
        line(reference, 0, "conversion", issuer, "bank-b", 12_345, currency="JPY"),
        line(reference, 1, "fee", issuer, PLATFORM.id, 7, currency="JPY", points=None),
    ]
    write(tmp_path / "a", issuer, lines)
    assert ",-12345,-7,-12352,D," in (tmp_path / "a" / CSV_NAME).read_text()
    assert f"reference={reference}" in (tmp_path / "a" / CAMT_NAME).read_text()
    assert verify_directory(tmp_path / "a", PUBLIC) == []
    write(tmp_path / "p", PLATFORM.id, lines)
    assert verify_directory(tmp_path / "p", PUBLIC) == []


def test_empty_statement_is_valid(tmp_path: Path) -> None:
    write(tmp_path, "bank-c", [])
    assert verify_directory(tmp_path, PUBLIC) == []


def test_unknown_currency_is_rejected(tmp_path: Path) -> None:
    lines = [line("a" * 32, 0, "conversion", "bank-a", "bank-b", 100, currency="XXQ")]
    with pytest.raises(UnknownCurrency):
        write_party_files(
            tmp_path, party("bank-a", "XXQ"), lines, meta("XXQ"), signing_key=KEY, key_id="k"
        )
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [
                line("b" * 32, 0, "fee", "bank-a", "platform", 1, minute=2),
                line("a" * 32, 0, "fee", "bank-a", "platform", 1, minute=1),
            ],
            "strictly sorted",
        ),
        ([line("a" * 32, 0, "fee", "bank-a", "platform", 1, minute=60 * 24)], "outside"),
        ([line("a" * 32, 0, "fee", "bank-a", "platform", 1, currency="HKD")], "is in HKD"),
    ],
)
def test_bad_input_raises_and_leaves_no_file(
    tmp_path: Path, lines: list[ObligationLine], message: str
) -> None:
    with pytest.raises(StatementInputError, match=message):
        write_party_files(tmp_path, party("bank-a"), lines, meta(), signing_key=KEY, key_id="k")
    assert list(tmp_path.iterdir()) == []


def test_a_net_that_disagrees_with_the_clearing_publishes_nothing(tmp_path: Path) -> None:
    write(tmp_path, "shop-x", sample_day())
    before = folder_bytes(tmp_path)
    with pytest.raises(StatementInputError, match="clearing says"):
        write_party_files(
            tmp_path,
            party("shop-x"),
            sample_day()[:2],
            meta(),
            signing_key=KEY,
            key_id="k-2026",
            expected_net=5_964,
        )
    assert folder_bytes(tmp_path) == before


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(days(currencies=("CNY",)))
def test_generated_days_write_verifiable_folders(
    tmp_path: Path, lines: list[ObligationLine]
) -> None:
    positions = clear([lines]).positions
    base = tmp_path / f"run-{time.monotonic_ns()}"
    total = 0
    for org in orgs_of(lines) or [PLATFORM.id]:
        folder = base / org
        result = write(folder, org, lines, expected_net=positions.get(("CNY", org), 0))
        assert verify_directory(folder, PUBLIC) == []
        if org != PLATFORM.id:
            total += result.totals.net
    platform = Party(PLATFORM.id, PLATFORM.name, OrgKind.PLATFORM, "CNY")
    assert total + positions.get(("CNY", platform.id), 0) == 0


def reference_csv(org: str, lines: list[ObligationLine]) -> bytes:
    """The CSV as the row-by-row writer makes it: the reference for the vectorised path."""
    buffer = io.BytesIO()
    cur = lines[0].currency if lines else "CNY"
    writer = CsvStatementWriter(buffer, party(org, cur), meta(cur))
    totals = StatementTotals()
    for row in iter_detail_rows(lines, party(org, cur), meta(cur)):
        totals.add(row)
        writer.write_row(row)
    writer.finish(totals)
    return buffer.getvalue()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(days(currencies=("CNY",)), st.integers(min_value=1, max_value=9))
def test_vectorised_csv_is_byte_identical_to_row_by_row(
    tmp_path: Path, lines: list[ObligationLine], size: int
) -> None:
    base = tmp_path / f"run-{time.monotonic_ns()}"
    orgs = orgs_of(lines) or [PLATFORM.id]
    frames = [lines_to_frame(chunk) for chunk in chunked(lines, size)]
    folders = {org: base / org for org in orgs}
    with BatchFiles(
        folders,
        [party(org) for org in orgs],
        {org: meta() for org in orgs},
        signing_key=KEY,
        key_id="k-2026",
    ) as batch:
        for frame in frames:
            batch.feed(frame)
        batch.finish_csv()
        batch.write_formats()
        batch.publish()
    for org in orgs:
        want = reference_csv(org, lines)
        assert (folders[org] / CSV_NAME).read_bytes() == want
        single = base / "single" / org
        write_party_files(
            single, party(org), chunked(lines, size), meta(), signing_key=KEY, key_id="k-2026"
        )
        assert folder_bytes(single) == folder_bytes(folders[org])
        assert verify_directory(folders[org], PUBLIC) == []


def count_into(seen: list[int], chunk: Sized) -> None:
    seen.append(len(chunk))


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(days(currencies=("CNY",)), st.integers(min_value=1, max_value=9))
def test_two_workers_write_the_same_bytes_as_one(
    tmp_path: Path, lines: list[ObligationLine], size: int
) -> None:
    """The files step split across two processes (platform | other parties) changes no byte."""
    base = tmp_path / f"run-{time.monotonic_ns()}"
    orgs = sorted({*orgs_of(lines), PLATFORM.id})
    parties = [PLATFORM if org == PLATFORM.id else party(org) for org in orgs]
    metas = {org: meta() for org in orgs}
    nets = clear([lines]).currency_positions("CNY")
    trees = {}
    for workers in (1, 2):
        folders = {org: base / str(workers) / org for org in orgs}
        seen: list[int] = []
        written = write_batch_folders(
            functools.partial(chunked, lines, size),
            folders,
            parties,
            metas,
            signing_key=KEY,
            key_id="k-2026",
            expected_nets={org: nets.get(org, 0) for org in orgs},
            workers=workers,
            tap=functools.partial(count_into, seen),
        )
        assert sum(seen) == len(lines)
        assert written.workers == (2 if workers == 2 and len(orgs) > 1 else 1)
        assert list(written.parties) == orgs
        for org in orgs:
            assert written.parties[org].totals.net == nets.get(org, 0)
            assert verify_directory(folders[org], PUBLIC) == []
        trees[workers] = {org: folder_bytes(folders[org]) for org in orgs}
    assert trees[1] == trees[2]


def test_a_failing_worker_fails_the_batch_and_leaves_no_files(tmp_path: Path) -> None:
    lines = sample_day()
    orgs = sorted({*orgs_of(lines), PLATFORM.id})
    parties = [PLATFORM if org == PLATFORM.id else party(org) for org in orgs]
    folders = {org: tmp_path / org for org in orgs}
    nets = {org: 0 for org in orgs}  # wrong for everyone: both workers refuse to publish
    with pytest.raises(StatementInputError, match="nets"):
        write_batch_folders(
            functools.partial(chunked, lines, len(lines)),
            folders,
            parties,
            {org: meta() for org in orgs},
            signing_key=KEY,
            key_id="k-2026",
            expected_nets=nets,
            workers=2,
        )
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def mixed_day(small: int = 6, large: int = 3, limit: int = 4) -> list[ObligationLine]:
    """Captures with fees: `large` merchants above `limit` lines, `small` ones under it."""
    out: list[ObligationLine] = []
    n = 0
    for m in range(small + large):
        for _ in range(limit * 3 if m < large else 1 + m % limit):
            n += 1
            ref = f"{n:032x}"
            issuer, shop = f"bank-{n % 3}", f"shop-{m}"
            out.append(line(ref, 0, "checkout_capture", issuer, shop, 1_000 + n, minute=n))
            out.append(line(ref, 1, "fee", shop, PLATFORM.id, 6 + n % 5, minute=n, points=None))
    return out


def test_formats_are_shared_by_lines_and_change_no_byte(tmp_path: Path) -> None:
    """Parties above and below the detail limit: the formats, shared between two processes
    (each party's exactly once, whichever takes it), give the bytes one process gives."""
    limit = 4
    lines = mixed_day(limit=limit)
    orgs = sorted({*orgs_of(lines), PLATFORM.id})
    parties = [PLATFORM if org == PLATFORM.id else party(org) for org in orgs]
    nets = clear([lines]).currency_positions("CNY")
    trees = {}
    for workers in (1, 2):
        folders = {org: tmp_path / str(workers) / org for org in orgs}
        witness = probes.ProcessWitness()
        written = write_batch_folders(
            functools.partial(chunked, lines, 5),
            folders,
            parties,
            {org: meta() for org in orgs},
            signing_key=KEY,
            key_id="k-2026",
            expected_nets={org: nets.get(org, 0) for org in orgs},
            workers=workers,
            detail_limit=limit,
            probe=witness,
        )
        assert written.workers == workers
        assert len(witness.parties) == len(orgs)
        assert len({pid for pid, _ in witness.shares}) == workers
        counts = [f.totals.count for org, f in written.parties.items() if org != PLATFORM.id]
        assert min(counts) <= limit < max(counts)
        for org in orgs:
            assert verify_directory(folders[org], PUBLIC) == []
        trees[workers] = {org: folder_bytes(folders[org]) for org in orgs}
    assert trees[1] == trees[2]


@pytest.mark.parametrize(("n", "in_worker"), [(1, True), (3, True), (1, False), (2, False)])
def test_a_failure_while_formats_are_shared_leaves_no_file(
    tmp_path: Path, n: int, in_worker: bool
) -> None:
    """Either process failing amid the formats (the calling process's second party is one it
    took from the worker, when it gets there) fails the batch; no file is left, partial or
    final: nothing gets its final name before every party's files are written."""
    lines = mixed_day()
    orgs = sorted({*orgs_of(lines), PLATFORM.id})
    parties = [PLATFORM if org == PLATFORM.id else party(org) for org in orgs]
    with pytest.raises((StatementInputError, RuntimeError), match="failing after party"):
        write_batch_folders(
            functools.partial(chunked, lines, 7),
            {org: tmp_path / org for org in orgs},
            parties,
            {org: meta() for org in orgs},
            signing_key=KEY,
            key_id="k-2026",
            workers=2,
            detail_limit=4,
            probe=probes.FailAt(n, in_worker=in_worker),
        )
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_the_files_worker_is_spawned_not_forked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch may run inside `clearing serve` (threads, pooled connections): the second files
    process must start afresh, inheriting none of the calling process's memory."""
    lines = sample_day()
    orgs = sorted({*orgs_of(lines), PLATFORM.id})
    parties = [PLATFORM if org == PLATFORM.id else party(org) for org in orgs]
    monkeypatch.setattr(probes, "MARK", "set in the calling process")
    witness = probes.ProcessWitness()
    written = write_batch_folders(
        functools.partial(chunked, lines, 2),
        {org: tmp_path / org for org in orgs},
        parties,
        {org: meta() for org in orgs},
        signing_key=KEY,
        key_id="k-2026",
        workers=2,
        probe=witness,
    )
    assert written.workers == 2
    assert WORKER_START_METHOD == "spawn"
    # The CSVs: the platform's share here, the others' in the worker.
    (here, here_mark), (there, there_mark) = witness.shares  # the worker's merged in last
    assert here == os.getpid() != there
    assert here_mark == "set in the calling process"
    assert there_mark == "unset"  # a forked child would have seen this process's MARK
    # The formats: each party's once, in whichever process took it, seeing that process's MARK.
    assert len(witness.parties) == len(orgs)
    for pid, mark in witness.parties:
        assert mark == ("set in the calling process" if pid == os.getpid() else "unset")
    for org in orgs:
        assert verify_directory(tmp_path / org, PUBLIC) == []


def test_huge_amounts_take_the_exact_path(tmp_path: Path) -> None:
    big = 2**62
    lines = [
        line("a" * 32, 0, "conversion", "bank-a", "bank-b", big),
        line("a" * 32, 1, "conversion", "bank-a", "bank-b", big),
    ]
    # camt.053 amounts have at most 18 digits: only the CSV can carry this.
    totals = write_statement_csv(tmp_path / CSV_NAME, party("bank-b"), lines, meta())
    assert totals.net == 2 * big
    assert (tmp_path / CSV_NAME).read_bytes() == reference_csv("bank-b", lines)


def test_large_statements_keep_every_line_in_the_csv_only(tmp_path: Path) -> None:
    lines = sample_day()
    write(tmp_path, PLATFORM.id, lines, detail_limit=2)
    assert verify_directory(tmp_path, PUBLIC) == []
    workbook = load_workbook(tmp_path / XLSX_NAME, read_only=True)
    titles = workbook.sheetnames
    trailer = {row[0]: row[1] for row in workbook["Trailer"].iter_rows(values_only=True)}
    header = {row[0]: row[1] for row in workbook["Header"].iter_rows(values_only=True)}
    workbook.close()
    assert titles == ["Header", "Summary", "Trailer"]
    assert trailer["details_in_workbook"] == 0
    assert trailer["detail_count"] == 6
    assert "every line is in statement.csv" in str(header["details"])
    camt = (tmp_path / CAMT_NAME).read_text()
    assert camt.count("<Ntry>") == 6  # (counterparty, event type) pairs of the platform
    assert "<Btch><NbOfTxs>" in camt
    assert "entries=batched;details=6" in camt
    tampered = camt.replace("<NbOfTxs>1</NbOfTxs>", "<NbOfTxs>2</NbOfTxs>", 1)
    (tmp_path / CAMT_NAME).write_text(tampered)
    assert any("batch entries" in e for e in verify_directory(tmp_path, PUBLIC))


def test_frames_from_a_reader_with_categories_and_nulls(tmp_path: Path) -> None:
    lines = sample_day()
    frame = lines_to_frame(lines)
    loose = pd.DataFrame(
        {
            **{c: frame[c] for c in frame.columns},
            "payer": frame["payer"].astype("category"),
            "original_reference": frame["original_reference"].replace("", None),
            "point_value": [ln.point_value for ln in lines],
            "point_value_version": pd.array([ln.point_value_version for ln in lines], "Int64"),
            "points": pd.array([ln.points for ln in lines], "Int64"),
        }
    )
    write_party_files(tmp_path / "a", party("shop-x"), loose, meta(), signing_key=KEY, key_id="k")
    assert (tmp_path / "a" / CSV_NAME).read_bytes() == reference_csv("shop-x", lines)
    assert verify_directory(tmp_path / "a", PUBLIC) == []
    floating = loose.assign(amount=loose["amount"].astype(float))
    with pytest.raises(LineFrameError, match="floating point"):
        write_party_files(
            tmp_path / "b", party("shop-x"), [floating], meta(), signing_key=KEY, key_id="k"
        )
    assert not any((tmp_path / "b").iterdir())

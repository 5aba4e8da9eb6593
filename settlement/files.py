"""Writing a party's settlement folder: CSV, XLSX and camt.053 statements, signed manifest."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from settlement.camt053 import Camt053Writer
from settlement.lines import ObligationLine, Party
from settlement.manifest import MANIFEST_NAME, SIGNATURE_NAME, manifest_bytes, sign_manifest
from settlement.statement import (
    StatementInputError,
    StatementMeta,
    StatementTotals,
    iter_detail_rows,
    statement_file_id,
)
from settlement.statement_csv import CsvStatementWriter
from settlement.statement_xlsx import EXCEL_MAX_ROWS, XlsxStatementWriter

CSV_NAME = "statement.csv"
XLSX_NAME = "statement.xlsx"
CAMT_NAME = "camt053.xml"


@dataclass(frozen=True)
class PartyFiles:
    """What write_party_files produced."""

    directory: Path
    file_id: str
    hashes: Mapping[str, str]
    """File name -> SHA-256 hex, as listed in the manifest."""
    totals: StatementTotals


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(partials: Iterable[tuple[Path, Path]], directory: Path) -> None:
    # Data first, manifest and signature last: a crash in between leaves complete files that
    # verify reports as not matching the manifest, never a truncated file under a final name.
    for partial, final in partials:
        _fsync(partial)
        os.replace(partial, final)
    with contextlib.suppress(OSError):
        _fsync(directory)


@contextlib.contextmanager
def _cleanup_on_error(paths: list[Path]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise


def write_statement_csv(
    path: Path, party: Party, lines: Iterable[ObligationLine], meta: StatementMeta
) -> StatementTotals:
    """Write only the CSV statement of `party` to `path`, atomically; returns its totals."""
    partial = _partial(path)
    totals = StatementTotals()
    with _cleanup_on_error([partial]):
        with open(partial, "wb") as fh:
            writer = CsvStatementWriter(fh, party, meta)
            for row in iter_detail_rows(lines, party, meta):
                totals.add(row)
                writer.write_row(row)
            writer.finish(totals)
        _publish([(partial, path)], path.parent)
    return totals


def write_party_files(
    directory: Path,
    party: Party,
    lines: Iterable[ObligationLine],
    meta: StatementMeta,
    *,
    signing_key: Ed25519PrivateKey,
    key_id: str,
    expected_net: int | None = None,
    max_rows_per_sheet: int = EXCEL_MAX_ROWS,
) -> PartyFiles:
    """Write `party`'s statements, manifest and signature into `directory` in one pass."""
    directory.mkdir(parents=True, exist_ok=True)
    finals = [directory / name for name in (CSV_NAME, XLSX_NAME, CAMT_NAME)]
    csv_partial, xlsx_partial, camt_partial = (_partial(p) for p in finals)
    manifest_partial = _partial(directory / MANIFEST_NAME)
    sig_partial = _partial(directory / SIGNATURE_NAME)
    temps = [csv_partial, xlsx_partial, camt_partial, manifest_partial, sig_partial]
    totals = StatementTotals()
    with _cleanup_on_error(temps):
        entries: IO[bytes]
        with (
            open(csv_partial, "wb") as csv_fh,
            tempfile.TemporaryFile(dir=directory) as entries,
        ):
            csv_writer = CsvStatementWriter(csv_fh, party, meta)
            xlsx_writer = XlsxStatementWriter(party, meta, max_rows_per_sheet=max_rows_per_sheet)
            camt_writer = Camt053Writer(party, meta, entries)
            try:
                for row in iter_detail_rows(lines, party, meta):
                    totals.add(row)
                    csv_writer.write_row(row)
                    xlsx_writer.write_row(row)
                    camt_writer.write_row(row)
                if expected_net is not None and totals.net != expected_net:
                    raise StatementInputError(
                        f"statement of {party.id} nets {totals.net}, clearing says {expected_net}"
                    )
            except BaseException:
                xlsx_writer.discard()
                raise
            body_sha = csv_writer.finish(totals)
            xlsx_writer.finish(totals, body_sha, xlsx_partial)
            with open(camt_partial, "wb") as camt_fh:
                camt_writer.finish(totals, camt_fh)
        hashes = {final.name: _sha256(_partial(final)) for final in finals}
        manifest = manifest_bytes(meta.batch_id, party.id, key_id, hashes)
        manifest_partial.write_bytes(manifest)
        sig_partial.write_bytes(sign_manifest(manifest, signing_key))
        _publish(
            [(_partial(final), final) for final in finals]
            + [
                (manifest_partial, directory / MANIFEST_NAME),
                (sig_partial, directory / SIGNATURE_NAME),
            ],
            directory,
        )
    return PartyFiles(
        directory=directory,
        file_id=statement_file_id(meta, party.id),
        hashes=MappingProxyType(hashes),
        totals=totals,
    )

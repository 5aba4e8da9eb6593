"""Writing a party's settlement folder: CSV, XLSX and camt.053 statements, signed manifest."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import pickle
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO, BinaryIO, Final

import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clearing.core.kinds import OrgKind
from clearing.core.money import exponent
from settlement.camt053 import OMITTED_TOO_LARGE, Camt053Writer, CamtAmountTooLarge, camt_can_hold
from settlement.lines import ObligationLine, Party
from settlement.manifest import MANIFEST_NAME, SIGNATURE_NAME, manifest_bytes, sign_manifest
from settlement.probe import NO_PROBE, BatchProbe
from settlement.statement import (
    DetailBlock,
    DetailFrames,
    StatementInputError,
    StatementMeta,
    StatementTotals,
    add_block_totals,
    statement_file_id,
)
from settlement.statement_csv import (
    CsvStatementWriter,
    DetailTexts,
    csv_detail_chunks,
    detail_records,
)
from settlement.statement_xlsx import EXCEL_MAX_ROWS, XlsxStatementWriter

CSV_NAME = "statement.csv"
XLSX_NAME = "statement.xlsx"
CAMT_NAME = "camt053.xml"
DETAIL_LIMIT = 10_000
"""Above this many detail lines a party's XLSX holds no detail sheets (summary and trailer only)
and its camt.053 holds one batch entry per (counterparty, event type); statement.csv always has
every line. See FILES.md, "Large statements"."""
_LINES_PER_CHUNK = 65_536
PARTY_FORMAT_LINES = 200
"""A party's fixed cost in the formats pass (its workbook, its camt.053 envelope, manifest,
signature), in detail lines' worth: the weight a party adds to its detail lines when the format
work is handed out (heaviest first, see write_batch_folders)."""
FSYNC_THREADS = 16
"""fsyncs in flight at once when a batch's folders are published: the filesystem commits
concurrent fsyncs together (ext4: one journal commit for many), so 16 cost about what 4 do
one after the other (measured: 3,000 small files, 3.3 s serial, 0.75 s with 16 threads)."""


@dataclass(frozen=True)
class PartyFiles:
    """What write_party_files produced."""

    directory: Path
    file_id: str
    hashes: Mapping[str, str]
    """File name -> SHA-256 hex, as listed in the manifest."""
    totals: StatementTotals
    omitted: Mapping[str, str] = field(default_factory=dict)
    """File name -> reason code of every file left out of the folder, as in the manifest
    (only ever the camt.053; see FILES.md, "Totals and their widths")."""


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def file_sha256(path: Path) -> str:
    """SHA-256 hex of a file's bytes, as manifests and settlement_files list them."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entry to disk (a folder: the names renamed into it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(partials: Iterable[tuple[Path, Path]], directory: Path) -> None:
    # Data first, manifest and signature last: a crash in between leaves complete files that
    # verify reports as not matching the manifest, never a truncated file under a final name.
    for partial, final in partials:
        fsync_path(partial)
        os.replace(partial, final)
    with contextlib.suppress(OSError):
        fsync_path(directory)


def _fsync_all(paths: Iterable[Path], *, folders: bool = False) -> None:
    # Every fsync is waited for and its error raised (a folder's: ignored where the platform
    # cannot fsync a folder, as _publish).
    def sync(path: Path) -> None:
        if folders:
            with contextlib.suppress(OSError):
                fsync_path(path)
        else:
            fsync_path(path)

    with ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="fsync") as pool:
        for _ in pool.map(sync, paths):
            pass


def publish_folders(written: Iterable[PartyFiles], *, data_synced: bool = False) -> None:
    """Give every written folder's partial files their final names, durably, in one pass
    (`data_synced`: the caller has fsynced every partial file already, BatchFiles.synced)."""
    # The same order as _publish, for all folders at once: every partial's data is on disk
    # before any file gets its final name (so a crash never leaves a truncated file under a
    # final name), data files before manifest and signature in each folder, then the folders
    # (and the folder holding them: the service's staging folder) so that the names are on
    # disk before the caller records the files. One fsync per file, as before, but issued
    # FSYNC_THREADS at a time instead of one after the other (here, or by write_batch_folders'
    # processes in the background as they write, BatchFiles.synced): with 10,000 parties,
    # 60,000 serial fsyncs after the last file were the largest per-party cost (about 1 ms
    # each on this machine's ext4).
    renames: list[tuple[Path, Path]] = []
    stale: list[Path] = []
    folders: dict[Path, None] = {}
    for files in written:
        directory = files.directory
        # A file of an earlier write into this folder must not outlive a manifest that
        # declares it omitted (verify refuses such a folder).
        stale += [directory / name for name in files.omitted]
        names = [*files.hashes, MANIFEST_NAME, SIGNATURE_NAME]
        renames += [(_partial(directory / name), directory / name) for name in names]
        folders[directory] = None
        folders[directory.parent] = None
    if not data_synced:
        _fsync_all(partial for partial, _ in renames)
    for path in stale:
        path.unlink(missing_ok=True)
    for partial, final in renames:
        os.replace(partial, final)
    _fsync_all(folders, folders=True)


@contextlib.contextmanager
def _cleanup_on_error(paths: list[Path]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise


Chunk = Sequence[ObligationLine] | pd.DataFrame


def line_chunks(
    lines: Iterable[ObligationLine] | Iterable[Chunk] | pd.DataFrame, size: int = _LINES_PER_CHUNK
) -> Iterator[Chunk]:
    """Chunks of `lines`: a frame, an iterable of frames or lists of lines, or of lines."""
    if isinstance(lines, pd.DataFrame):
        yield lines
        return
    items = iter(lines)
    for first in items:
        if isinstance(first, ObligationLine):
            batch: list[ObligationLine] = [first, *islice(items, size - 1)]  # type: ignore[list-item]
            yield batch
        else:
            yield first
        break
    pending: list[ObligationLine] = []
    for item in items:
        if isinstance(item, ObligationLine):
            pending.append(item)
            if len(pending) >= size:
                yield pending
                pending = []
        else:
            if pending:
                yield pending
                pending = []
            yield item
    if pending:
        yield pending


class _PartyState:
    def __init__(self, directory: Path, party: Party, meta: StatementMeta) -> None:
        self.directory = directory
        self.party = party
        self.meta = meta
        self.totals = StatementTotals()
        self.csv_partial = _partial(directory / CSV_NAME)
        self.handle: BinaryIO | None = None
        self.writer: CsvStatementWriter | None = None
        self.csv_sha256 = ""
        self.body_sha256 = ""
        self.omitted: dict[str, str] = {}
        """File name -> reason: files this folder is published without."""

    def partials(self) -> list[Path]:
        names = (CSV_NAME, XLSX_NAME, CAMT_NAME, MANIFEST_NAME, SIGNATURE_NAME)
        return [_partial(self.directory / name) for name in names]


class BatchFiles:
    """The folders of many parties of one batch, written in one streaming pass over its lines.

    Usage: `feed` every chunk (sorted lines, see DetailFrames), `finish_csv`, `write_formats`
    (XLSX and camt.053 from each finished CSV, by the DETAIL_LIMIT policy), then `publish`
    (manifest, signature, atomic renames). Nothing has a final name before `publish`; leaving
    the `with` block by an exception deletes every partial file. `probe` is told of each
    party written and wraps each phase (a benchmark times them).
    """

    def __init__(
        self,
        folders: Mapping[str, Path],
        parties: Sequence[Party],
        metas: Mapping[str, StatementMeta],
        *,
        signing_key: Ed25519PrivateKey,
        key_id: str,
        detail_limit: int = DETAIL_LIMIT,
        max_rows_per_sheet: int = EXCEL_MAX_ROWS,
        probe: BatchProbe = NO_PROBE,
    ) -> None:
        if not parties:
            raise ValueError("no parties")
        first = metas[parties[0].id]
        exponent(first.currency)
        for party in parties:
            m = metas[party.id]
            if (m.currency, m.window_start, m.window_end) != (
                first.currency,
                first.window_start,
                first.window_end,
            ):
                raise ValueError("every statement of a batch has one currency and window")
        self._signing_key = signing_key
        self._key_id = key_id
        self._detail_limit = detail_limit
        self._max_rows = max_rows_per_sheet
        self._currency = first.currency
        self._engine = DetailFrames(parties, first)
        self._states = [_PartyState(folders[p.id], p, metas[p.id]) for p in parties]
        self._probe = probe
        self._formatted = 0
        self._syncing: ThreadPoolExecutor | None = None
        self._synced: list[Future[None]] = []
        try:
            for state in self._states:
                state.directory.mkdir(parents=True, exist_ok=True)
                state.handle = open(state.csv_partial, "wb")  # noqa: SIM115
                state.writer = CsvStatementWriter(state.handle, state.party, state.meta)
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> BatchFiles:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is not None:
            self.abort()

    @property
    def totals(self) -> dict[str, StatementTotals]:
        """Statement totals per party id (complete after finish_csv)."""
        return {s.party.id: s.totals for s in self._states}

    def feed(self, chunk: Chunk) -> None:
        """Write the detail records of one chunk of sorted lines."""
        with self._probe.phase("details"):
            blocks = list(self._engine.feed_blocks(chunk))
        self._write(blocks)

    def _write(self, blocks: list[DetailBlock]) -> None:
        with self._probe.phase("csv"):
            for block in blocks:
                # Every party's rows of the block formatted and counted at once, then each
                # party handed its slice: no frame per party (10,000 parties a chunk).
                add_block_totals([s.totals for s in self._states], block)
                records = detail_records(block.details, self._currency)
                for owner in block.owners():
                    writer = self._states[owner].writer
                    assert writer is not None
                    at = int(block.firsts[owner])
                    writer.write_records(records[at : at + int(block.counts[owner])])

    def finish_csv(self) -> None:
        """Write the last reference, summaries and trailers; close every CSV."""
        with self._probe.phase("details"):
            blocks = list(self._engine.close_blocks())
        self._write(blocks)
        with self._probe.phase("csv"):
            for state in self._states:
                assert state.writer is not None
                assert state.handle is not None
                state.body_sha256 = state.writer.finish(state.totals)
                state.csv_sha256 = state.writer.file_hash.hexdigest()
                state.handle.close()
                state.handle = None

    def write_formats(self) -> None:
        """XLSX and camt.053 of every party, from its finished CSV (policy: DETAIL_LIMIT);
        the probe hears of the n-th party's after it is written."""
        for state in self._states:
            self._format_party(state)

    def _format_party(self, state: _PartyState) -> None:
        self._write_formats(state)
        self._formatted += 1
        self._probe.party_written(self._formatted)

    def check_nets(self, expected_nets: Mapping[str, int] | None) -> None:
        """Raise StatementInputError if a party's statement nets otherwise than expected."""
        check_nets(((s.party.id, s.totals) for s in self._states), expected_nets)

    def handoff(self) -> list[_PartyState]:
        """Every party's finished CSV, heaviest format work first; this batch lets go of them
        (whichever process then writes a party's formats `adopt`s it and removes its partial
        files on failure)."""

        def weight(state: _PartyState) -> int:
            count = state.totals.count
            return (count if count <= self._detail_limit else 0) + PARTY_FORMAT_LINES

        handed = sorted(self._states, key=lambda s: (-weight(s), s.party.id))
        for state in handed:
            state.writer = None  # holds hash objects, which do not pickle; the CSV is closed
        self._states = []
        return handed

    def adopt(self, state: _PartyState) -> None:
        """Take on a party whose CSV another batch (maybe another process's) finished."""
        self._states.append(state)

    def write_party(self, state: _PartyState) -> PartyFiles:
        """An adopted party's XLSX, camt.053, manifest and signature, all still partial files
        (publish_folders gives them their final names)."""
        self._format_party(state)
        with self._probe.phase("manifests"):
            written = self._seal(state)
        # Each file's fsync runs in the background while the next party is written (the
        # disk's work overlaps this process's); `synced` waits for them all before any rename.
        if self._syncing is None:
            self._syncing = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="fsync")
        for name in [*written.hashes, MANIFEST_NAME, SIGNATURE_NAME]:
            self._synced.append(self._syncing.submit(fsync_path, _partial(state.directory / name)))
        return written

    def synced(self) -> None:
        """Wait until every file `write_party` wrote is on disk; raise the first fsync error."""
        pending, self._synced = self._synced, []
        try:
            for future in pending:
                future.result()
        finally:
            if self._syncing is not None:
                self._syncing.shutdown(wait=True, cancel_futures=True)
                self._syncing = None

    def _write_formats(self, state: _PartyState) -> None:
        # One read of the CSV's detail texts feeds both files: nothing is parsed per row.
        count = state.totals.count
        detailed = count <= self._detail_limit
        xlsx_partial = _partial(state.directory / XLSX_NAME)
        camt_partial = _partial(state.directory / CAMT_NAME)
        # A party's camt.053 that cannot carry its figures is left out, never the batch
        # stopped: the CSV and XLSX hold every figure, the manifest says why (FILES.md).
        # The net position (CLBD) is known from the totals, so a statement whose net is too
        # large is not written first; a detail's amount too large shows while writing.
        camt_wanted = camt_can_hold(state.totals.net)
        if not camt_wanted:
            state.omitted[CAMT_NAME] = OMITTED_TOO_LARGE
        with contextlib.ExitStack() as stack:
            camt: Camt053Writer | None = None
            if camt_wanted:
                entries: IO[bytes] = stack.enter_context(
                    tempfile.TemporaryFile(dir=state.directory)
                )
                camt = Camt053Writer(state.party, state.meta, entries)
            with self._probe.phase("xlsx"):
                xlsx = XlsxStatementWriter(
                    xlsx_partial,
                    state.party,
                    state.meta,
                    max_rows_per_sheet=self._max_rows,
                    details_omitted=None if detailed else count,
                    detail_limit=self._detail_limit,
                )
            try:
                if detailed:
                    for chunk in csv_detail_chunks(state.csv_partial):
                        with self._probe.phase("xlsx"):
                            xlsx.write_details(chunk)
                        if camt is not None:
                            with self._probe.phase("camt"):
                                camt = self._camt_details(state, camt, chunk)
                with self._probe.phase("xlsx"):
                    xlsx.finish(state.totals, state.body_sha256)
            except BaseException:
                xlsx.discard()
                raise
            if camt is not None:
                with self._probe.phase("camt"):
                    self._finish_camt(state, camt, camt_partial, batched=not detailed)

    def _camt_details(
        self, state: _PartyState, camt: Camt053Writer, chunk: DetailTexts
    ) -> Camt053Writer | None:
        try:
            camt.write_details(chunk)
        except CamtAmountTooLarge:
            # Only a detail's own amount gets here (batch entries are split to fit), so
            # only a statement of at most detail_limit lines: its entries are thrown away.
            state.omitted[CAMT_NAME] = OMITTED_TOO_LARGE
            return None
        return camt

    def _finish_camt(
        self, state: _PartyState, camt: Camt053Writer, partial: Path, *, batched: bool
    ) -> None:
        if batched:
            for (cp, ev), (count, gross, fee, net) in sorted(state.totals.batches.items()):
                camt.write_batch(cp, ev, count, gross, fee, net)
        try:
            with open(partial, "wb") as out:
                camt.finish(state.totals, out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def publish(self, expected_nets: Mapping[str, int] | None = None) -> dict[str, PartyFiles]:
        """Check nets, write and sign every manifest, then give every file its final name."""
        self.check_nets(expected_nets)
        with self._probe.phase("manifests"):
            results = {state.party.id: self._seal(state) for state in self._states}
        with self._probe.phase("publish"):
            publish_folders(results.values())
        return results

    def staged(self) -> list[StagedFolder]:
        """Every party's statements, hashed under their partial names (after write_formats)."""
        return [self._staged(state) for state in self._states]

    def _staged(self, state: _PartyState) -> StagedFolder:
        hashes = {CSV_NAME: state.csv_sha256}
        for name in (XLSX_NAME, CAMT_NAME):
            if name not in state.omitted:
                hashes[name] = file_sha256(_partial(state.directory / name))
        return StagedFolder(
            state.directory, state.party.id, state.meta, hashes, state.totals, dict(state.omitted)
        )

    def _seal(self, state: _PartyState) -> PartyFiles:
        return seal_folder(self._staged(state), signing_key=self._signing_key, key_id=self._key_id)

    def abort(self) -> None:
        """Close and delete every partial file."""
        if self._syncing is not None:
            self._syncing.shutdown(wait=True, cancel_futures=True)
            self._syncing = None
        for state in self._states:
            if state.handle is not None:
                state.handle.close()
                state.handle = None
            for path in state.partials():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


@dataclass(frozen=True)
class StagedFolder:
    """A party's statements written under their partial names, before its manifest: what a
    writer (a process, a Spark task) hands to whoever holds the signing key."""

    directory: Path
    party_id: str
    meta: StatementMeta
    hashes: Mapping[str, str]
    """File name -> SHA-256 hex of every file written (the manifest's list)."""
    totals: StatementTotals
    omitted: Mapping[str, str]


def check_nets(
    statements: Iterable[tuple[str, StatementTotals]], expected_nets: Mapping[str, int] | None
) -> None:
    """Raise StatementInputError if a party's statement nets otherwise than expected."""
    for party_id, totals in statements:
        want = None if expected_nets is None else expected_nets.get(party_id)
        if want is not None and totals.net != want:
            raise StatementInputError(
                f"statement of {party_id} nets {totals.net}, clearing says {want}"
            )


def seal_folder(folder: StagedFolder, *, signing_key: Ed25519PrivateKey, key_id: str) -> PartyFiles:
    """Write and sign a staged folder's manifest (under partial names, as its statements)."""
    directory = folder.directory
    manifest = manifest_bytes(
        folder.meta.batch_id, folder.party_id, key_id, dict(folder.hashes), folder.omitted
    )
    _partial(directory / MANIFEST_NAME).write_bytes(manifest)
    _partial(directory / SIGNATURE_NAME).write_bytes(sign_manifest(manifest, signing_key))
    return PartyFiles(
        directory=directory,
        file_id=statement_file_id(folder.meta, folder.party_id),
        hashes=MappingProxyType(dict(folder.hashes)),
        totals=folder.totals,
        omitted=MappingProxyType(dict(folder.omitted)),
    )


def seal_and_publish(
    staged: Sequence[StagedFolder],
    *,
    signing_key: Ed25519PrivateKey,
    key_id: str,
    expected_nets: Mapping[str, int] | None = None,
) -> dict[str, PartyFiles]:
    """Check nets, write and sign every staged folder's manifest, then give every file its
    final name (publish_folders): what the Spark engine's driver does with its tasks' folders."""
    check_nets(((f.party_id, f.totals) for f in staged), expected_nets)
    results = {f.party_id: seal_folder(f, signing_key=signing_key, key_id=key_id) for f in staged}
    publish_folders(results.values())
    return results


def write_statement_csv(
    path: Path,
    party: Party,
    lines: Iterable[ObligationLine] | Iterable[Chunk] | pd.DataFrame,
    meta: StatementMeta,
) -> StatementTotals:
    """Write only the CSV statement of `party` to `path`, atomically; returns its totals."""
    partial = _partial(path)
    totals = StatementTotals()
    engine = DetailFrames([party], meta)
    with _cleanup_on_error([partial]):
        with open(partial, "wb") as fh:
            writer = CsvStatementWriter(fh, party, meta)

            def write(pieces: Iterable[tuple[int, pd.DataFrame]]) -> None:
                for _owner, details in pieces:
                    totals.add_frame(details)
                    writer.write_records(detail_records(details, meta.currency))

            for chunk in line_chunks(lines):
                write(engine.feed(chunk))
            write(engine.close())
            writer.finish(totals)
        _publish([(partial, path)], path.parent)
    return totals


def write_party_files(
    directory: Path,
    party: Party,
    lines: Iterable[ObligationLine] | Iterable[Chunk] | pd.DataFrame,
    meta: StatementMeta,
    *,
    signing_key: Ed25519PrivateKey,
    key_id: str,
    expected_net: int | None = None,
    max_rows_per_sheet: int = EXCEL_MAX_ROWS,
    detail_limit: int = DETAIL_LIMIT,
) -> PartyFiles:
    """Write `party`'s statements, manifest and signature into `directory` in one pass.

    `lines`: ObligationLine objects, chunks of them, or frames with LINE_COLUMNS.
    """
    with BatchFiles(
        {party.id: directory},
        [party],
        {party.id: meta},
        signing_key=signing_key,
        key_id=key_id,
        detail_limit=detail_limit,
        max_rows_per_sheet=max_rows_per_sheet,
    ) as batch:
        for chunk in line_chunks(lines):
            batch.feed(chunk)
        batch.finish_csv()
        batch.write_formats()
        nets = None if expected_net is None else {party.id: expected_net}
        return batch.publish(nets)[party.id]


# ---------------------------------------------------------------------------------------------
# The files step of a batch: every folder in one pass over the window, optionally split
# across worker processes.

ChunkSource = Callable[[], Iterable[Chunk]]
"""Opens the window's lines, sorted, as a fresh iterator of chunks (called once per worker).
With two workers it is pickled into the files worker's process: a module-level function, a
functools.partial of one, or an object such as repository.WindowSource, never a lambda."""


@dataclass(frozen=True)
class BatchWrite:
    """What write_batch_folders produced: every party's files, and how many processes wrote."""

    parties: Mapping[str, PartyFiles]
    workers: int


def _shares(parties: Sequence[Party], workers: int) -> list[list[Party]]:
    # The platform's statement holds every line (about half of all detail lines of a batch);
    # the other parties together hold the other half: two balanced shares of the CSV pass.
    # The platform's goes to the calling process, which also runs the tap (clearing, in the
    # benchmark). The formats are not balanced by this split (the platform's are small above
    # DETAIL_LIMIT): write_batch_folders hands them out by lines after the CSVs. Only the
    # calling process takes the other's parties: its share is the platform alone, whose
    # formats are the heavy ones only on a day too small for two workers.
    platform = [p for p in parties if p.kind == OrgKind.PLATFORM]
    others = [p for p in parties if p.kind != OrgKind.PLATFORM]
    if workers < 2 or not platform or not others:
        return [list(parties)]
    return [platform, others]


@dataclass(frozen=True)
class _Share:
    """One process's part of the files pass; it pickles (the signing key as its raw bytes)."""

    source: ChunkSource
    folders: Mapping[str, Path]
    parties: Sequence[Party]
    metas: Mapping[str, StatementMeta]
    signing_key: bytes
    key_id: str
    expected_nets: Mapping[str, int] | None
    detail_limit: int
    max_rows_per_sheet: int
    probe: BatchProbe

    def batch(self) -> BatchFiles:
        """The BatchFiles of this share's parties."""
        return BatchFiles(
            self.folders,
            self.parties,
            self.metas,
            signing_key=Ed25519PrivateKey.from_private_bytes(self.signing_key),
            key_id=self.key_id,
            detail_limit=self.detail_limit,
            max_rows_per_sheet=self.max_rows_per_sheet,
            probe=self.probe,
        )

    def nets(self) -> Mapping[str, int] | None:
        """The nets this share's statements must have (a party without one: zero)."""
        if self.expected_nets is None:
            return None
        return {p.id: self.expected_nets.get(p.id, 0) for p in self.parties}


def _write_csvs(
    batch: BatchFiles,
    share: _Share,
    tap: Callable[[Chunk], None] | None = None,
    on_lines: Callable[[int], None] | None = None,
) -> list[_PartyState]:
    """One pass over the share's stream: every CSV of the share, nets checked; the parties
    handed off for their formats, heaviest first."""
    probe = share.probe
    handed = 0
    chunks = iter(line_chunks(share.source()))
    while True:
        with probe.phase("stream"):
            chunk = next(chunks, None)
        if chunk is None:
            break
        if tap is not None:
            with probe.phase("tap"):
                tap(chunk)
        batch.feed(chunk)
        handed += len(chunk)
        if on_lines is not None:
            on_lines(handed)
    batch.finish_csv()
    batch.check_nets(share.nets())
    return batch.handoff()


def _claim_all(claims: Synchronized[int], count: int) -> Iterator[int]:
    """Indices 0..count-1 not yet taken by the other process, each taken by this one."""
    while True:
        with claims.get_lock():
            index = claims.value
            claims.value = index + 1
        if index >= count:
            return
        yield index


def _write_claimed(
    batch: BatchFiles, handed: Sequence[_PartyState], indices: Iterable[int], *, adopt: bool
) -> dict[str, PartyFiles]:
    # A party is adopted before anything of its formats is written, so that a failure
    # removes its partial files (its CSV's too) with the batch's.
    written: dict[str, PartyFiles] = {}
    for index in indices:
        state = handed[index]
        if adopt:
            batch.adopt(state)
        written[state.party.id] = batch.write_party(state)
    return written


def _write_own(batch: BatchFiles, handed: Sequence[_PartyState]) -> dict[str, PartyFiles]:
    for state in handed:
        batch.adopt(state)
    return _write_claimed(batch, handed, range(len(handed)), adopt=False)


def _plain(written: Mapping[str, PartyFiles]) -> dict[str, PartyFiles]:
    # Plain mappings: a worker's result crosses a pipe.
    return {
        pid: PartyFiles(f.directory, f.file_id, dict(f.hashes), f.totals, dict(f.omitted))
        for pid, f in written.items()
    }


def _share_worker(share: _Share, claims: Synchronized[int], sender: Connection) -> None:
    """The files worker process: its share's CSVs, then its parties' formats until the calling
    process has taken the rest; sends its parties (after its CSVs), then its files and probe."""
    handing: threading.Thread | None = None
    try:
        with share.probe.phase("share"), share.batch() as batch:
            handed = _write_csvs(batch, share)
            # Pickled here, before this process changes any of them, and sent by a thread:
            # the calling process reads it only once its own stream is done, and this process
            # writes formats meanwhile.
            message = pickle.dumps(("csv", handed))
            handing = threading.Thread(target=sender.send_bytes, args=(message,))
            handing.start()
            claimed = _claim_all(claims, len(handed))
            written = _write_claimed(batch, handed, claimed, adopt=True)
            batch.synced()
        result: object = ("ok", (_plain(written), share.probe))
    except BaseException as exc:  # reported to the parent, which raises
        result = ("error", f"{type(exc).__name__}: {exc}")
    try:
        if handing is not None:
            handing.join()
        sender.send(result)
    finally:
        sender.close()


def _remove_partials(folders: Iterable[Path]) -> None:
    for folder in folders:
        if folder.is_dir():
            for path in folder.glob(".*.partial"):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def _from_worker(receiver: Connection, expect: str) -> object:
    try:
        status, payload = receiver.recv()
    except EOFError:
        status, payload = "error", "the files worker died"
    if status != expect:
        raise StatementInputError(f"files worker failed: {payload}")
    return payload


WORKER_START_METHOD: Final = "spawn"
"""How the files worker starts. Never fork: the batch may run inside `clearing serve`, whose
threads (and their locks, and the database pool's connections) a forked child would inherit
in whatever state they were at that instant."""


def write_batch_folders(
    source: ChunkSource,
    folders: Mapping[str, Path],
    parties: Sequence[Party],
    metas: Mapping[str, StatementMeta],
    *,
    signing_key: Ed25519PrivateKey,
    key_id: str,
    expected_nets: Mapping[str, int] | None = None,
    workers: int = 1,
    detail_limit: int = DETAIL_LIMIT,
    max_rows_per_sheet: int = EXCEL_MAX_ROWS,
    tap: Callable[[Chunk], None] | None = None,
    probe: BatchProbe = NO_PROBE,
) -> BatchWrite:
    """Write every party's folder (statements, manifest, signature) from the batch's lines.

    One pass over `source()` per worker: with `workers` >= 2 the CSVs are split in two
    shares (the platform's; every other party's), each written by its own process from its own
    stream of the window: the platform's in the calling process, the others' in a spawned
    worker (WORKER_START_METHOD; `source` and `probe` must pickle). Any other `workers`
    value writes everything in the calling process. The formats (XLSX, camt.053, manifest,
    signature; their cost follows a party's detail lines up to `detail_limit`) are then
    shared by lines, not by party: each process writes its own share's, heaviest first, and
    the calling process, its own done, takes the worker's parties it has not started yet.
    The files do not depend on the split: a statement depends only on its party's lines and
    meta. `tap` sees every chunk of the calling process's stream (e.g. a Clearer's `add`);
    the probe hears of the lines written (calling process) and of each party's XLSX and
    camt.053 (in whichever process writes it). When `expected_nets` is given, a party whose
    statement nets otherwise fails the batch; every party's net is checked, and every party's
    files written, before any file gets its final name (the calling process publishes all
    folders in one pass, publish_folders). On any failure every partial file is removed.
    """
    share_parties = _shares(parties, workers)
    shares = [
        _Share(
            source,
            folders,
            share,
            metas,
            signing_key.private_bytes_raw(),
            key_id,
            expected_nets,
            detail_limit,
            max_rows_per_sheet,
            probe,
        )
        for share in share_parties
    ]
    if len(shares) == 1:
        with probe.phase("share"), shares[0].batch() as batch:
            handed = _write_csvs(batch, shares[0], tap, probe.lines_written)
            written = _write_own(batch, handed)
            with probe.phase("publish"):
                batch.synced()
                publish_folders(written.values(), data_synced=True)
        return BatchWrite(MappingProxyType({p.id: written[p.id] for p in parties}), 1)
    context = multiprocessing.get_context(WORKER_START_METHOD)
    claims = context.Value("q", 0)
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_share_worker,
        args=(shares[1], claims, sender),
        name="settlement-files",
        daemon=True,
    )
    process.start()
    sender.close()
    try:
        with shares[0].batch() as batch:
            with probe.phase("share"):
                own = _write_csvs(batch, shares[0], tap, probe.lines_written)
                written = _write_own(batch, own)
                theirs = _from_worker(receiver, "csv")
                assert isinstance(theirs, list)
                stolen = _claim_all(claims, len(theirs))
                written.update(_write_claimed(batch, theirs, stolen, adopt=True))
                batch.synced()
            payload = _from_worker(receiver, "ok")
            process.join()
            assert isinstance(payload, tuple)
            child_written, child_probe = payload
            written.update(child_written)
            with probe.phase("publish"):
                publish_folders(written.values(), data_synced=True)
    except BaseException:
        if process.is_alive():
            process.kill()
        process.join()
        _remove_partials(folders[p.id] for p in share_parties[1])
        raise
    finally:
        receiver.close()
    probe.merge(child_probe)
    return BatchWrite(MappingProxyType({p.id: written[p.id] for p in parties}), 2)

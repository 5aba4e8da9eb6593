"""Writing a party's settlement folder: CSV, XLSX and camt.053 statements, signed manifest."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing.connection import Connection
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
    DetailFrames,
    StatementInputError,
    StatementMeta,
    StatementTotals,
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
            pieces = list(self._engine.feed(chunk))
        self._write(pieces)

    def _write(self, pieces: list[tuple[int, pd.DataFrame]]) -> None:
        if not pieces:
            return
        with self._probe.phase("csv"):
            # Format every party's rows of the chunk at once, then hand each party its slice.
            frame = pieces[0][1] if len(pieces) == 1 else pd.concat([d for _, d in pieces])
            records = detail_records(frame, self._currency)
            at = 0
            for owner, details in pieces:
                state = self._states[owner]
                state.totals.add_frame(details)
                assert state.writer is not None
                state.writer.write_records(records[at : at + len(details)])
                at += len(details)

    def finish_csv(self) -> None:
        """Write the last reference, summaries and trailers; close every CSV."""
        with self._probe.phase("details"):
            pieces = list(self._engine.close())
        self._write(pieces)
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
        for n, state in enumerate(self._states, start=1):
            self._write_formats(state)
            self._probe.party_written(n)

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
        with self._probe.phase("manifests"):
            return self._publish(expected_nets)

    def _publish(self, expected_nets: Mapping[str, int] | None) -> dict[str, PartyFiles]:
        return publish_folders(
            self.staged(),
            signing_key=self._signing_key,
            key_id=self._key_id,
            expected_nets=expected_nets,
        )

    def staged(self) -> list[StagedFolder]:
        """Every party's statements, hashed under their partial names (after write_formats)."""
        staged: list[StagedFolder] = []
        for state in self._states:
            hashes = {CSV_NAME: state.csv_sha256}
            for name in (XLSX_NAME, CAMT_NAME):
                if name not in state.omitted:
                    hashes[name] = file_sha256(_partial(state.directory / name))
            staged.append(
                StagedFolder(
                    state.directory,
                    state.party.id,
                    state.meta,
                    hashes,
                    state.totals,
                    dict(state.omitted),
                )
            )
        return staged

    def abort(self) -> None:
        """Close and delete every partial file."""
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


def publish_folders(
    staged: Sequence[StagedFolder],
    *,
    signing_key: Ed25519PrivateKey,
    key_id: str,
    expected_nets: Mapping[str, int] | None = None,
) -> dict[str, PartyFiles]:
    """Check nets, write and sign every staged folder's manifest, then give every file its
    final name (data first, manifest and signature last)."""
    for folder in staged:
        want = None if expected_nets is None else expected_nets.get(folder.party_id)
        if want is not None and folder.totals.net != want:
            raise StatementInputError(
                f"statement of {folder.party_id} nets {folder.totals.net}, clearing says {want}"
            )
    results: dict[str, PartyFiles] = {}
    for folder in staged:
        directory = folder.directory
        manifest = manifest_bytes(
            folder.meta.batch_id, folder.party_id, key_id, dict(folder.hashes), folder.omitted
        )
        _partial(directory / MANIFEST_NAME).write_bytes(manifest)
        _partial(directory / SIGNATURE_NAME).write_bytes(sign_manifest(manifest, signing_key))
        results[folder.party_id] = PartyFiles(
            directory=directory,
            file_id=statement_file_id(folder.meta, folder.party_id),
            hashes=MappingProxyType(dict(folder.hashes)),
            totals=folder.totals,
            omitted=MappingProxyType(dict(folder.omitted)),
        )
    for folder in staged:
        directory = folder.directory
        for name in folder.omitted:
            # A file of an earlier write into this folder must not outlive a manifest
            # that declares it omitted (verify refuses such a folder).
            (directory / name).unlink(missing_ok=True)
        names = [
            n
            for n in (CSV_NAME, XLSX_NAME, CAMT_NAME, MANIFEST_NAME, SIGNATURE_NAME)
            if n not in folder.omitted
        ]
        _publish([(_partial(directory / n), directory / n) for n in names], directory)
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
    # the other parties together hold the other half: two balanced shares. The platform's
    # goes to the calling process, which also runs the tap (clearing, in the benchmark).
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


def _write_share(
    share: _Share,
    tap: Callable[[Chunk], None] | None = None,
    on_lines: Callable[[int], None] | None = None,
) -> dict[str, PartyFiles]:
    probe = share.probe
    with (
        probe.phase("share"),
        BatchFiles(
            share.folders,
            share.parties,
            share.metas,
            signing_key=Ed25519PrivateKey.from_private_bytes(share.signing_key),
            key_id=share.key_id,
            detail_limit=share.detail_limit,
            max_rows_per_sheet=share.max_rows_per_sheet,
            probe=probe,
        ) as batch,
    ):
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
        batch.write_formats()
        nets = None
        if share.expected_nets is not None:
            nets = {p.id: share.expected_nets.get(p.id, 0) for p in share.parties}
        written = batch.publish(nets)
    # Plain mappings: a worker's result crosses a pipe.
    return {
        pid: PartyFiles(f.directory, f.file_id, dict(f.hashes), f.totals, dict(f.omitted))
        for pid, f in written.items()
    }


def _share_worker(share: _Share, sender: Connection) -> None:
    """The files worker process: write its share, send back its files and its probe."""
    try:
        result: object = ("ok", (_write_share(share), share.probe))
    except BaseException as exc:  # reported to the parent, which raises
        result = ("error", f"{type(exc).__name__}: {exc}")
    try:
        sender.send(result)
    finally:
        sender.close()


def _remove_partials(folders: Iterable[Path]) -> None:
    for folder in folders:
        if folder.is_dir():
            for path in folder.glob(".*.partial"):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


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

    One pass over `source()` per worker: with `workers` >= 2 the parties are split in two
    shares (the platform; every other party), each written by its own process from its own
    stream of the window: the platform's in the calling process, the others' in a spawned
    worker (WORKER_START_METHOD; `source` and `probe` must pickle). Any other `workers`
    value writes everything in the calling process.
    The files do not depend on the split: a statement depends only on its party's lines and
    meta. `tap` sees every chunk of the calling process's stream (e.g. a Clearer's `add`);
    the probe hears of the lines written (calling process) and of each party's XLSX and
    camt.053 (in whichever process writes it). When `expected_nets`
    is given, a party whose statement nets otherwise fails the batch before any file gets
    its final name in that share. On any failure every partial file is removed (a share that
    already published keeps its files: callers write into a staging folder, as the service).
    """
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
        for share in _shares(parties, workers)
    ]
    if len(shares) == 1:
        return BatchWrite(_write_share(shares[0], tap, probe.lines_written), 1)
    context = multiprocessing.get_context(WORKER_START_METHOD)
    receiver, sender = context.Pipe(duplex=False)
    child_parties = shares[1].parties
    process = context.Process(
        target=_share_worker, args=(shares[1], sender), name="settlement-files", daemon=True
    )
    process.start()
    sender.close()
    try:
        written = _write_share(shares[0], tap, probe.lines_written)
        try:
            status, payload = receiver.recv()
        except EOFError:
            status, payload = "error", "the files worker died"
        process.join()
        if status != "ok":
            raise StatementInputError(f"files worker failed: {payload}")
        child_written, child_probe = payload
    except BaseException:
        if process.is_alive():
            process.kill()
        process.join()
        _remove_partials(folders[p.id] for p in child_parties)
        raise
    finally:
        receiver.close()
    probe.merge(child_probe)
    written.update(child_written)
    return BatchWrite(MappingProxyType({p.id: written[p.id] for p in parties}), 2)

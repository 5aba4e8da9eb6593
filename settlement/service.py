"""The daily settlement batch: open, close the window, net, write files, publish. Resumable.

States, each transition committed on its own before the next step starts:

    open ──> closing ──> netted ──> files_written ──> published
                    └──> exported ──┘        (the Spark engine)

- open: the batch row exists (id, window, sequence, created_at = the files' generated_at).
- closing: the ledger's control totals of the window (count, amount, points) are frozen.
- exported (Spark engine only): the window is written out as Parquet (window_export) and its
  count and sums equal the frozen control totals; the engine reads it instead of the ledger.
- netted: the lines were streamed and netted, every invariant held, positions are stored.
- files_written: every party's folder is complete in a staging folder and its hashes stored.

From closing, one pass over the window (`net_and_write`: files.write_batch_folders, two
processes for large batches, with the calling process's stream tapped into the Clearer) nets
the window and writes every folder into the staging folder; after the invariants hold, the
positions are committed (netted), then the files' hashes (files_written). A batch resumed at
netted writes the files again from the stored positions (`_write_files`).
- published: the staging folder was renamed into place, re-verified, and the batch is final.

The engine (`settings.settlement_engine`: pandas, the default, or spark) only decides who
nets and writes; both give the same positions and byte-identical files, so a batch started on
one engine may be resumed on the other.

A rerun after a crash at any point resumes from the last committed state; every step before
publication can be redone and gives the same bytes (files depend only on stored values and the
lines, and Ed25519 signatures are deterministic). A published batch is never touched again.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import Engine, delete, insert
from sqlalchemy.orm import Session

from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.errors import ClearingError, Conflict, Kind, NotFound
from clearing.core.money import exponent, parse_minor
from clearing.core.timeutil import business_date_of, business_window
from clearing.web.platform_key import load_or_create
from issuers.models import Organisation
from settlement import repository as repo
from settlement.files import (
    CSV_NAME,
    BatchWrite,
    ChunkSource,
    file_sha256,
    fsync_path,
    write_batch_folders,
)
from settlement.lines import Party, PartyKind
from settlement.lock import runner_lock
from settlement.manifest import MANIFEST_NAME, SIGNATURE_NAME
from settlement.models import SettlementBatch, SettlementFile, SettlementPosition
from settlement.netting import Clearer, Clearing, Totals, check_invariants
from settlement.probe import NO_PROBE, BatchProbe
from settlement.schemas import BatchOut, PositionOut
from settlement.statement import StatementMeta, statement_file_id
from settlement.verify import verify_directory
from settlement.window_export import (
    WindowExportMismatch,
    export_window,
    exported_totals,
    window_path,
)


class BatchNotDue(Conflict):
    code = "batch_not_due"
    title = "The business day is not closed yet"


class EarlierBatchOpen(Conflict):
    code = "earlier_batch_open"
    title = "An earlier batch of this currency is not published"


class EarlierBatchMissing(Conflict):
    code = "earlier_batch_missing"
    title = "An earlier business day of this currency has not been settled"


class NoSettlementAccount(Conflict):
    code = "no_settlement_account"
    title = "A party in the window has no settlement (position) account"


class PlatformMissing(Conflict):
    code = "platform_missing"
    title = "The platform organisation is not registered"


class SettlementInvariantBroken(ClearingError):
    kind = Kind.OUR_FAULT
    code = "settlement_invariant"
    title = "A settlement invariant does not hold; nothing was published"


class BatchNotFound(NotFound):
    code = "batch_not_found"
    title = "No such settlement batch"


def batch_id_of(currency: str, day: date) -> str:
    """The batch id of a business day: deterministic, so reruns and copies agree."""
    return f"SB-{currency}-{day:%Y%m%d}"


# running a batch ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    engine: Engine
    settings: Settings
    now: datetime
    batch_id: str
    probe: BatchProbe


def run_batch(
    engine: Engine,
    business_date: date,
    currency: str,
    now: datetime,
    settings: Settings,
    *,
    probe: BatchProbe = NO_PROBE,
) -> BatchOut:
    """Run, or resume, the batch of `business_date` in `currency`; a published batch is returned
    as it is. Holds the runner lock throughout: a second runner gets BatchRunning. `probe`
    hears of every step (a kill test stops the process at one)."""
    exponent(currency)
    now = repo.utc(now)
    with runner_lock(engine, settings.settlement_dir):
        batch_id = _open(engine, business_date, currency, now, settings, probe)
        ctx = _Context(engine, settings, now, batch_id, probe)
        spark = settings.settlement_engine == "spark"
        steps = {
            "open": _close,
            "closing": _export if spark else _net_and_write,
            "exported": _net_and_write,
            "netted": _write_files,
            "files_written": _publish,
        }
        state = _state(ctx)
        try:
            while state != "published":
                state = steps[state](ctx)
        except Exception as error:
            _record_error(ctx, error)
            raise
    with transaction(engine) as session:
        return batch_out(session, _batch(session, batch_id), settings)


def _state(ctx: _Context) -> str:
    with transaction(ctx.engine) as session:
        return _batch(session, ctx.batch_id).state


def _batch(session: Session, batch_id: str) -> SettlementBatch:
    batch = repo.batch_by_id(session, batch_id)
    if batch is None:
        raise BatchNotFound(f"no batch {batch_id}")
    return batch


def _record_error(ctx: _Context, error: Exception) -> None:
    with contextlib.suppress(Exception), transaction(ctx.engine) as session:
        batch = _batch(session, ctx.batch_id)
        batch.error = f"{type(error).__name__}: {error}"[:4000]
        batch.updated_at = ctx.now


def _open(
    engine: Engine,
    day: date,
    currency: str,
    now: datetime,
    settings: Settings,
    probe: BatchProbe,
) -> str:
    """Check the request and open the batch; nothing is written unless every check passes."""
    with transaction(engine) as session:
        existing = repo.get_batch(session, currency, day)
        if existing is not None:
            if existing.state != "published":
                existing.attempts += 1
            return existing.id
        start, end = business_window(day, settings.zone, settings.cutoff)
        if now < end:
            raise BatchNotDue(
                f"business day {day} closes at {end.isoformat()}; it is {now.isoformat()}",
                window_end=end.isoformat(),
            )
        start = _chained_start(session, currency, day, start, settings)
        _check_parties(session, currency, start, end)
        batch = SettlementBatch(
            id=batch_id_of(currency, day),
            currency=currency,
            business_date=day,
            zone=settings.zone,
            cutoff=settings.cutoff,
            window_start=start,
            window_end=end,
            sequence=repo.next_sequence(session, currency),
            state="open",
            created_at=now,
            updated_at=now,
            directory=f"{currency}/{day.isoformat()}",
            attempts=1,
        )
        session.add(batch)
        session.flush()
        batch_id = batch.id
    probe.reached("open")
    return batch_id


def _chained_start(
    session: Session, currency: str, day: date, start: datetime, settings: Settings
) -> datetime:
    """Where the day's window starts: right after the last batch; refused when a day is skipped."""
    earlier = repo.unpublished_before(session, currency, day)
    if earlier:
        stuck = earlier[0]
        # Say why the earlier day is stuck: its own recorded failure, not just its state.
        why = f"; its last attempt ({stuck.attempts}) failed: {stuck.error}" if stuck.error else ""
        raise EarlierBatchOpen(
            f"batch {stuck.id} ({stuck.state}) must be published first{why}",
            batch=stuck.id,
            batch_state=stuck.state,
            batch_error=stuck.error,
        )
    latest = repo.latest_batch(session, currency)
    if latest is not None:
        expected = latest.business_date + timedelta(days=1)
        if day != expected:
            raise EarlierBatchMissing(
                f"the next {currency} business day to settle is {expected}, not {day}",
                next_date=expected.isoformat(),
            )
        # Windows chain: a changed zone or cut-off takes effect without gap or overlap.
        start = repo.utc(latest.window_end)
    else:
        unsettled = repo.obligations_before(session, currency, start)
        if unsettled:
            first = repo.earliest_obligation(session, currency)
            assert first is not None
            first_day = business_date_of(first, settings.zone, settings.cutoff)
            raise EarlierBatchMissing(
                f"{unsettled} {currency} obligation(s) were booked before {day}; "
                f"settle from {first_day} on",
                next_date=first_day.isoformat(),
            )
    return start


def _check_parties(session: Session, currency: str, start: datetime, end: datetime) -> None:
    """The platform exists, and every party of the window has a position account to settle."""
    if repo.platform_organisation(session) is None:
        raise PlatformMissing("register the platform organisation first")
    parties = repo.window_parties(session, currency, start, end)
    missing = parties - repo.position_accounts(session, currency, parties)
    if missing:
        raise NoSettlementAccount(
            f"{len(missing)} part(ies) in the window have no {currency} position account: "
            + ", ".join(sorted(str(m) for m in missing)[:5]),
            parties=sorted(str(m) for m in missing),
        )


def _close(ctx: _Context) -> str:
    """Freeze the ledger's control totals of the window."""
    with transaction(ctx.engine) as session:
        batch = _batch(session, ctx.batch_id)
        start, end = repo.utc(batch.window_start), repo.utc(batch.window_end)
        previous = repo.get_batch(session, batch.currency, batch.business_date - timedelta(days=1))
        if previous is not None:
            # Nothing may be booked into a window once it is settled; if it was, stop here.
            then = repo.window_totals(
                session,
                previous.currency,
                repo.utc(previous.window_start),
                repo.utc(previous.window_end),
            )
            stored = Totals(
                previous.amount_total or 0, previous.line_count or 0, previous.points_total or 0
            )
            if then != stored:
                raise SettlementInvariantBroken(
                    f"settled window of {previous.id} changed: ledger now holds {then}, "
                    f"the batch settled {stored}"
                )
        totals = repo.window_totals(session, batch.currency, start, end)
        batch.line_count = totals.count
        batch.amount_total = totals.amount
        batch.points_total = totals.points
        batch.state = "closing"
        batch.updated_at = ctx.now
    ctx.probe.reached("closing")
    return "closing"


def _export(ctx: _Context) -> str:
    """Write the window out as Parquet for the Spark engine, checked against the control
    totals frozen at closing."""
    _exported_window(ctx)
    with transaction(ctx.engine) as session:
        batch = _batch(session, ctx.batch_id)
        batch.state = "exported"
        batch.updated_at = ctx.now
    ctx.probe.reached("exported")
    return "exported"


def _exported_window(ctx: _Context) -> Path:
    """The batch's exported window: written (and checked) unless a checked export exists."""
    with transaction(ctx.engine) as session:
        batch = _batch(session, ctx.batch_id)
        currency, day = batch.currency, batch.business_date
        start, end = repo.utc(batch.window_start), repo.utc(batch.window_end)
        expected = Totals(batch.amount_total or 0, batch.line_count or 0, batch.points_total or 0)
    target = window_path(ctx.settings.settlement_dir, currency, day)
    if target.is_dir():
        # Only a checked export ever gets this name: one that disagrees now was changed since.
        got = exported_totals(target)
        if got != expected:
            raise SettlementInvariantBroken(
                f"the exported window {target} holds {got}, the ledger's control totals are "
                f"{expected}: it changed after it was checked; remove it to export it again"
            )
        return target
    source = repo.WindowSource(ctx.engine, currency, start, end, ctx.settings.settlement_reader)
    try:
        export_window(source(), target, expected)
    except WindowExportMismatch as error:
        raise SettlementInvariantBroken(str(error)) from error
    return target


@dataclass(frozen=True)
class NetAndWrite:
    """What one pass over a window produced: its clearing, every party's files, and every
    invariant that does not hold (empty: all hold)."""

    clearing: Clearing
    written: BatchWrite
    errors: list[str]


def net_and_write(
    source: ChunkSource,
    folders: dict[str, Path],
    parties: list[Party],
    metas: dict[str, StatementMeta],
    *,
    signing_key: Ed25519PrivateKey,
    key_id: str,
    expected: dict[str, Totals],
    platform_id: str,
    workers: int = 1,
    probe: BatchProbe = NO_PROBE,
) -> NetAndWrite:
    """Net the window and write every party's folder in one pass over `source()`.

    The calling process's stream (which always carries every line: it writes the platform's
    statement) is tapped into a Clearer; the files go where `folders` says (the service: the
    batch's staging folder). Then the invariants: netting (positions sum to zero per currency,
    gross totals equal the lines read, the platform nets its fee income, no anomaly), the lines
    read equal `expected` (the ledger's control totals), every party with a position has a
    statement and each statement's net equals its party's position. What `run_batch` runs
    for its netting and files pass, and what benchmarks/settle_bench.py times.
    """
    # The ledger's primary key (entry_id, seq) proves uniqueness: no duplicate-hash pass.
    clearer = Clearer(source_unique=True)
    written = write_batch_folders(
        source,
        folders,
        parties,
        metas,
        signing_key=signing_key,
        key_id=key_id,
        workers=workers,
        tap=clearer.add,
        probe=probe,
    )
    clearing = clearer.result()
    errors = batch_errors(
        clearing, written, parties, folders, expected=expected, platform_id=platform_id
    )
    return NetAndWrite(clearing, written, errors)


def batch_errors(
    clearing: Clearing,
    written: BatchWrite,
    parties: Sequence[Party],
    folders: Mapping[str, Path],
    *,
    expected: Mapping[str, Totals],
    platform_id: str,
) -> list[str]:
    """Every invariant of a netted and written batch that does not hold, whichever engine
    netted and wrote it: the clearing's own (check_invariants, against the ledger's control
    totals), every party with a position has a statement, each statement nets to its
    party's position."""
    errors = check_invariants(clearing, expected=expected, platform_id=platform_id)
    currencies = {p.currency for p in parties}
    nets = {p: v for (c, p), v in clearing.positions.items() if c in currencies}
    errors.extend(
        f"party {p} nets {v} but has no statement" for p, v in nets.items() if p not in folders
    )
    for party in parties:
        got = written.parties[party.id].totals.net
        if got != nets.get(party.id, 0):
            errors.append(
                f"statement of {party.id} nets {got}, its position is {nets.get(party.id, 0)}"
            )
    return errors


def _net_and_write(ctx: _Context) -> str:
    """One pass over the window: net it and write every party's folder into the staging
    folder; check every invariant; commit the positions (netted), then the files' hashes
    (files_written). A crash before `netted` is committed leaves only the staging folder,
    which the rerun deletes and writes again (same bytes); a crash between the two commits
    resumes at `netted`, which writes the files again from the stored positions."""
    with transaction(ctx.engine) as session:
        batch = _batch(session, ctx.batch_id)
        currency, day = batch.currency, batch.business_date
        start, end = repo.utc(batch.window_start), repo.utc(batch.window_end)
        ledger_totals = Totals(
            batch.amount_total or 0, batch.line_count or 0, batch.points_total or 0
        )
        line_count = batch.line_count or 0
        final = batch_directory(ctx.settings, batch)
        directory = batch.directory
        platform = repo.platform_organisation(session)
        if platform is None:
            raise PlatformMissing("register the platform organisation first")
        platform_id = platform.id
        party_ids = repo.window_parties(session, currency, start, end) | {platform_id}
        orgs = repo.organisations(session, party_ids)
        unknown = [f"party {p} is not a registered organisation" for p in party_ids - set(orgs)]
        if unknown:
            raise SettlementInvariantBroken("; ".join(unknown), errors=unknown)
        ordered = sorted(party_ids, key=str)
        metas: dict[str, StatementMeta] = {}
        for org_id in ordered:
            previous = repo.last_statement(session, org_id, currency, day)
            sequence = previous.statement_sequence + 1 if previous else 1
            metas[str(org_id)] = _meta(batch, sequence, previous.file_id if previous else None)
    parties = [
        Party(str(o), orgs[o].name, cast(PartyKind, orgs[o].kind), currency) for o in ordered
    ]
    spark = ctx.settings.settlement_engine == "spark"
    window = _exported_window(ctx) if spark else None
    staging = _fresh_staging(final)
    key = load_or_create(ctx.settings.platform_key_path)
    folders = {p.id: staging / p.id for p in parties}
    expected = {currency: ledger_totals} if ledger_totals.count else {}
    if window is not None:
        from settlement.spark_engine import spark_net_and_write

        result = spark_net_and_write(
            window,
            folders,
            parties,
            metas,
            signing_key=key.private_key,
            key_id=key.keyid,
            expected=expected,
            platform_id=str(platform_id),
            master=ctx.settings.spark_master,
            probe=ctx.probe,
        )
    else:
        result = net_and_write(
            repo.WindowSource(ctx.engine, currency, start, end, ctx.settings.settlement_reader),
            folders,
            parties,
            metas,
            signing_key=key.private_key,
            key_id=key.keyid,
            expected=expected,
            platform_id=str(platform_id),
            workers=_workers(line_count, ctx.settings.settlement_workers),
            probe=ctx.probe,
        )
    nets = {uuid.UUID(p): v for (c, p), v in result.clearing.positions.items() if c == currency}
    errors = result.errors + _nets_against_ledger(ctx, currency, start, end, nets)
    if errors:
        shutil.rmtree(staging, ignore_errors=True)
        raise SettlementInvariantBroken("; ".join(errors[:20]), errors=errors[:100])
    with transaction(ctx.engine) as session:
        batch = _batch(session, ctx.batch_id)
        for org_id in ordered:
            session.add(_position(batch, orgs[org_id], metas[str(org_id)], nets.get(org_id, 0)))
        batch.fee_income = result.clearing.fee_income.get(currency, 0)
        batch.state = "netted"
        batch.updated_at = ctx.now
    ctx.probe.reached("netted")
    rows = _file_rows(
        ctx.batch_id,
        staging,
        directory,
        [(org_id, nets.get(org_id, 0)) for org_id in ordered],
        result.written,
    )
    return _files_written(ctx, rows)


def _nets_against_ledger(
    ctx: _Context, currency: str, start: datetime, end: datetime, nets: dict[uuid.UUID, int]
) -> list[str]:
    """Each party's net must be what its position account moved in the window."""
    with transaction(ctx.engine) as session:
        ledger = repo.ledger_positions(session, currency, start, end)
    return [
        f"{currency}: {party_id} nets {nets.get(party_id, 0)} but its position "
        f"account moved {ledger.get(party_id, 0)} in the window"
        for party_id in sorted(set(nets) | set(ledger), key=str)
        if nets.get(party_id, 0) != ledger.get(party_id, 0)
    ]


def _position(
    batch: SettlementBatch, org: Organisation, meta: StatementMeta, net: int
) -> SettlementPosition:
    """The netted position of one party, with the statement it will get."""
    return SettlementPosition(
        batch_id=batch.id,
        org_id=org.id,
        party_kind=org.kind,
        party_name=org.name,
        net=net,
        statement_sequence=meta.sequence,
        file_id=statement_file_id(meta, str(org.id)),
        previous_file_id=meta.previous_file_id,
    )


def _meta(batch: SettlementBatch, sequence: int, previous_file_id: str | None) -> StatementMeta:
    return StatementMeta(
        batch_id=batch.id,
        settlement_date=batch.business_date,
        window_start=repo.utc(batch.window_start),
        window_end=repo.utc(batch.window_end),
        zone=batch.zone,
        currency=batch.currency,
        generated_at=repo.utc(batch.created_at),
        sequence=sequence,
        previous_file_id=previous_file_id,
    )


def batch_directory(settings: Settings, batch: SettlementBatch) -> Path:
    """Where the batch's published folder lives."""
    return settings.settlement_dir / batch.directory


def _staging(final: Path) -> Path:
    return final.with_name(f".{final.name}.staging")


PARALLEL_FROM = 200_000
"""Lines from which a batch's files are written by two processes, unless a setting says."""


def _workers(line_count: int, setting: int | None) -> int:
    """Processes writing a batch's files (1 or 2): `settlement_workers`, else by the day's size."""
    if setting is not None:
        return 2 if setting >= 2 else 1
    return 2 if line_count >= PARALLEL_FROM and (os.cpu_count() or 1) >= 2 else 1


def _write_files(ctx: _Context) -> str:
    """Resuming at netted (killed between the two commits of `_net_and_write`): write every
    party's folder again from the stored positions into a fresh staging folder, in one pass,
    then record the hashes. Same bytes: the files depend only on the lines and stored values."""
    with transaction(ctx.engine) as session:
        batch = _batch(session, ctx.batch_id)
        positions = repo.positions(session, batch.id)
        final = batch_directory(ctx.settings, batch)
        start, end = repo.utc(batch.window_start), repo.utc(batch.window_end)
        currency, directory = batch.currency, batch.directory
        line_count = batch.line_count or 0
        metas = {
            str(p.org_id): _meta(batch, p.statement_sequence, p.previous_file_id) for p in positions
        }
    spark = ctx.settings.settlement_engine == "spark"
    window = _exported_window(ctx) if spark else None
    staging = _fresh_staging(final)
    key = load_or_create(ctx.settings.platform_key_path)
    parties = [
        Party(str(p.org_id), p.party_name, cast(PartyKind, p.party_kind), currency)
        for p in positions
    ]
    folders = {p.id: staging / p.id for p in parties}
    expected_nets = {str(p.org_id): p.net for p in positions}
    if window is not None:
        from settlement.spark_engine import spark_write_folders

        written = spark_write_folders(
            window,
            folders,
            parties,
            metas,
            signing_key=key.private_key,
            key_id=key.keyid,
            expected_nets=expected_nets,
            master=ctx.settings.spark_master,
            probe=ctx.probe,
        )
    else:
        written = write_batch_folders(
            repo.WindowSource(ctx.engine, currency, start, end, ctx.settings.settlement_reader),
            folders,
            parties,
            metas,
            signing_key=key.private_key,
            key_id=key.keyid,
            expected_nets=expected_nets,
            workers=_workers(line_count, ctx.settings.settlement_workers),
            probe=ctx.probe,
        )
    rows = _file_rows(
        ctx.batch_id, staging, directory, [(p.org_id, p.net) for p in positions], written
    )
    return _files_written(ctx, rows)


def _fresh_staging(final: Path) -> Path:
    """An empty staging folder for the batch's files."""
    staging = _staging(final)
    # Neither folder is published while the batch is not: an earlier attempt's leftovers go.
    for leftover in (staging, final):
        if leftover.exists():
            shutil.rmtree(leftover)
    staging.mkdir(parents=True)
    return staging


def _file_rows(
    batch_id: str,
    staging: Path,
    directory: str,
    nets: list[tuple[uuid.UUID, int]],
    written: BatchWrite,
) -> list[dict[str, object]]:
    """The settlement_files rows of every party's folder; each statement nets to its position."""
    rows: list[dict[str, object]] = []
    for org_id, net in nets:
        party_id = str(org_id)
        result = written.parties[party_id]
        if result.totals.net != net:
            raise SettlementInvariantBroken(
                f"statement of {party_id} nets {result.totals.net}, position is {net}"
            )
        folder = staging / party_id
        for name in sorted([*result.hashes, MANIFEST_NAME, SIGNATURE_NAME]):
            path = folder / name
            rows.append(
                {
                    "batch_id": batch_id,
                    "org_id": org_id,
                    "name": name,
                    "sha256": result.hashes.get(name) or file_sha256(path),
                    "size": path.stat().st_size,
                    "path": f"{directory}/{party_id}/{name}",
                }
            )
    return rows


def _files_written(ctx: _Context, rows: list[dict[str, object]]) -> str:
    with transaction(ctx.engine) as session:
        session.execute(delete(SettlementFile).where(SettlementFile.batch_id == ctx.batch_id))
        if rows:
            session.execute(insert(SettlementFile), rows)
        batch = _batch(session, ctx.batch_id)
        batch.state = "files_written"
        batch.updated_at = ctx.now
    ctx.probe.reached("files_written")
    return "files_written"


def csv_trailer_net(path: Path, currency: str) -> int:
    """The net position stated in a CSV statement's trailer record."""
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 4096))
        tail = fh.read().decode("utf-8", errors="replace")
    last = tail.rstrip("\r\n").rsplit("\r\n", 1)[-1]
    record = next(csv.reader(io.StringIO(last)))
    if not record or record[0] != "T":
        raise ValueError(f"{path.name}: last record is not a trailer")
    return parse_minor(record[5], currency)


def _publish(ctx: _Context) -> str:
    """Move the staging folder into place, verify everything once more, publish."""
    with transaction(ctx.engine) as session:
        batch = _batch(session, ctx.batch_id)
        final = batch_directory(ctx.settings, batch)
        currency = batch.currency
        positions = repo.positions(session, batch.id)
        recorded = repo.files(session, batch.id)
    staging = _staging(final)
    if staging.exists():
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
        with contextlib.suppress(OSError):
            fsync_path(final.parent)
    ctx.probe.reached("renamed")
    public_key = load_or_create(ctx.settings.platform_key_path).public_key
    errors = check_published_files(
        ctx.settings.settlement_dir, currency, positions, recorded, public_key
    )
    if errors:
        raise SettlementInvariantBroken("; ".join(errors[:20]), errors=errors[:100])
    with transaction(ctx.engine) as session:
        batch = _batch(session, ctx.batch_id)
        batch.state = "published"
        batch.published_at = ctx.now
        batch.updated_at = ctx.now
        batch.error = None
    return "published"


def check_published_files(
    root: Path,
    currency: str,
    positions: list[SettlementPosition],
    recorded: list[SettlementFile],
    public_key: Ed25519PublicKey,
) -> list[str]:
    """Every file as recorded, every folder verifies, every statement nets to its position."""
    errors: list[str] = []
    if sum(p.net for p in positions) != 0:
        errors.append(f"{currency}: positions sum to {sum(p.net for p in positions)}, not 0")
    for row in recorded:
        path = root / row.path
        if not path.is_file():
            errors.append(f"{row.path} is missing")
        elif file_sha256(path) != row.sha256:
            errors.append(f"{row.path} differs from the hash recorded when it was written")
    folders = {
        p.org_id: (root / r.path).parent
        for p in positions
        for r in recorded
        if r.org_id == p.org_id
    }
    for position in positions:
        folder = folders.get(position.org_id)
        if folder is None:
            errors.append(f"no files recorded for {position.org_id}")
            continue
        errors.extend(f"{position.org_id}: {e}" for e in verify_directory(folder, public_key))
        try:
            net = csv_trailer_net(folder / CSV_NAME, currency)
        except (OSError, ValueError) as exc:
            errors.append(f"{position.org_id}: {exc}")
            continue
        if net != position.net:
            errors.append(f"{position.org_id}: statement nets {net}, position is {position.net}")
    return errors


# reading ------------------------------------------------------------------------------------


def batch_out(session: Session, batch: SettlementBatch, settings: Settings) -> BatchOut:
    """A batch with its positions, its folder as an absolute path."""
    return BatchOut(
        id=batch.id,
        currency=batch.currency,
        business_date=batch.business_date,
        zone=batch.zone,
        window_start=repo.utc(batch.window_start),
        window_end=repo.utc(batch.window_end),
        sequence=batch.sequence,
        state=batch.state,
        created_at=repo.utc(batch.created_at),
        published_at=None if batch.published_at is None else repo.utc(batch.published_at),
        line_count=batch.line_count,
        amount_total=batch.amount_total,
        points_total=batch.points_total,
        fee_income=batch.fee_income,
        directory=str(batch_directory(settings, batch).resolve()),
        error=batch.error,
        positions=[position_out(p) for p in repo.positions(session, batch.id)],
    )


def position_out(position: SettlementPosition) -> PositionOut:
    """A position as shown."""
    return PositionOut(
        org_id=position.org_id,
        party_kind=position.party_kind,
        party_name=position.party_name,
        net=position.net,
        file_id=position.file_id,
        statement_sequence=position.statement_sequence,
        previous_file_id=position.previous_file_id,
    )


def verify_tree(directory: Path, public_key: Ed25519PublicKey) -> tuple[int, list[str]]:
    """Verify every party folder (one holding a manifest) under `directory`.

    Returns how many folders were checked and every problem found, prefixed by the folder.
    """
    folders = sorted(
        {p.parent for p in directory.rglob(MANIFEST_NAME) if not _hidden(p, directory)}
    )
    errors: list[str] = []
    for folder in folders:
        errors.extend(f"{folder}: {e}" for e in verify_directory(folder, public_key))
    if not folders:
        errors.append(f"{directory}: no {MANIFEST_NAME} found")
    return len(folders), errors


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)

"""Every query of settlement: batches, window totals, the streamed obligation lines, positions."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import BigInteger, Engine, Select, and_, func, or_, select, union
from sqlalchemy.orm import Session

from clearing.core.db import is_postgres, make_engine
from clearing.core.errors import ClearingError, Kind
from clearing.core.kinds import OrgKind
from clearing.core.ledger import POSITION, money_asset
from clearing.core.models import Account, JournalEntry, Obligation, Posting
from clearing.core.timeutil import aware
from issuers.models import Organisation
from settlement.lines import LINE_COLUMNS, normalize_frame
from settlement.models import SettlementBatch, SettlementFile, SettlementPosition
from settlement.netting import Totals

CHUNK_ROWS = 50_000
"""Obligation lines per chunk read from the database: memory stays bounded whatever the day."""
COPY_CHUNK_ROWS = 500_000
"""Lines per chunk of the PostgreSQL COPY reader (parsed in C: larger chunks, fewer calls)."""


def utc(moment: datetime) -> datetime:
    """`moment` as an aware UTC datetime (SQLite hands back naive UTC, PostgreSQL its session zone)."""
    return aware(moment).astimezone(UTC)


# batches ------------------------------------------------------------------------------------


def get_batch(session: Session, currency: str, business_date: date) -> SettlementBatch | None:
    """The batch of one business day of one currency, if it was opened."""
    return session.execute(
        select(SettlementBatch).where(
            SettlementBatch.currency == currency, SettlementBatch.business_date == business_date
        )
    ).scalar_one_or_none()


def batch_by_id(session: Session, batch_id: str) -> SettlementBatch | None:
    """A batch by its id."""
    return session.get(SettlementBatch, batch_id)


def unpublished_before(
    session: Session, currency: str, business_date: date
) -> list[SettlementBatch]:
    """Batches of `currency` for earlier days that are not published yet."""
    return list(
        session.execute(
            select(SettlementBatch)
            .where(
                SettlementBatch.currency == currency,
                SettlementBatch.business_date < business_date,
                SettlementBatch.state != "published",
            )
            .order_by(SettlementBatch.business_date)
        ).scalars()
    )


def latest_batch(session: Session, currency: str) -> SettlementBatch | None:
    """The batch of `currency` with the latest business date, whatever its state."""
    return session.execute(
        select(SettlementBatch)
        .where(SettlementBatch.currency == currency)
        .order_by(SettlementBatch.business_date.desc())
        .limit(1)
    ).scalar_one_or_none()


def next_sequence(session: Session, currency: str) -> int:
    """The sequence number of the next batch of `currency`."""
    current = session.execute(
        select(func.max(SettlementBatch.sequence)).where(SettlementBatch.currency == currency)
    ).scalar_one()
    return int(current or 0) + 1


def list_batches(
    session: Session,
    *,
    org_id: uuid.UUID | None = None,
    after: tuple[date, str] | None = None,
    limit: int = 50,
    states: Sequence[str] | None = None,
) -> list[SettlementBatch]:
    """Batches, newest business date first; only those where `org_id` has a position if given."""
    query = select(SettlementBatch)
    if org_id is not None:
        query = query.where(
            SettlementBatch.id.in_(
                select(SettlementPosition.batch_id).where(SettlementPosition.org_id == org_id)
            )
        )
    if states is not None:
        query = query.where(SettlementBatch.state.in_(states))
    if after is not None:
        query = query.where(
            or_(
                SettlementBatch.business_date < after[0],
                and_(SettlementBatch.business_date == after[0], SettlementBatch.id > after[1]),
            )
        )
    query = query.order_by(SettlementBatch.business_date.desc(), SettlementBatch.id).limit(limit)
    return list(session.execute(query).scalars())


def settlement_currencies(session: Session) -> list[str]:
    """Every currency the platform may settle in: of organisations and of obligations."""
    rows = session.execute(
        union(
            select(Organisation.currency.label("c")),
            select(Obligation.currency.label("c")).distinct(),
        )
    ).scalars()
    return sorted({str(c) for c in rows})


# the window ---------------------------------------------------------------------------------


def _in_window(currency: str, start: datetime, end: datetime) -> Any:
    return and_(
        Obligation.currency == currency,
        Obligation.booked_at >= utc(start),
        Obligation.booked_at < utc(end),
    )


def _exact_sums(session: Session, column: Any) -> list[Any]:
    """SUM(column) that cannot overflow, as select columns to add up in Python.

    PostgreSQL sums bigint into numeric. SQLite's SUM raises "integer overflow" past 2^63 (and
    TOTAL is a float), so there the column is summed in two halves whose sums stay in range
    for any window under 2^31 rows: v / 2^32 and v % 2^32 (both truncate toward zero, so
    hi * 2^32 + lo == v for negative values too).
    """
    if session.get_bind().dialect.name != "sqlite":
        return [func.coalesce(func.sum(column), 0)]
    return [
        func.coalesce(func.sum(column.op("/", return_type=BigInteger)(_HALF)), 0),
        func.coalesce(func.sum(column.op("%", return_type=BigInteger)(_HALF)), 0),
    ]


_HALF = 1 << 32


def _joined(parts: Sequence[Any]) -> int:
    """The exact total from the columns `_exact_sums` selected."""
    if len(parts) == 1:
        return int(parts[0] or 0)
    hi, lo = parts
    return int(hi or 0) * _HALF + int(lo or 0)


def window_totals(session: Session, currency: str, start: datetime, end: datetime) -> Totals:
    """Count, amount and points of the obligations the ledger holds in the window."""
    amount = _exact_sums(session, Obligation.amount)
    points = _exact_sums(session, Obligation.points)
    row = session.execute(
        select(func.count(), *amount, *points).where(_in_window(currency, start, end))
    ).one()
    return Totals(
        amount=_joined(row[1 : 1 + len(amount)]),
        count=int(row[0]),
        points=_joined(row[1 + len(amount) :]),
    )


def earliest_obligation(session: Session, currency: str) -> datetime | None:
    """When the first obligation in `currency` was booked."""
    first = session.execute(
        select(func.min(Obligation.booked_at)).where(Obligation.currency == currency)
    ).scalar_one()
    return None if first is None else utc(first)


def obligations_before(session: Session, currency: str, instant: datetime) -> int:
    """How many obligations of `currency` were booked before `instant`."""
    return int(
        session.execute(
            select(func.count()).where(
                Obligation.currency == currency, Obligation.booked_at < utc(instant)
            )
        ).scalar_one()
    )


def window_parties(
    session: Session, currency: str, start: datetime, end: datetime
) -> set[uuid.UUID]:
    """Every organisation that pays or is paid in the window."""
    where = _in_window(currency, start, end)
    rows = session.execute(
        union(
            select(Obligation.payer_org_id.label("org")).where(where),
            select(Obligation.payee_org_id.label("org")).where(where),
        )
    ).scalars()
    return set(rows)


def position_accounts(session: Session, currency: str, org_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """Which of `org_ids` hold a money position account in `currency`."""
    if not org_ids:
        return set()
    return set(
        session.execute(
            select(Account.org_id).where(
                Account.kind == POSITION,
                Account.asset == money_asset(currency),
                Account.org_id.in_(org_ids),
            )
        ).scalars()
    )


def ledger_positions(
    session: Session, currency: str, start: datetime, end: datetime
) -> dict[uuid.UUID, int]:
    """What the entries booked in the window moved on each party's position account."""
    sums = _exact_sums(session, Posting.amount)
    rows = session.execute(
        select(Account.org_id, *sums)
        .join(Posting, Posting.account_id == Account.id)
        .join(JournalEntry, JournalEntry.id == Posting.entry_id)
        .where(
            Account.kind == POSITION,
            Account.asset == money_asset(currency),
            JournalEntry.booked_at >= utc(start),
            JournalEntry.booked_at < utc(end),
        )
        .group_by(Account.org_id)
    )
    return {row[0]: _joined(row[1:]) for row in rows}


def _lines_query(
    currency: str, start: datetime, end: datetime, party: uuid.UUID | None
) -> Select[*tuple[Any, ...]]:
    query = select(
        Obligation.entry_id,
        Obligation.seq,
        Obligation.original_entry_id,
        Obligation.event_type,
        Obligation.payer_org_id,
        Obligation.payee_org_id,
        Obligation.currency,
        Obligation.amount,
        Obligation.program_code,
        Obligation.points,
        Obligation.point_value,
        Obligation.point_value_version,
        Obligation.booked_at,
    ).where(_in_window(currency, start, end))
    if party is not None:
        query = query.where(or_(Obligation.payer_org_id == party, Obligation.payee_org_id == party))
    # The statements' order; uuid order is the order of their canonical text on both databases.
    return query.order_by(Obligation.booked_at, Obligation.entry_id, Obligation.seq)


def _frame(rows: Sequence[Any]) -> pd.DataFrame:
    cols = list(zip(*rows, strict=True))
    return pd.DataFrame(
        {
            "reference": [str(v) for v in cols[0]],
            "seq": np.array(cols[1], dtype=np.int64),
            "original_reference": [None if v is None else str(v) for v in cols[2]],
            "event_type": list(cols[3]),
            "payer": [str(v) for v in cols[4]],
            "payee": [str(v) for v in cols[5]],
            "currency": list(cols[6]),
            "amount": np.array(cols[7], dtype=np.int64),
            "program": list(cols[8]),
            "points": pd.array(cols[9], dtype="Int64"),
            "point_value": list(cols[10]),
            "point_value_version": pd.array(cols[11], dtype="Int64"),
            # SQLite hands back naive UTC, PostgreSQL aware instants: both end up UTC.
            "booked_at": pd.to_datetime(list(cols[12]), utc=True).as_unit("us"),
        },
        columns=list(LINE_COLUMNS),
    )


WINDOW_READERS = ("select", "psql")
"""How a batch reads its window (setting CLEARING_SETTLEMENT_READER, see FILES.md): `select`
(the default) through SQLAlchemy, on either database; `psql`, PostgreSQL only, through a
`psql` COPY child process parsed by pandas' C reader (the fast path for large days)."""


class WindowReaderUnavailable(ClearingError):
    """The configured window reader cannot read this database (psql on SQLite, no psql)."""

    kind = Kind.OUR_FAULT
    code = "window_reader_unavailable"
    title = "The configured settlement window reader cannot run here"


def iter_window_frames(
    engine: Engine,
    currency: str,
    start: datetime,
    end: datetime,
    *,
    reader: str = "select",
    party: uuid.UUID | None = None,
    chunk_rows: int | None = None,
) -> Iterator[pd.DataFrame]:
    """The window's obligation lines (of one party, if given) as frames of at most
    `chunk_rows` rows with the ObligationLine field names as columns, in statement order.

    `reader` (WINDOW_READERS) says how: `select`, `iter_window_frames_select`; `psql`,
    `iter_window_frames_copy`, refused with WindowReaderUnavailable unless the database is
    PostgreSQL and `psql` is on the PATH. Both give equal frames (same columns, dtypes after
    normalisation and values), so the files do not depend on the reader. Only one chunk is
    in memory at a time.
    """
    if reader == "psql":
        if not is_postgres(engine):
            raise WindowReaderUnavailable("the psql window reader needs PostgreSQL")
        if shutil.which("psql") is None:
            raise WindowReaderUnavailable("the psql window reader needs psql on the PATH")
        return iter_window_frames_copy(
            engine, currency, start, end, party=party, chunk_rows=chunk_rows or COPY_CHUNK_ROWS
        )
    if reader != "select":
        raise WindowReaderUnavailable(f"no window reader {reader!r}: one of {WINDOW_READERS}")
    return iter_window_frames_select(
        engine, currency, start, end, party=party, chunk_rows=chunk_rows or CHUNK_ROWS
    )


class WindowSource:
    """The window's lines as a files.ChunkSource that pickles into a spawned files worker.

    The engine stays in the calling process; the worker's copy opens an engine of its own on
    the same URL (password included, it never leaves this machine's pipes).
    """

    def __init__(
        self,
        engine: Engine,
        currency: str,
        start: datetime,
        end: datetime,
        reader: str = "select",
        chunk_rows: int | None = None,
    ) -> None:
        self._engine: Engine | None = engine
        self._url = engine.url.render_as_string(hide_password=False)
        self.currency = currency
        self.start = start
        self.end = end
        self.reader = reader
        self.chunk_rows = chunk_rows

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_engine": None}

    def __call__(self) -> Iterator[pd.DataFrame]:
        if self._engine is None:
            self._engine = make_engine(self._url)
        return iter_window_frames(
            self._engine,
            self.currency,
            self.start,
            self.end,
            reader=self.reader,
            chunk_rows=self.chunk_rows,
        )


def iter_window_frames_select(
    engine: Engine,
    currency: str,
    start: datetime,
    end: datetime,
    *,
    party: uuid.UUID | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[pd.DataFrame]:
    """The window's lines through SQLAlchemy: PostgreSQL streams through a server-side cursor;
    SQLite steps through its result set. Rows become Python objects, then frames: ~10x slower
    than the COPY reader on PostgreSQL."""
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(
            _lines_query(currency, start, end, party)
        )
        for rows in result.partitions(chunk_rows):
            if rows:
                yield _frame(rows)


# the window through COPY (PostgreSQL) -------------------------------------------------------

_COPY_COLUMNS = (
    "reference",
    "seq",
    "original_reference",
    "event_type",
    "payer",
    "payee",
    "currency",
    "amount",
    "program",
    "points",
    "point_value",
    "point_value_version",
    "booked_us",
)
_COPY_DTYPES: dict[str, Any] = {
    "reference": str,
    "seq": "int64",
    "original_reference": str,
    # Categories are safe here: event types are names, parties uuids, currencies ISO codes.
    "event_type": "category",
    "payer": "category",
    "payee": "category",
    "currency": "category",
    "amount": "int64",
    # pandas infers the values of a "category" column: a chunk whose point values all look
    # numeric would get float categories ("0.005" instead of "0.005000000000"; a program code
    # "007" would become 7). The query prefixes these columns with a letter, so categories stay
    # text; `_unprefixed` takes the letter off the (few) categories, not off every row. The
    # text PostgreSQL prints for numeric(24, 12) is the text of the Decimal psycopg builds from
    # it, which is what the SQLAlchemy reader's frames carry: the files are byte-identical
    # whichever reader is used.
    "program": "category",
    "points": "int64",
    "point_value": "category",
    "point_value_version": "category",
    "booked_us": "int64",
}
# libpq connection keywords taken over from the engine URL's query string.
_LIBPQ_QUERY_KEYS = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslpassword",
        "connect_timeout",
        "application_name",
        "options",
        "target_session_attrs",
        "gssencmode",
        "channel_binding",
        "service",
        "passfile",
    }
)
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _psql_command(engine: Engine) -> tuple[list[str], dict[str, str]]:
    """psql's arguments and environment for the engine's database. The password goes into
    the child's environment (PGPASSWORD), never onto its command line or into any output."""
    url = engine.url
    words = {
        "host": url.host,
        "port": None if url.port is None else str(url.port),
        "user": url.username,
        "dbname": url.database,
    }
    for key, value in url.query.items():
        if key in _LIBPQ_QUERY_KEYS:
            words[key] = value if isinstance(value, str) else value[-1]
    conninfo = " ".join(
        f"{k}='{_conninfo_quote(v)}'" for k, v in words.items() if v not in (None, "")
    )
    env = {**os.environ, "PGCLIENTENCODING": "UTF8"}
    for name in ("PGOPTIONS", "PGSERVICE"):
        env.pop(name, None)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    command = ["psql", "--no-psqlrc", "-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-d", conninfo]
    return command, env


def _conninfo_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _copy_query(currency: str, start: datetime, end: datetime, party: uuid.UUID | None) -> str:
    if not _CURRENCY.match(currency):
        raise ValueError(f"not a currency code: {currency!r}")
    table = Obligation.__tablename__
    where = (
        f"currency = '{currency}' AND booked_at >= '{utc(start).isoformat()}' "
        f"AND booked_at < '{utc(end).isoformat()}'"
    )
    if party is not None:
        who = uuid.UUID(str(party))
        where += f" AND (payer_org_id = '{who}' OR payee_org_id = '{who}')"
    # extract(epoch ...) is numeric (exact) from PostgreSQL 14 on.
    return (
        "COPY (SELECT entry_id, seq, original_entry_id, event_type, payer_org_id, payee_org_id, "
        "currency, amount, 'x' || program_code, coalesce(points, 0), 'x' || point_value, "
        "'x' || point_value_version, "
        f"(extract(epoch FROM booked_at) * 1000000)::bigint FROM {table} WHERE {where} "
        "ORDER BY booked_at, entry_id, seq) TO STDOUT (FORMAT csv)"
    )


_PREFIXED = ("program", "point_value", "point_value_version")


def _unprefixed(column: pd.Series) -> pd.Series:
    """A column the COPY query prefixed with "x" (NULL stays ""), as its values' text."""
    if not isinstance(column.dtype, pd.CategoricalDtype):
        return column.astype(object).map(lambda v: v[1:] if v else "")
    cats = [str(c) for c in column.cat.categories.tolist()]
    texts = [c[1:] if c else "" for c in cats]
    if len(set(texts)) == len(texts):
        return column.cat.rename_categories(texts)
    # NULL and "" both print as "": one text, two categories; map the codes instead.
    codes = column.cat.codes.to_numpy()
    values = np.array([*texts, ""], dtype=object)[np.where(codes < 0, len(texts), codes)]
    return pd.Series(values, index=column.index, dtype=object)


def iter_window_frames_copy(
    engine: Engine,
    currency: str,
    start: datetime,
    end: datetime,
    *,
    party: uuid.UUID | None = None,
    chunk_rows: int = COPY_CHUNK_ROWS,
) -> Iterator[pd.DataFrame]:
    """The window's lines through `psql` COPY (CSV) piped into pandas' C parser, as canonical
    frames (settlement.lines.normalize_frame) in statement order.

    psql runs in its own process (on a second core), and no row becomes a Python object: the
    fast reader for PostgreSQL. Connection parameters come from the engine's URL. Frames equal
    `iter_window_frames_select`'s after normalisation (tested).
    """
    command, env = _psql_command(engine)
    query = _copy_query(currency, start, end, party)
    proc = subprocess.Popen(
        [*command, "-c", query], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    finished = False
    try:
        try:
            reader = pd.read_csv(
                proc.stdout,
                header=None,
                names=list(_COPY_COLUMNS),
                dtype=_COPY_DTYPES,
                chunksize=chunk_rows,
                keep_default_na=False,
                na_values={"original_reference": [""]},
            )
            with reader:
                for frame in reader:
                    if frame.empty:
                        continue
                    for name in _PREFIXED:
                        frame[name] = _unprefixed(frame[name])
                    frame["booked_at"] = pd.DatetimeIndex(
                        frame.pop("booked_us").to_numpy().astype("datetime64[us]")
                    ).tz_localize(UTC)
                    yield normalize_frame(frame)
        except pd.errors.EmptyDataError:
            pass  # an empty window: psql wrote nothing
        proc.stdout.close()
        error = proc.stderr.read() if proc.stderr is not None else b""
        if proc.wait() != 0:
            message = error.decode("utf-8", errors="replace").strip()[:2000]
            raise RuntimeError(f"reading the window through psql failed: {message}")
        finished = True
    finally:
        if not finished and proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# parties, positions, files ------------------------------------------------------------------


def organisations(session: Session, org_ids: set[uuid.UUID]) -> dict[uuid.UUID, Organisation]:
    """Organisations by id."""
    if not org_ids:
        return {}
    return {
        o.id: o
        for o in session.execute(select(Organisation).where(Organisation.id.in_(org_ids))).scalars()
    }


def platform_organisation(session: Session) -> Organisation | None:
    """The platform organisation, if registered."""
    return session.execute(
        select(Organisation).where(Organisation.kind == OrgKind.PLATFORM).order_by(Organisation.id)
    ).scalar()


def last_statement(
    session: Session, org_id: uuid.UUID, currency: str, before: date
) -> SettlementPosition | None:
    """The party's statement in the latest earlier batch of `currency` that has one."""
    return session.execute(
        select(SettlementPosition)
        .join(SettlementBatch, SettlementBatch.id == SettlementPosition.batch_id)
        .where(
            SettlementPosition.org_id == org_id,
            SettlementBatch.currency == currency,
            SettlementBatch.business_date < before,
        )
        .order_by(SettlementBatch.business_date.desc())
        .limit(1)
    ).scalar_one_or_none()


def positions(session: Session, batch_id: str) -> list[SettlementPosition]:
    """Positions of a batch, in party id order."""
    return list(
        session.execute(
            select(SettlementPosition)
            .where(SettlementPosition.batch_id == batch_id)
            .order_by(SettlementPosition.org_id)
        ).scalars()
    )


def files(session: Session, batch_id: str, org_id: uuid.UUID | None = None) -> list[SettlementFile]:
    """Files recorded for a batch (of one party if given)."""
    query = select(SettlementFile).where(SettlementFile.batch_id == batch_id)
    if org_id is not None:
        query = query.where(SettlementFile.org_id == org_id)
    return list(
        session.execute(query.order_by(SettlementFile.org_id, SettlementFile.name)).scalars()
    )


def file_of(session: Session, batch_id: str, org_id: uuid.UUID, name: str) -> SettlementFile | None:
    """One recorded file."""
    return session.get(SettlementFile, (batch_id, org_id, name))

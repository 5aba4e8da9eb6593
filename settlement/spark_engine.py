"""The Spark engine: nets a batch's exported window and writes every party's folder on Apache
Spark, byte-identical to the pandas engine (settlement/SCALE.md). Imported only when the
`spark` engine runs: pyspark starts a JVM.

Netting is a GROUP BY (currency, payer, payee, event type) with sums as DECIMAL(38, 0) (bigint
sums overflow past 2^63); the driver turns the groups into the same Clearing the pandas Clearer
gives (netting.clearing_of) and checks the same invariants (service.batch_errors).

Files: every line is exploded into the parties whose statement holds it (the platform's holds
every line; any other party's the lines it pays or receives), plus one marker row per party
(so a party without lines gets its empty statement too), repartitioned by owner and sorted
within partitions by (owner, booked_at, reference, seq). `mapInPandas` hands each task its
partition in Arrow batches: a party's lines are contiguous, in statement order, and stream
through the very BatchFiles the pandas engine uses (one party at a time, so the memory a task
needs does not grow with a party's lines). Each task writes the party's CSV, XLSX and
camt.053 under their partial names and returns, as JSON, what the manifest needs (hashes,
totals, omitted files). The signing key never leaves the driver: it checks the nets, writes
and signs each manifest and gives every file its final name (files.seal_and_publish, the code
BatchFiles.publish runs). Executors write straight into the folders they are given: on a
cluster those are on storage every executor and the driver see.

Spark task retries rewrite a party's partial files from the start (same bytes); speculative
execution must stay off (its default), as two attempts of one task would write the same
partial files at once.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clearing.core.kinds import OrgKind
from settlement.files import (
    DETAIL_LIMIT,
    BatchFiles,
    BatchWrite,
    StagedFolder,
    seal_and_publish,
)
from settlement.lines import EVENT_TYPES, LINE_COLUMNS, Party, normalize_frame
from settlement.netting import (
    AMOUNT_NOT_POSITIVE,
    EXAMPLES,
    NEGATIVE_POINTS,
    SAME_PARTY,
    UNKNOWN_EVENT,
    Clearing,
    Gross,
    GrossKey,
    Totals,
    clearing_of,
)
from settlement.probe import NO_PROBE, BatchProbe
from settlement.statement import (
    CounterpartySummary,
    StatementInputError,
    StatementMeta,
    StatementTotals,
)
from settlement.statement_xlsx import EXCEL_MAX_ROWS
from settlement.window_export import SCHEMA

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from settlement.service import NetAndWrite

ARROW_BATCH_ROWS = 65_536
"""Lines per Arrow batch handed to a files task: what one task holds of its lines at a time."""
_MARKER = -(2**63)
"""booked_us of a party's marker row: before every line, so a task meets the party first."""
_SESSIONS: dict[str, SparkSession] = {}
_SESSION_LOCK = threading.Lock()


# the session ----------------------------------------------------------------------------------


def _local_cores(master: str) -> int | None:
    """Cores of a local master (`local`, `local[N]`, `local[*]`, `local[N,F]`), else None."""
    found = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", master)
    if found is None:
        return None
    cores = found.group(1)
    if cores is None:
        return 1
    return os.cpu_count() or 1 if cores == "*" else int(cores)


def spark_session(master: str) -> SparkSession:
    """This process's Spark session on `master`, started on first use (several seconds), then
    kept: one JVM per process (a session on another master replaces it)."""
    from pyspark.sql import SparkSession

    with _SESSION_LOCK:
        session = _SESSIONS.get(master)
        if session is not None:
            return session
        for other in _SESSIONS.values():
            other.stop()
        _SESSIONS.clear()
        # pyspark warns on every pandas UDF that it does not yet fully support pandas 3, the
        # version this project pins; the byte-identity tests against the pandas engine are
        # what vouch for the conversions used here.
        warnings.filterwarnings(
            "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
        )
        conf = {
            "spark.app.name": "clearing-settlement",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.execution.arrow.maxRecordsPerBatch": str(ARROW_BATCH_ROWS),
            "spark.speculation": "false",
        }
        cores = _local_cores(master)
        if cores is not None:
            # On one machine the Python workers run this interpreter (the one with pandas and
            # pyarrow) and scratch goes to a temp folder; a cluster's own configuration
            # (spark-defaults.conf: interpreter, local dirs, sizing) is left as it is.
            os.environ["PYSPARK_PYTHON"] = sys.executable
            scratch = tempfile.mkdtemp(prefix="clearing-spark-")
            conf["spark.pyspark.python"] = sys.executable
            conf["spark.local.dir"] = scratch
            conf["spark.sql.warehouse.dir"] = os.path.join(scratch, "warehouse")
            # Spark's default of 200 shuffle partitions is for clusters: tiny tasks here.
            conf["spark.sql.shuffle.partitions"] = str(max(2, 2 * cores))
        builder = SparkSession.builder.master(master)
        for name, value in conf.items():
            builder = builder.config(name, value)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        _SESSIONS[master] = session
        return session


def _spark_type(kind: pa.DataType) -> str:
    if pa.types.is_string(kind):
        return "STRING"
    if pa.types.is_int64(kind):
        return "BIGINT"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP"
    raise TypeError(f"no Spark type for {kind}")


WINDOW_DDL = ", ".join(f"{field.name} {_spark_type(field.type)}" for field in SCHEMA)
"""The exported window's columns as Spark reads them (window_export.SCHEMA)."""


def read_window(spark: SparkSession, window: Path) -> DataFrame:
    """The lines of an exported window: its leaf folder read directly (no partition discovery,
    the schema given rather than inferred)."""
    return spark.read.schema(WINDOW_DDL).parquet(str(window))


# netting --------------------------------------------------------------------------------------


def spark_clearing(lines: DataFrame) -> Clearing:
    """The Clearing of `lines`, grouped on Spark: what Clearer(source_unique=True) gives.

    One job: GROUPING SETS give the gross per (currency, payer, payee, event type) and, summed
    straight from the lines rather than from those groups, each currency's input totals and
    anomaly counts."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DecimalType

    exact = DecimalType(38, 0)
    checks: dict[str, Column] = {
        AMOUNT_NOT_POSITIVE: F.col("amount") <= 0,
        UNKNOWN_EVENT: ~F.col("event_type").isin(*EVENT_TYPES),
        SAME_PARTY: F.col("payer") == F.col("payee"),
        NEGATIVE_POINTS: F.col("points") < 0,
    }
    keys = ["currency", "payer", "payee", "event_type"]
    rows = (
        lines.groupingSets([keys, ["currency"]], *keys)
        .agg(
            F.grouping_id().alias("level"),
            F.sum(F.col("amount").cast(exact)).alias("amount"),
            F.count(F.lit(1)).alias("count"),
            F.sum(F.col("points").cast(exact)).alias("points"),
            *(
                F.sum(F.when(check, 1).otherwise(0)).alias(f"anomaly_{n}")
                for n, check in enumerate(checks.values())
            ),
        )
        .collect()
    )
    gross: dict[GrossKey, Gross] = {}
    inputs: dict[str, Totals] = {}
    counts = [0] * len(checks)
    for row in rows:
        figures = (int(row["amount"]), int(row["count"]), int(row["points"]))
        if row["level"] == 0:
            gross[(row["currency"], row["payer"], row["payee"], row["event_type"])] = Gross(
                *figures
            )
            continue
        inputs[row["currency"]] = Totals(*figures)
        for n in range(len(checks)):
            counts[n] += int(row[f"anomaly_{n}"])
    anomalies: dict[str, tuple[int, list[str]]] = {}
    for count, (what, check) in zip(counts, checks.items(), strict=True):
        if count:
            # The first examples in line order, as the Clearer meets them in the stream.
            first = (
                lines.where(check)
                .orderBy("booked_at", "reference", "seq")
                .select("reference", "seq")
                .limit(EXAMPLES)
                .collect()
            )
            anomalies[what] = (count, [f"{r['reference']}/{r['seq']}" for r in first])
    line_count = sum(t.count for t in inputs.values())
    return clearing_of(gross, inputs, line_count, anomalies=anomalies)


# files ----------------------------------------------------------------------------------------


def _totals_data(totals: StatementTotals) -> dict[str, Any]:
    """A statement's totals as JSON-able plain data (Python ints: exact past 2^63)."""
    return {
        "count": totals.count,
        "credit_count": totals.credit_count,
        "debits": totals.debits,
        "credits": totals.credits,
        "points": totals.points,
        "summary": [
            [cp, s.gross_payable, s.gross_receivable, s.fees, s.net, s.count]
            for cp, s in totals.summary.items()
        ],
        "batches": [[cp, ev, *figures] for (cp, ev), figures in totals.batches.items()],
    }


def _totals_of(data: Mapping[str, Any]) -> StatementTotals:
    """The statement totals `_totals_data` gave."""
    return StatementTotals(
        count=data["count"],
        credit_count=data["credit_count"],
        debits=data["debits"],
        credits=data["credits"],
        points=data["points"],
        summary={cp: CounterpartySummary(*figures) for cp, *figures in data["summary"]},
        batches={(cp, ev): list(figures) for cp, ev, *figures in data["batches"]},
    )


class _Owner:
    """The folder of one party being written inside a task."""

    def __init__(self, writer: _FolderWriter, party: Party) -> None:
        self.party = party
        self.files = BatchFiles(
            {party.id: writer.folders[party.id]},
            [party],
            {party.id: writer.metas[party.id]},
            # The key is never used here (nothing is signed before the driver's publish),
            # and the real one never leaves the driver.
            signing_key=Ed25519PrivateKey.generate(),
            key_id="",
            detail_limit=writer.detail_limit,
            max_rows_per_sheet=writer.max_rows_per_sheet,
        )

    def finish(self) -> pd.DataFrame:
        """Close the CSV, write XLSX and camt.053: the party's staged folder as one row."""
        self.files.finish_csv()
        self.files.write_formats()
        staged = self.files.staged()[0]
        payload = {
            "hashes": dict(staged.hashes),
            "omitted": dict(staged.omitted),
            "totals": _totals_data(staged.totals),
        }
        return pd.DataFrame({"owner": [self.party.id], "staged": [json.dumps(payload)]})


@dataclass(frozen=True)
class _FolderWriter:
    """The function each files task runs (pickled into the executors): Arrow batches of
    (owner, line) rows, sorted by owner then statement order, in; one row per party out."""

    folders: Mapping[str, Path]
    parties: Mapping[str, Party]
    metas: Mapping[str, StatementMeta]
    detail_limit: int
    max_rows_per_sheet: int
    probe: BatchProbe

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        current: _Owner | None = None
        parties = 0
        lines = 0
        try:
            for batch in batches:
                owners = batch["owner"].to_numpy()
                cuts = [0, *(np.flatnonzero(owners[1:] != owners[:-1]) + 1).tolist(), len(batch)]
                for lo, hi in itertools.pairwise(cuts):
                    owner = str(owners[lo])
                    if current is None or current.party.id != owner:
                        if current is not None:
                            yield current.finish()
                            parties += 1
                            self.probe.party_written(parties)
                        current = _Owner(self, self.parties[owner])
                    piece = batch.iloc[lo:hi]
                    piece = piece[piece["booked_us"].to_numpy() != _MARKER]
                    if len(piece):
                        current.files.feed(_line_frame(piece))
                        lines += len(piece)
                        self.probe.lines_written(lines)
            if current is not None:
                yield current.finish()
                self.probe.party_written(parties + 1)
        except BaseException:
            if current is not None:
                current.files.abort()
            raise


def _line_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of the exploded window back as a canonical frame of lines."""
    columns: dict[str, Any] = {c: rows[c].to_numpy() for c in LINE_COLUMNS if c != "booked_at"}
    columns["booked_at"] = pd.DatetimeIndex(
        rows["booked_us"].to_numpy(dtype=np.int64).astype("datetime64[us]")
    ).tz_localize("UTC")
    return normalize_frame(pd.DataFrame(columns)[list(LINE_COLUMNS)])


def _owned_lines(
    spark: SparkSession, lines: DataFrame, parties: Sequence[Party]
) -> tuple[DataFrame, int]:
    """Every line once per party whose statement holds it, plus a marker row per party,
    partitioned by owner and sorted in statement order: the files tasks' input, and how many
    partitions it has."""
    from pyspark.sql import functions as F

    ids = [p.id for p in parties]
    platforms = [F.lit(p.id) for p in parties if p.kind == OrgKind.PLATFORM]
    # The platform's statement holds every line; any other party's the lines it is a side of
    # (DetailFrames ignores a side that is not one of the batch's parties).
    owners = F.array_distinct(F.array(*platforms, F.col("payer"), F.col("payee")))
    fields = [c for c in LINE_COLUMNS if c != "booked_at"]
    exploded = lines.select(
        F.explode(owners).alias("owner"),
        *fields,
        F.unix_micros("booked_at").alias("booked_us"),
    ).where(F.col("owner").isin(*ids))
    blank = {
        field.name: F.lit(0 if pa.types.is_int64(field.type) else "")
        for field in SCHEMA
        if field.name != "booked_at"
    }
    markers = spark.createDataFrame([(i,) for i in ids], "owner STRING").select(
        "owner", *(blank[c].alias(c) for c in fields), F.lit(_MARKER).alias("booked_us")
    )
    partitions = max(1, min(len(ids), 2 * spark.sparkContext.defaultParallelism))
    owned = (
        exploded.unionByName(markers)
        .repartition(partitions, "owner")
        .sortWithinPartitions("owner", "booked_us", "reference", "seq")
    )
    return owned, partitions


def _spark_files(
    spark: SparkSession,
    lines: DataFrame,
    folders: Mapping[str, Path],
    parties: Sequence[Party],
    metas: Mapping[str, StatementMeta],
    *,
    signing_key: Ed25519PrivateKey,
    key_id: str,
    expected_nets: Mapping[str, int] | None,
    detail_limit: int,
    max_rows_per_sheet: int,
    probe: BatchProbe,
) -> BatchWrite:
    """Every party's statements written by the executors, then manifests, signatures and
    final names by the driver."""
    if not parties:
        raise ValueError("no parties")
    owned, partitions = _owned_lines(spark, lines, parties)
    writer = _FolderWriter(
        {p.id: folders[p.id] for p in parties},
        {p.id: p for p in parties},
        {p.id: metas[p.id] for p in parties},
        detail_limit,
        max_rows_per_sheet,
        probe,
    )
    try:
        rows = owned.mapInPandas(writer, "owner STRING, staged STRING").collect()
    except Exception as error:
        raise StatementInputError(f"the Spark files job failed: {error}") from error
    payloads: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["owner"] in payloads:
            raise StatementInputError(f"party {row['owner']} was written twice")
        payloads[row["owner"]] = json.loads(row["staged"])
    missing = [p.id for p in parties if p.id not in payloads]
    if missing:
        raise StatementInputError(f"no statement written for {', '.join(missing[:5])}")
    staged = [
        StagedFolder(
            folders[p.id],
            p.id,
            metas[p.id],
            payloads[p.id]["hashes"],
            _totals_of(payloads[p.id]["totals"]),
            payloads[p.id]["omitted"],
        )
        for p in parties
    ]
    with probe.phase("manifests"):
        published = seal_and_publish(
            staged, signing_key=signing_key, key_id=key_id, expected_nets=expected_nets
        )
    return BatchWrite(MappingProxyType({p.id: published[p.id] for p in parties}), partitions)


def spark_net_and_write(
    window: Path,
    folders: Mapping[str, Path],
    parties: Sequence[Party],
    metas: Mapping[str, StatementMeta],
    *,
    signing_key: Ed25519PrivateKey,
    key_id: str,
    expected: dict[str, Totals],
    platform_id: str,
    master: str,
    probe: BatchProbe = NO_PROBE,
    detail_limit: int = DETAIL_LIMIT,
    max_rows_per_sheet: int = EXCEL_MAX_ROWS,
) -> NetAndWrite:
    """What service.net_and_write does, on Spark, from the Parquet window at `window`."""
    from settlement.service import NetAndWrite, batch_errors

    spark = spark_session(master)
    lines = read_window(spark, window)
    with probe.phase("netting"):
        clearing = spark_clearing(lines)
    written = _spark_files(
        spark,
        lines,
        folders,
        parties,
        metas,
        signing_key=signing_key,
        key_id=key_id,
        expected_nets=None,
        detail_limit=detail_limit,
        max_rows_per_sheet=max_rows_per_sheet,
        probe=probe,
    )
    errors = batch_errors(
        clearing, written, parties, folders, expected=expected, platform_id=platform_id
    )
    return NetAndWrite(clearing, written, errors)


def spark_write_folders(
    window: Path,
    folders: Mapping[str, Path],
    parties: Sequence[Party],
    metas: Mapping[str, StatementMeta],
    *,
    signing_key: Ed25519PrivateKey,
    key_id: str,
    expected_nets: Mapping[str, int],
    master: str,
    probe: BatchProbe = NO_PROBE,
    detail_limit: int = DETAIL_LIMIT,
    max_rows_per_sheet: int = EXCEL_MAX_ROWS,
) -> BatchWrite:
    """What files.write_batch_folders does, on Spark, from the Parquet window at `window`."""
    spark = spark_session(master)
    return _spark_files(
        spark,
        read_window(spark, window),
        folders,
        parties,
        metas,
        signing_key=signing_key,
        key_id=key_id,
        expected_nets={p.id: expected_nets.get(p.id, 0) for p in parties},
        detail_limit=detail_limit,
        max_rows_per_sheet=max_rows_per_sheet,
        probe=probe,
    )

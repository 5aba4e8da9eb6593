"""Settlement on the pandas engine and on the Spark engine, on the same day, then Spark alone
on a larger day, with the peak memory of every process.

Usage:
    CLEARING_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \\
    .venv/bin/python benchmarks/settle_spark_bench.py [--rows 10000000] [--spark-rows 30000000]
        [--master local[2]]

For `--rows` obligations (loaded as benchmarks/settle_bench.py loads them: 20 issuers, 200
merchants, the platform, fees as lines of their own) it times, in one run:

- pandas: `settlement.service.net_and_write`, what `run_batch` runs on the default engine
  (two processes, the window read through psql COPY);
- export: `settlement.window_export.export_window`, the `exported` step of a Spark batch (the
  window read the same way, written as Parquet, read back and checked against the control
  totals);
- spark: `settlement.spark_engine.spark_net_and_write` on that export (local mode,
  `--master`), what `run_batch` runs on the Spark engine;

and checks that both engines wrote byte-identical folders. Then, for `--spark-rows`
obligations, export and spark alone. For every Spark run it prints the peak resident memory of
each kind of process (this driver, the JVM, Spark's Python workers), sampled from /proc every
0.2 s: the point is that it does not grow with the number of obligations. Seconds per million
obligations and per core (`--master local[N]`: N cores) are what settlement/SCALE.md
extrapolates from. The last line printed is one JSON object with every figure; the scratch
databases are dropped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql
from settle_bench import ADMIN_URL, CONTROL, END, START, load, parties_and_metas
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from settlement.netting import Totals
from settlement.repository import WindowSource
from settlement.service import net_and_write
from settlement.window_export import export_window


class ProcessMemory:
    """Peak resident memory of this process and of every descendant, by kind, from /proc."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peaks: dict[str, int] = defaultdict(int)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        me = os.getpid()
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                status = _status(int(entry))
                if status is not None:
                    parents[int(entry)] = int(status.get("PPid", "0"))
        for pid in parents:
            chain, at = 0, pid
            while at not in (0, 1, me) and chain < 50:
                at, chain = parents.get(at, 0), chain + 1
            if at != me:
                continue
            status = _status(pid)
            if status is None:
                continue
            kind = _kind(pid, me)
            peak_kib = int(status.get("VmHWM", "0 kB").split()[0])
            self.peaks[kind] = max(self.peaks[kind], peak_kib)

    def mib(self) -> dict[str, int]:
        """Peak MiB per kind of process seen so far."""
        return {kind: round(kib / 1024) for kind, kib in sorted(self.peaks.items())}


def _status(pid: int) -> dict[str, str] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _kind(pid: int, me: int) -> str:
    if pid == me:
        return "batch process (python)"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "other"
    if re.search(r"(^|/)java ", command):
        return "JVM (driver + executors)"
    if "pyspark" in command or "daemon" in command or "worker" in command:
        return "spark python worker"
    if "psql" in command:
        return "psql"
    return "python (files worker)" if "python" in command else "other"


def tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under `root`, by relative path."""
    digests: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                digests[str(path.relative_to(root))] = hashlib.file_digest(fh, "sha256").hexdigest()
    return digests


def run_size(rows: int, engines: list[str], master: str, out: Path) -> dict[str, Any]:
    """Load `rows` obligations into a scratch database and settle them on each of `engines`,
    each in a process of its own (so that every process's peak memory is that engine's)."""
    scratch = f"settle_spark_bench_{os.getpid()}_{rows}"
    admin = psycopg.connect(ADMIN_URL, autocommit=True)
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    url = psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=scratch)
    figures: dict[str, Any] = {"rows": rows}
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            began = time.perf_counter()
            load(conn, rows)
            figures["load_seconds"] = round(time.perf_counter() - began, 1)
        digests: dict[str, dict[str, str]] = {}
        for name in engines:
            folder = out / f"{name}-{rows}"
            command = [sys.executable, __file__, "--child", name, "--db", scratch]
            command += ["--rows", str(rows), "--master", master, "--out", str(folder)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{name} at {rows:,}: {done.stderr[-2000:]}")
            figures.update(json.loads(done.stdout.strip().splitlines()[-1]))
            digests[name] = tree_digest(folder)
            shutil.rmtree(folder, ignore_errors=True)
        if len(digests) == 2:
            figures["byte_identical"] = digests["pandas"] == digests["spark"]
            figures["files_compared"] = len(digests["pandas"])
    finally:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch))
        )
        admin.close()
    return figures


def child(name: str, scratch: str, rows: int, master: str, out: Path) -> dict[str, Any]:
    """Settle the loaded day of `scratch` on engine `name` into `out`; this process's figures."""
    from settlement.spark_engine import spark_net_and_write

    url = psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=scratch)
    with psycopg.connect(url, autocommit=True) as conn:
        control = {
            str(c): Totals(int(a), int(n), int(p))
            for c, a, n, p in conn.execute(CONTROL, {"start": START, "end": END})
        }
        platform_id, parties, metas = parties_and_metas(conn)
    engine = create_engine(
        make_url(ADMIN_URL).set(drivername="postgresql+psycopg", database=scratch)
    )
    key = Ed25519PrivateKey.generate()
    source = WindowSource(engine, "CNY", START, END, "psql")
    folders = {p.id: out / p.id for p in parties}
    figures: dict[str, Any] = {}
    with ProcessMemory() as memory:
        began = time.perf_counter()
        if name == "pandas":
            result = net_and_write(
                source,
                folders,
                parties,
                metas,
                signing_key=key,
                key_id="bench",
                expected=control,
                platform_id=platform_id,
                workers=2,
            )
        else:
            window = out.parent / ".window" / f"rows={rows}"
            export_window(source(), window, control["CNY"])
            exported = time.perf_counter()
            figures["export_seconds"] = round(exported - began, 1)
            result = spark_net_and_write(
                window,
                folders,
                parties,
                metas,
                signing_key=key,
                key_id="bench",
                expected=control,
                platform_id=platform_id,
                master=master,
            )
            figures["spark_seconds"] = round(time.perf_counter() - exported, 1)
            shutil.rmtree(window, ignore_errors=True)
        seconds = time.perf_counter() - began
    engine.dispose()
    if result.errors:
        raise SystemExit(f"{name}: invariants broken: " + "; ".join(result.errors[:5]))
    figures[f"{name}_total_seconds"] = round(seconds, 1)
    figures[f"{name}_seconds_per_million"] = round(seconds / rows * 1e6, 2)
    figures[f"{name}_peak_mib"] = memory.mib()
    return figures


def main() -> int:
    """Run both sizes; print a table, then one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--spark-rows", type=int, default=30_000_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--child", choices=["pandas", "spark"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.db, args.rows, args.master, args.out)))
        return 0
    cores = int(m.group(1)) if (m := re.fullmatch(r"local\[(\d+)\]", args.master)) else None
    out = Path(tempfile.mkdtemp(prefix="settle-spark-bench-"))
    try:
        both = run_size(args.rows, ["pandas", "spark"], args.master, out)
        spark_only = run_size(args.spark_rows, ["spark"], args.master, out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    figures: dict[str, Any] = {"master": args.master, "both": both, "spark_only": spark_only}
    if cores:
        per_core = args.spark_rows / spark_only["spark_total_seconds"] / cores
        figures["spark_obligations_per_core_second"] = round(per_core)
    for label, part in (("same day", both), ("Spark alone", spark_only)):
        print(f"{label}: {part['rows']:,} obligations")
        for name in ("pandas", "spark"):
            if f"{name}_total_seconds" in part:
                print(
                    f"  {name:<7} {part[f'{name}_total_seconds']:>8.1f} s"
                    f"  {part[f'{name}_seconds_per_million']:>6.2f} s per million"
                    f"  peak MiB {part[f'{name}_peak_mib']}"
                )
        if "export_seconds" in part:
            print(f"  of which export {part['export_seconds']} s, spark {part['spark_seconds']} s")
        if "byte_identical" in part:
            print(f"  byte-identical files: {part['byte_identical']} ({part['files_compared']})")
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

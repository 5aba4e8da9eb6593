"""The settlement batch's cost curve: seconds per million obligations across sizes and party mixes.

Usage:
    CLEARING_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \\
    .venv/bin/python benchmarks/settle_curve.py [--sizes 1000000,3000000,10000000] \\
        [--mixes standard,under-threshold,many-parties] [--bound 1.5]

Runs benchmarks/settle_bench.py once per (size, mix), each in a process of its own (a scratch
database each, loaded and dropped; `--no-index-study`; any further `--bench-arg` is passed on),
and prints, for each, the batch's wall seconds (`total_seconds`: netting, every file, the
invariants), the seconds per million obligations, each process's wall seconds, the CPU seconds
of the stream (read, detail rows, CSV) and of the formats (XLSX, camt.053, manifests), and the
wall seconds of the publish pass (fsyncs and renames). The mixes (settle_bench's docstring):
standard (20 issuers, 200 merchants), under-threshold (every issuer and merchant just under
settlement.files.DETAIL_LIMIT detail lines, so their count grows with the size and every one
gets the full XLSX and camt.053 detail), many-parties (10,000 parties besides the platform).
The time per obligation should neither rise as the day gets smaller nor depend on where
parties fall against the threshold: the worst seconds per million over every run must be
within `--bound` (1.5x) of the best. Loading is not timed. Try small sizes first
(`--sizes 200000,600000`): the 10M runs take minutes each.

The last line printed is one JSON object: every run's figures (settle_bench's JSON), the
worst/best ratio and whether it is within the bound.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).with_name("settle_bench.py")
MIXES = ("standard", "under-threshold", "many-parties")


def run_one(rows: int, mix: str, extra: list[str]) -> dict[str, Any]:
    """settle_bench.py at `rows` obligations and `mix`; its JSON figures."""
    command = [
        sys.executable,
        str(BENCH),
        "--rows",
        str(rows),
        "--mix",
        mix,
        "--no-index-study",
        *extra,
    ]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["run_seconds_with_load"] = round(time.perf_counter() - began, 1)
    return figures


def csv_cpu(figures: dict[str, Any]) -> float:
    """CPU seconds (both processes) of the stream: reading, detail rows, CSV records."""
    keys = ("stream_parse_cpu_seconds", "detail_rows_cpu_seconds", "csv_format_write_cpu_seconds")
    return float(sum(figures[k] for k in keys))


def formats_cpu(figures: dict[str, Any]) -> float:
    """CPU seconds (both processes) of the formats: XLSX, camt.053, manifests."""
    keys = ("xlsx_cpu_seconds", "camt_cpu_seconds", "manifests_cpu_seconds")
    return float(sum(figures[k] for k in keys))


def main() -> int:
    """Run every (size, mix); print a table, the worst/best ratio, then one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000000,3000000,10000000")
    parser.add_argument("--mixes", default=",".join(MIXES))
    parser.add_argument("--bound", type=float, default=1.5)
    parser.add_argument(
        "--bench-arg", action="append", default=[], help="passed on to settle_bench.py"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    mixes = args.mixes.split(",")
    unknown = [m for m in mixes if m not in MIXES]
    if unknown:
        raise SystemExit(f"unknown mixes: {unknown}")
    runs: list[dict[str, Any]] = []
    header = (
        f"{'obligations':>12} {'mix':<16} {'parties':>8} {'under':>6} "
        f"{'total s':>8} {'s/M':>7} {'workers wall s':>16} {'csv CPU':>8} {'formats CPU':>11} "
        f"{'publish':>8}"
    )
    print(header, flush=True)
    for rows in sizes:
        for mix in mixes:
            figures = run_one(rows, mix, args.bench_arg)
            runs.append(figures)
            walls = ", ".join(f"{w:.0f}" for w in figures["worker_wall_seconds"])
            print(
                f"{rows:>12,} {mix:<16} {figures['parties']:>8,} "
                f"{figures['parties_under_limit']:>6,} {figures['total_seconds']:>8.1f} "
                f"{figures['seconds_per_million']:>7.1f} {walls:>16} "
                f"{csv_cpu(figures):>8.1f} {formats_cpu(figures):>11.1f} "
                f"{figures['publish_seconds']:>8.1f}",
                flush=True,
            )
    per_million = [r["seconds_per_million"] for r in runs]
    worst, best = max(per_million), min(per_million)
    ratio = round(worst / best, 2)
    print(f"worst / best seconds per million: {worst:.1f} / {best:.1f} = {ratio:.2f}x")
    print(f"within {args.bound}x: {ratio <= args.bound}")
    result = {
        "sizes": sizes,
        "mixes": mixes,
        "runs": runs,
        "worst_seconds_per_million": worst,
        "best_seconds_per_million": best,
        "worst_best_ratio": ratio,
        "bound": args.bound,
        "within_bound": ratio <= args.bound,
    }
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

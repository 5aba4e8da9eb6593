"""The points of a batch's progress that a test or a benchmark may watch.

Production code takes a `BatchProbe` and calls it at each point; the base class does nothing,
and nothing in production reads a test setting. The kill tests pass a probe that SIGKILLs the
batch at a chosen point (tests/settlement/probes.py), the benchmark one that times the
phases of the files pass (benchmarks/settle_bench.py).

With two files workers the probe is pickled into the worker process (spawned, see
files.write_batch_folders), so a subclass must pickle; after the worker finished, its copy comes
back and the calling process's probe `merge`s it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class BatchProbe:
    """Watches a batch; every method is a no-op here."""

    def reached(self, point: str) -> None:
        """A step is done: a state committed (open, closing, netted, files_written) or the
        staging folder renamed into place (renamed)."""

    def lines_written(self, count: int) -> None:
        """`count` lines of the window are written into statements (the calling process)."""

    def party_written(self, n: int) -> None:
        """The n-th party's XLSX and camt.053 are written (in whichever process writes it)."""

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Wraps one stretch of a phase of the files pass (stream, tap, details, csv, xlsx,
        camt, manifests; share: one worker's whole share)."""
        yield

    def merge(self, worker: BatchProbe) -> None:
        """Fold in the files worker's copy of this probe once the worker finished."""


NO_PROBE = BatchProbe()

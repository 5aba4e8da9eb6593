"""Probes the settlement tests inject into a batch (settlement.probe.BatchProbe).

CrashAt, the kill tests' fault injection, SIGKILLs the batch at a named point. Points: open, closing, netted, files_written, renamed (steps of `run_batch`), lines:<n> (once
n lines of the window were written into statements), party:<n> (after the n-th party's XLSX
and camt.053, in whichever process writes it). Run as a program, `main` settles one day as
`clearing settlement run` does, with the probe injected. ProcessWitness records which process
wrote each party and what that process inherited from the test's.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from datetime import date, datetime

from settlement.probe import BatchProbe

MARK = "unset"
"""A test sets this in its own process: a forked files worker would inherit the change, a
spawned one imports this module afresh and sees "unset"."""


class ProcessWitness(BatchProbe):
    """Records (pid, MARK) in the process that wrote each party, and in each process that ran a
    share (its CSVs); the worker's copy merges back."""

    def __init__(self) -> None:
        self.parties: list[tuple[int, str]] = []
        self.shares: list[tuple[int, str]] = []

    def party_written(self, n: int) -> None:
        """Note this process and what it sees of MARK."""
        self.parties.append((os.getpid(), MARK))

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Note the process that runs a share."""
        if name == "share":
            self.shares.append((os.getpid(), MARK))
        yield

    def merge(self, worker: BatchProbe) -> None:
        """Take the worker's notes."""
        assert isinstance(worker, ProcessWitness)
        self.parties.extend(worker.parties)
        self.shares.extend(worker.shares)


class FailAt(BatchProbe):
    """Raise after the `n`-th party's formats written by the calling process or the worker."""

    def __init__(self, n: int, *, in_worker: bool) -> None:
        self.n = n
        self.in_worker = in_worker
        self.batch_pid = os.getpid()

    def party_written(self, n: int) -> None:
        """Fail at the chosen party of the chosen process."""
        if n == self.n and (os.getpid() != self.batch_pid) == self.in_worker:
            raise RuntimeError(f"failing after party {n}")


class CrashAt(BatchProbe):
    """SIGKILL the batch process (and the files worker, if it is the one) at `point`."""

    def __init__(self, point: str) -> None:
        self.point = point
        # Made in the batch process: a files worker's copy knows whom to take down with it.
        self.batch_pid = os.getpid()

    def _die(self) -> None:
        if self.batch_pid != os.getpid():
            os.kill(self.batch_pid, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    def reached(self, point: str) -> None:
        """Die if this step is the point."""
        if point == self.point:
            self._die()

    def lines_written(self, count: int) -> None:
        """Die once `lines:<n>` lines were written."""
        if self.point.startswith("lines:") and count >= int(self.point.removeprefix("lines:")):
            self._die()

    def party_written(self, n: int) -> None:
        """Die after the `party:<n>`-th party's files."""
        if self.point == f"party:{n}":
            self._die()


def main(argv: list[str]) -> None:
    """`POINT DATE CURRENCY AS_OF`: settle that day from the CLEARING_* settings, dying at POINT."""
    import clearing.app.tables  # noqa: F401  (every mapped class, as the CLI loads them)
    from clearing.core.config import Settings
    from clearing.core.db import make_engine
    from settlement.service import run_batch

    point, day, currency, as_of = argv
    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    try:
        run_batch(
            engine,
            date.fromisoformat(day),
            currency,
            datetime.fromisoformat(as_of),
            settings,
            probe=CrashAt(point),
        )
    finally:
        engine.dispose()

"""A process's copy of what every operation reads and a party rarely changes (risk's limit
rules, freezes and blocklist; the agreements in force): trusted for `seconds`, dropped at once
in the process that makes a change.

Reading them live would cost every screened operation a statement; the price of the copy is
that another process sees a change within `seconds`, not at once.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar, cast

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

T = TypeVar("T")


class ProcessCopy(Generic[T]):
    """What `load` reads, kept per engine for `seconds`."""

    def __init__(self, load: Callable[[Session], T], seconds: float = 5.0) -> None:
        self.load = load
        self.seconds = seconds
        self._copies: weakref.WeakKeyDictionary[Engine, tuple[float, T]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def get(self, session: Session) -> T:
        """The copy of the session's engine if younger than `seconds`, else read anew."""
        engine = cast(Engine, session.get_bind())
        clock = time.monotonic()
        with self._lock:
            kept = self._copies.get(engine)
        if kept is not None and clock - kept[0] < self.seconds:
            return kept[1]
        found = self.load(session)
        with self._lock:
            self._copies[engine] = (clock, found)
        return found

    def changed(self, session: Session) -> None:
        """Drop the copy now and again once the change commits, so that no operation keeps a
        copy read in between."""
        engine = cast(Engine, session.get_bind())

        def forget(*_: object) -> None:
            with self._lock:
                self._copies.pop(engine, None)

        forget()
        event.listen(session, "after_commit", forget, once=True)

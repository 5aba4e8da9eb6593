"""How a database's ledger posts: which engine, and how many balance slots a hot account gets.

The options travel with the SQLAlchemy engine (as an execution option), so that every `Ledger`
made on a session of that engine, wherever a service makes it, posts as the settings say.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from clearing.core.config import LEDGER_ENGINES, LedgerEngine, Settings
from clearing.core.money import BALANCE_LIMIT

# Each slot stays within +/- BALANCE_LIMIT, so this many slots still sum inside 64 bits.
MAX_BALANCE_SLOTS = (2**63 - 1) // BALANCE_LIMIT

_OPTION = "clearing_ledger"


@dataclass(frozen=True, slots=True)
class LedgerOptions:
    """`server`: `ledger_post` applies postings on PostgreSQL; `python`: the portable engine."""

    engine: LedgerEngine = "server"
    balance_slots: int = 8

    def __post_init__(self) -> None:
        if self.engine not in LEDGER_ENGINES:
            raise ValueError(
                f"ledger engine must be one of {', '.join(LEDGER_ENGINES)}: {self.engine!r}"
            )
        if not 1 <= self.balance_slots <= MAX_BALANCE_SLOTS:
            raise ValueError(
                f"balance slots must be between 1 and {MAX_BALANCE_SLOTS}: {self.balance_slots}"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> LedgerOptions:
        """The options the platform's settings give."""
        return cls(engine=settings.ledger_engine, balance_slots=settings.balance_slots)


DEFAULT = LedgerOptions()


def bind_ledger_options(engine: Engine, options: LedgerOptions) -> Engine:
    """Make every ledger on sessions of `engine` post with `options`; returns the engine."""
    engine.update_execution_options(**{_OPTION: options})
    return engine


def ledger_options(session: Session) -> LedgerOptions:
    """The options bound to the session's engine, else the defaults."""
    found = session.get_bind().get_execution_options().get(_OPTION)
    return found if isinstance(found, LedgerOptions) else DEFAULT

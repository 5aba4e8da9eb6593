"""Settings read from the environment."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

if TYPE_CHECKING:
    from sqlalchemy import Engine

LedgerEngine = Literal["server", "python"]
LEDGER_ENGINES: tuple[LedgerEngine, ...] = ("server", "python")
SETTLEMENT_ENGINES = ("pandas", "spark")


@dataclass(frozen=True)
class Settings:
    """Everything the platform reads from its environment, with embedded defaults."""

    database_url: str
    zone: str
    cutoff: str
    settlement_dir: Path
    hold_ttl_seconds: int
    balance_slots: int
    """Balance rows of each new system account (`CLEARING_BALANCE_SLOTS`, 1 to 9)."""
    ledger_engine: LedgerEngine = "server"
    """Who applies a posting on PostgreSQL: `server` (the `ledger_post` function, one round trip)
    or `python` (the portable engine SQLite always uses). `CLEARING_LEDGER_ENGINE`."""
    platform_key_path: Path = Path("var/keys/platform.pem")
    """PEM file of the platform's own Ed25519 signing key (created on first use, mode 0600)."""
    max_body_bytes: int = 1 << 20
    """Largest request body accepted, in bytes (a larger one is refused with 413)."""
    max_bulk_body_bytes: int = 64 << 20
    """Largest body of the bulk accrual-file route, in bytes."""
    settlement_reader: str = "select"
    """How a settlement batch reads its window: `select` (SQLAlchemy, either database) or
    `psql` (PostgreSQL through a `psql` COPY child; faster on large days). settlement/FILES.md."""
    settlement_workers: int | None = None
    """Processes writing a batch's files (1 or 2); unset: two from 200,000 lines on."""
    settlement_engine: str = "pandas"
    """What nets a batch and writes its files: `pandas` (this process and one files worker) or
    `spark` (the window exported as Parquet, then Apache Spark at `spark_master`).
    `CLEARING_SETTLEMENT_ENGINE`; both give byte-identical files. settlement/SCALE.md."""
    spark_master: str = "local[2]"
    """The Spark master of the `spark` engine (`CLEARING_SPARK_MASTER`): `local[N]` on one
    machine, a cluster URL in production."""
    settlement_grace_minutes: int = 10
    """Minutes after the cut-off before the daily batch runs (late postings of the day land)."""
    payment_deadline_hours: int = 24
    """Hours after a batch's publication by which a party must have paid its net debit; past it
    the party is restricted (`CLEARING_PAYMENT_DEADLINE_HOURS`)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from CLEARING_* variables (of `environ`, by default the process's)."""
        env = os.environ if environ is None else environ
        var = Path(env.get("CLEARING_VAR_DIR", "var"))
        return cls(
            database_url=env.get("CLEARING_DATABASE_URL", f"sqlite:///{var}/clearing.db"),
            zone=env.get("CLEARING_ZONE", "Asia/Shanghai"),
            cutoff=env.get("CLEARING_CUTOFF", "00:00"),
            settlement_dir=Path(env.get("CLEARING_SETTLEMENT_DIR", str(var / "settlement"))),
            hold_ttl_seconds=_whole(env, "CLEARING_HOLD_TTL_SECONDS", 900),
            balance_slots=_whole(env, "CLEARING_BALANCE_SLOTS", 8),
            ledger_engine=_ledger_engine(env.get("CLEARING_LEDGER_ENGINE", "server")),
            platform_key_path=Path(
                env.get("CLEARING_PLATFORM_KEY", str(var / "keys" / "platform.pem"))
            ),
            max_body_bytes=_whole(env, "CLEARING_MAX_BODY_BYTES", 1 << 20),
            max_bulk_body_bytes=_whole(env, "CLEARING_MAX_BULK_BODY_BYTES", 64 << 20),
            settlement_grace_minutes=_whole(env, "CLEARING_SETTLEMENT_GRACE_MINUTES", 10),
            payment_deadline_hours=_whole(env, "CLEARING_PAYMENT_DEADLINE_HOURS", 24),
            settlement_workers=(
                _whole(env, "CLEARING_SETTLEMENT_WORKERS", 0)
                if env.get("CLEARING_SETTLEMENT_WORKERS")
                else None
            ),
            settlement_engine=_one_of(
                "CLEARING_SETTLEMENT_ENGINE",
                env.get("CLEARING_SETTLEMENT_ENGINE", "pandas"),
                SETTLEMENT_ENGINES,
            ),
            spark_master=env.get("CLEARING_SPARK_MASTER", "local[2]"),
            settlement_reader=_one_of(
                "CLEARING_SETTLEMENT_READER",
                env.get("CLEARING_SETTLEMENT_READER", "select"),
                ("select", "psql"),
            ),
        )

    def open_engine(self) -> Engine:
        """An engine on `database_url` whose ledgers post as these settings say."""
        from clearing.core.db import make_engine
        from clearing.core.ledger.options import LedgerOptions, bind_ledger_options

        engine = make_engine(self.database_url)
        return bind_ledger_options(engine, LedgerOptions.from_settings(self))


def _ledger_engine(value: str) -> LedgerEngine:
    return cast(LedgerEngine, _one_of("CLEARING_LEDGER_ENGINE", value, tuple(LEDGER_ENGINES)))


def with_settlement_engine(settings: Settings, name: str | None) -> Settings:
    """`settings` with the settlement engine `name` (None: as they are); ValueError if unknown."""
    if name is None:
        return settings
    if name not in SETTLEMENT_ENGINES:
        raise ValueError(f"one of {', '.join(SETTLEMENT_ENGINES)}, not {name!r}")
    return dataclasses.replace(settings, settlement_engine=name)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """`value` if it is one of `allowed`; a ValueError naming the variable otherwise."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    """The whole number `env[name]` holds (`default` when unset); a ValueError naming it if not."""
    text = env.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {text!r}") from None

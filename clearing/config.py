"""Settings read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Everything the platform reads from its environment, with embedded defaults."""

    database_url: str
    zone: str
    cutoff: str
    settlement_dir: Path
    hold_ttl_seconds: int
    balance_slots: int
    platform_key_path: Path = Path("var/keys/platform.pem")
    """PEM file of the platform's own Ed25519 signing key (created on first use, mode 0600)."""
    max_body_bytes: int = 1 << 20
    """Largest request body accepted, in bytes (a larger one is refused with 413)."""
    max_bulk_body_bytes: int = 64 << 20
    """Largest body of the bulk accrual-file route, in bytes."""
    settlement_reader: str = "select"
    """How a settlement batch reads its window: `select` (SQLAlchemy, either database) or
    `psql` (PostgreSQL through a `psql` COPY child; faster on large days). settlement/FILES.md."""

    @classmethod
    def from_env(cls) -> Settings:
        """Read settings from CLEARING_* variables."""
        var = Path(os.environ.get("CLEARING_VAR_DIR", "var"))
        return cls(
            database_url=os.environ.get("CLEARING_DATABASE_URL", f"sqlite:///{var}/clearing.db"),
            zone=os.environ.get("CLEARING_ZONE", "Asia/Shanghai"),
            cutoff=os.environ.get("CLEARING_CUTOFF", "00:00"),
            settlement_dir=Path(os.environ.get("CLEARING_SETTLEMENT_DIR", str(var / "settlement"))),
            hold_ttl_seconds=int(os.environ.get("CLEARING_HOLD_TTL_SECONDS", "900")),
            balance_slots=int(os.environ.get("CLEARING_BALANCE_SLOTS", "8")),
            platform_key_path=Path(
                os.environ.get("CLEARING_PLATFORM_KEY", str(var / "keys" / "platform.pem"))
            ),
            max_body_bytes=int(os.environ.get("CLEARING_MAX_BODY_BYTES", str(1 << 20))),
            max_bulk_body_bytes=int(os.environ.get("CLEARING_MAX_BULK_BODY_BYTES", str(64 << 20))),
            settlement_reader=_one_of(
                "CLEARING_SETTLEMENT_READER",
                os.environ.get("CLEARING_SETTLEMENT_READER", "select"),
                ("select", "psql"),
            ),
        )


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """`value` if it is one of `allowed`; a ValueError naming the variable otherwise."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value

"""Settings read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
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
            hold_ttl_seconds=int(env.get("CLEARING_HOLD_TTL_SECONDS", "900")),
            balance_slots=int(env.get("CLEARING_BALANCE_SLOTS", "8")),
            platform_key_path=Path(
                env.get("CLEARING_PLATFORM_KEY", str(var / "keys" / "platform.pem"))
            ),
            max_body_bytes=int(env.get("CLEARING_MAX_BODY_BYTES", str(1 << 20))),
            max_bulk_body_bytes=int(env.get("CLEARING_MAX_BULK_BODY_BYTES", str(64 << 20))),
        )

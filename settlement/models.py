"""Tables of settlement: batches, the net position of each party in a batch, the files written."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from clearing.core.db import Base
from clearing.core.models import UTCDateTime

TOTAL_DIGITS = 38
"""Decimal digits of a stored total: a day of 2^31 obligations of 10^15 each sums to 25 digits."""


class WideInt(TypeDecorator[int]):
    """An integer total wider than bigint: NUMERIC(38, 0) on PostgreSQL; decimal text on SQLite,
    whose NUMERIC turns an integer past 2^63 into a float."""

    impl = Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(TOTAL_DIGITS + 2))
        return dialect.type_descriptor(Numeric(TOTAL_DIGITS, 0, asdecimal=True))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> object:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return str(int(value))
        return int(value)

    def process_result_value(self, value: object, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, int | Decimal):
            return int(value)
        return int(str(value))


BATCH_STATES = ("open", "closing", "exported", "netted", "files_written", "published")
"""The only order a batch moves in; each step is committed on its own. `exported` is passed
only by the Spark engine (the window written out as Parquet); the pandas engine goes from
closing to netted."""


class SettlementBatch(Base):
    """One business day of one currency: its window, where it got to, its control totals."""

    __tablename__ = "settlement_batches"
    __table_args__ = (
        UniqueConstraint("currency", "business_date", name="uq_settlement_batches_currency_date"),
        UniqueConstraint("currency", "sequence", name="uq_settlement_batches_currency_sequence"),
        CheckConstraint(
            "state IN ('open', 'closing', 'exported', 'netted', 'files_written', 'published')",
            name="state_known",
        ),
        Index("ix_settlement_batches_state", "state"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    """Deterministic, `SB-{currency}-{YYYYMMDD}`: the same day always has the same id."""
    currency: Mapped[str] = mapped_column(String(3))
    business_date: Mapped[date] = mapped_column(Date)
    zone: Mapped[str] = mapped_column(String(64))
    """IANA zone of the business day."""
    cutoff: Mapped[str] = mapped_column(String(5))
    """Local cut-off time, HH:MM, as configured when the batch was opened."""
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    """Inclusive, UTC."""
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    """Exclusive, UTC."""
    sequence: Mapped[int] = mapped_column(Integer)
    """1, 2, 3... per currency."""
    state: Mapped[str] = mapped_column(String(16))
    """open, closing, netted, files_written, published."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """When the batch was opened; also the files' generated_at, so reruns give the same bytes."""
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    line_count: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Obligations the ledger holds in the window (frozen when closing)."""
    amount_total: Mapped[int | None] = mapped_column(WideInt, default=None)
    """Sum of their amounts, minor units of `currency`."""
    points_total: Mapped[int | None] = mapped_column(WideInt, default=None)
    """Sum of their points (whole points, all programs)."""
    fee_income: Mapped[int | None] = mapped_column(WideInt, default=None)
    """The platform's fees less fee refunds, minor units."""
    directory: Mapped[str] = mapped_column(String(300))
    """Folder of the batch, relative to the settlement directory."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    """Why the last attempt stopped, if it did; cleared when the batch is published."""


class SettlementPosition(Base):
    """The multilateral net position of one party in a batch, and its statement's identity."""

    __tablename__ = "settlement_positions"
    __table_args__ = (Index("ix_settlement_positions_org", "org_id", "batch_id"),)

    batch_id: Mapped[str] = mapped_column(ForeignKey("settlement_batches.id"), primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    party_kind: Mapped[str] = mapped_column(String(12))
    party_name: Mapped[str] = mapped_column(String(200))
    net: Mapped[int] = mapped_column(WideInt)
    """Minor units; > 0: the platform pays the party, < 0: the party pays the platform."""
    statement_sequence: Mapped[int] = mapped_column(Integer)
    """1, 2, 3... per party and currency, for gap detection by the receiver."""
    file_id: Mapped[str] = mapped_column(String(120))
    previous_file_id: Mapped[str | None] = mapped_column(String(120), default=None)


class SettlementFile(Base):
    """A file of a party's folder in a batch, with the hash its manifest lists."""

    __tablename__ = "settlement_files"

    batch_id: Mapped[str] = mapped_column(ForeignKey("settlement_batches.id"), primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    """Bytes."""
    path: Mapped[str] = mapped_column(String(400))
    """Relative to the settlement directory."""

"""Tables of the ledger core: accounts, balances, journal, postings, obligations, lots, holds."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from clearing.core.db import Base, ExactDecimal

UTCDateTime = DateTime(timezone=True)


class Account(Base):
    """A ledger account holding one asset: a member's points, a program's issuance, a position."""

    __tablename__ = "accounts"
    __table_args__ = (Index("ix_accounts_asset_kind", "asset", "kind"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    asset: Mapped[str] = mapped_column(String(60))
    """'points:<program code>' or 'money:<ISO 4217 code>'."""
    kind: Mapped[str] = mapped_column(String(24))
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    """The organisation that owns the account (for a member account: the issuer)."""
    slots: Mapped[int] = mapped_column(SmallInteger, default=1)
    """Balance rows the account is spread over; more than one only for hot system accounts."""
    floor_zero: Mapped[bool] = mapped_column(Boolean, default=False)
    """Member accounts: balance may never go below zero nor below what is held."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Balance(Base):
    """One slot of an account's running balance, kept in the same transaction as the journal."""

    __tablename__ = "balances"
    __table_args__ = (
        CheckConstraint(
            "NOT floor_zero OR (held >= 0 AND balance >= held)", name="floor_zero_respected"
        ),
        # clearing.core.money.BALANCE_LIMIT: eight slots of an account still sum inside 64 bits.
        CheckConstraint(
            "balance BETWEEN -1000000000000000000 AND 1000000000000000000"
            " AND held BETWEEN 0 AND 1000000000000000000",
            name="balance_in_range",
        ),
    )

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    """Whole points, or minor units of money (fen)."""
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    """Points reserved by open holds (member accounts only)."""
    floor_zero: Mapped[bool] = mapped_column(Boolean, default=False)


class JournalEntry(Base):
    """An immutable journal entry; its postings sum to zero per asset."""

    __tablename__ = "journal_entries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    """The organisation on whose request the entry was booked."""
    booked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reverses_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("journal_entries.id"), default=None
    )
    memo: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Posting(Base):
    """One leg of a journal entry: a signed amount of the account's asset."""

    __tablename__ = "postings"
    __table_args__ = (Index("ix_postings_account", "account_id"),)

    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("journal_entries.id"), primary_key=True)
    leg: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    asset: Mapped[str] = mapped_column(String(60))
    amount: Mapped[int] = mapped_column(BigInteger)
    """Signed: positive credits the account's balance, negative debits it."""


class Obligation(Base):
    """A money obligation between two parties booked by an entry: what settlement nets."""

    __tablename__ = "obligations"
    __table_args__ = (
        # Settlement streams a window in (booked_at, entry_id, seq) order straight off this index.
        Index("ix_obligations_window", "currency", "booked_at", "entry_id", "seq"),
        CheckConstraint("amount > 0", name="amount_positive"),
    )

    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("journal_entries.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    event_type: Mapped[str] = mapped_column(String(40))
    payer_org_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    payee_org_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column(BigInteger)
    """Minor units of `currency`."""
    program_code: Mapped[str | None] = mapped_column(String(40), default=None)
    points: Mapped[int | None] = mapped_column(BigInteger, default=None)
    point_value: Mapped[Decimal | None] = mapped_column(ExactDecimal(24, 12), default=None)
    point_value_version: Mapped[int | None] = mapped_column(Integer, default=None)
    original_entry_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    booked_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Lot(Base):
    """Points of one origin in a member account, consumed earliest-expiring first."""

    __tablename__ = "lots"
    __table_args__ = (
        Index("ix_lots_account_expiry", "account_id", "expires_at"),
        Index("ix_lots_expiry", "expires_at"),
        CheckConstraint("remaining >= 0 AND remaining <= points", name="remaining_in_range"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("journal_entries.id"))
    source: Mapped[str] = mapped_column(String(24))
    """accrual, conversion, adjustment."""
    funding_org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    source_program: Mapped[str | None] = mapped_column(String(40), default=None)
    earned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    points: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)


class LotMovement(Base):
    """How many points of a lot an entry took (negative) or gave back (positive)."""

    __tablename__ = "lot_movements"
    __table_args__ = (Index("ix_lot_movements_lot", "lot_id"),)

    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("journal_entries.id"), primary_key=True)
    lot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("lots.id"), primary_key=True)
    points: Mapped[int] = mapped_column(BigInteger)


class Hold(Base):
    """Points reserved on a member account until captured, voided or expired."""

    __tablename__ = "holds"
    __table_args__ = (
        Index("ix_holds_account_status", "account_id", "status"),
        Index("ix_holds_status_expiry", "status", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    """The organisation that placed the hold (the merchant at checkout)."""
    points: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(12))
    """authorised, captured, voided, expired."""
    captured_points: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class IdempotencyRecord(Base):
    """The first result of a mutating request, replayed for any retry under the same key."""

    __tablename__ = "idempotency_records"

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    operation: Mapped[str] = mapped_column(String(60))
    fingerprint: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the canonical request; a different request under the same key conflicts."""
    request_digests: Mapped[dict[str, str] | None] = mapped_column(JSON, default=None)
    """A short SHA-256 of each request field (field name to 16 hex characters), so that a
    conflict names the field that differs without the request (which may hold a payment
    token) being stored; null for a record from before migration 0009."""
    status_code: Mapped[int] = mapped_column(SmallInteger, default=0)
    """0 while the first request is in flight inside its transaction."""
    result: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SeenNonce(Base):
    """A signature nonce already used with a key: a second use inside the window is a replay."""

    __tablename__ = "seen_nonces"
    __table_args__ = (Index("ix_seen_nonces_seen_at", "seen_at"),)

    keyid: Mapped[str] = mapped_column(String(100), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """Rows older than twice the allowed clock skew can no longer be replayed and are pruned."""

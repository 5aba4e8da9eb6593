"""Tables of the console: its users, their sessions, what they did, and dual-control requests."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from clearing.core.db import Base
from clearing.core.models import UTCDateTime


class ConsoleUser(Base):
    """A person of one organisation who signs in to the console with a role."""

    __tablename__ = "console_users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    """finance, operator, risk_analyst, viewer (reports.console.roles.Role)."""
    password_hash: Mapped[str] = mapped_column(String(200))
    """argon2id, with its parameters and salt (PHC string)."""
    totp_secret: Mapped[str] = mapped_column(String(64))
    """Base 32, shown once when the user is created; never logged."""
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """The last 30-second step a code was accepted for: a code is good once."""
    locale: Mapped[str] = mapped_column(String(8), default="en")
    status: Mapped[str] = mapped_column(String(12), default="active")
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class ConsoleSession(Base):
    """A signed-in browser: the cookie holds a random token, the table only its SHA-256."""

    __tablename__ = "console_sessions"
    __table_args__ = (Index("ix_console_sessions_user", "user_id"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("console_users.id"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class ConsoleAction(Base):
    """One thing a console user did (or tried): the audit trail, never changed."""

    __tablename__ = "console_actions"
    __table_args__ = (Index("ix_console_actions_org_at", "org_id", "at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    """None for a failed sign-in under an unknown name."""
    org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    action: Mapped[str] = mapped_column(String(60))
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConsoleRequest(Base):
    """A decision one user asked for and another must confirm (maker-checker)."""

    __tablename__ = "console_requests"
    __table_args__ = (Index("ix_console_requests_status", "org_id", "status", "requested_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    """The organisation whose users may confirm it (the requester's)."""
    action: Mapped[str] = mapped_column(String(60))
    target: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    """pending, done, rejected, failed."""
    requested_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("console_users.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    outcome: Mapped[str] = mapped_column(Text, default="")

"""Results of settlement: batches, positions and files as the CLI and the API show them."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from clearing.core.schemas import Model


class FileOut(Model):
    name: str
    sha256: str
    size: int
    """Bytes."""


class PositionOut(Model):
    org_id: uuid.UUID
    party_kind: str
    party_name: str
    net: int
    """Minor units; > 0: the platform pays the party."""
    file_id: str
    statement_sequence: int
    previous_file_id: str | None


class BatchOut(Model):
    id: str
    currency: str
    business_date: date
    zone: str
    window_start: datetime
    window_end: datetime
    sequence: int
    state: str
    created_at: datetime
    published_at: datetime | None
    line_count: int | None
    """Obligations of the window."""
    amount_total: int | None
    """Minor units."""
    points_total: int | None
    fee_income: int | None
    directory: str
    """Absolute folder of the batch's files (CLI) or its name relative to the settlement root."""
    error: str | None
    positions: list[PositionOut]


class PartyBatchOut(Model):
    """A batch as one party sees it through the API: its own position and its own files."""

    id: str
    currency: str
    business_date: date
    zone: str
    window_start: datetime
    window_end: datetime
    sequence: int
    state: str
    published_at: datetime | None
    positions: list[PositionOut]
    """The caller's own position only; every party's for the operator."""
    files: list[FileOut]
    """The caller's own files (the platform's for the operator)."""

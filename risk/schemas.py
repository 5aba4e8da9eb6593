"""Requests and results of the risk domain."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import ConfigDict

from clearing.core.schemas import Model


class DecisionOut(Model):
    """A logged decision."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    decided_at: datetime
    action: str
    verdict: str
    outcome: str
    code: str | None
    rule_id: str | None
    rule_version: int | None
    reason: str
    caller_org_id: uuid.UUID
    program_code: str | None
    member_id: uuid.UUID | None
    merchant_org_id: uuid.UUID | None
    issuer_org_id: uuid.UUID | None
    inputs: dict[str, Any]

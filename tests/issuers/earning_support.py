"""Helpers of the earning tests: publish a book or a campaign, post or preview an event."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from clearing.core.db import transaction
from clearing.web.context import Caller
from issuers import events
from issuers.earning_schemas import (
    CampaignCreate,
    CampaignOut,
    EarningBookCreate,
    EventBatchCreate,
    EventBatchOut,
    EventCreate,
    EventOut,
)
from tests.factories import T0, key


def book(engine: Engine, issuer: Caller, code: str, now: datetime = T0, **fields: Any) -> None:
    """Publish an earning book of `code`."""
    with transaction(engine) as session:
        events.publish_book(session, issuer, code, EarningBookCreate.model_validate(fields), now)


def campaign(
    engine: Engine, issuer: Caller, program: str, now: datetime = T0, **fields: Any
) -> CampaignOut:
    """Publish a campaign of `code`."""
    fields.setdefault("starts_at", now)
    fields.setdefault("name", fields["code"])
    with transaction(engine) as session:
        return events.create_campaign(
            session, issuer, program, CampaignCreate.model_validate(fields), now
        )


def figures(engine: Engine, issuer: Caller, code: str, campaign_code: str) -> CampaignOut:
    """A campaign's figures."""
    with transaction(engine) as session:
        return events.campaign(session, issuer, code, campaign_code)


def post(
    engine: Engine,
    poster: Caller,
    code: str,
    now: datetime = T0,
    idem: str | None = None,
    **fields: Any,
) -> EventOut:
    """Post an event."""
    with transaction(engine) as session:
        out, _ = events.post_event(
            session, poster, code, EventCreate.model_validate(fields), now, idem or key()
        )
        return out


def preview(
    engine: Engine, poster: Caller, code: str, now: datetime = T0, **fields: Any
) -> EventOut:
    """Preview an event."""
    with transaction(engine) as session:
        return events.preview_event(session, poster, code, EventCreate.model_validate(fields), now)


def post_file(
    engine: Engine, poster: Caller, code: str, lines: list[dict[str, Any]], now: datetime = T0
) -> EventBatchOut:
    """Post a bulk file of events."""
    with transaction(engine) as session:
        out, _ = events.post_event_batch(
            session, poster, code, EventBatchCreate.model_validate({"items": lines}), now, key()
        )
        return out


def steps(out: EventOut, n: int = 0) -> list[tuple[str, str | None, int]]:
    """The explanation of the n-th earning as (step, ref, points)."""
    return [(s.step, s.ref, s.points) for s in out.earnings[n].explanation]

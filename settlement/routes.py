"""Routes of settlement: the batches a party took part in, and downloads of its own files."""

from __future__ import annotations

import pathlib
import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy.orm import Session

from clearing.core.config import Settings
from clearing.core.errors import InvalidInput, NotFound
from clearing.web.api import (
    After,
    DigestedFileResponse,
    Limit,
    Page,
    SessionDep,
    decode_cursor,
    encode_cursor,
)
from clearing.web.auth import CallerDep
from clearing.web.context import Caller
from issuers.models import Organisation
from settlement import repository as repo
from settlement.models import SettlementBatch
from settlement.schemas import FileOut, PartyBatchOut
from settlement.service import position_out

router = APIRouter(prefix="/v1/settlement", tags=["settlement"])

FileName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]
CONTENT_TYPES = {
    ".csv": "text/csv; charset=utf-8",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".xml": "application/xml",
    ".json": "application/json",
    ".sig": "application/octet-stream",
}


class SettlementFileNotFound(NotFound):
    code = "settlement_file_not_found"
    title = "No such settlement file"


def _party_batch(session: Session, batch: SettlementBatch, caller: Caller) -> PartyBatchOut:
    positions = repo.positions(session, batch.id)
    own = caller.org_id
    if not caller.is_platform:
        positions = [p for p in positions if p.org_id == own]
    files = repo.files(session, batch.id, own)
    return PartyBatchOut(
        id=batch.id,
        currency=batch.currency,
        business_date=batch.business_date,
        zone=batch.zone,
        window_start=repo.utc(batch.window_start),
        window_end=repo.utc(batch.window_end),
        sequence=batch.sequence,
        state=batch.state,
        published_at=None if batch.published_at is None else repo.utc(batch.published_at),
        positions=[position_out(p) for p in positions],
        files=[FileOut(name=f.name, sha256=f.sha256, size=f.size) for f in files],
    )


@router.get("/batches", response_model=Page[PartyBatchOut])
def list_batches(
    caller: CallerDep, session: SessionDep, after: After = None, limit: Limit = 50
) -> Page[PartyBatchOut]:
    """Batches newest first: a party sees the published batches it has a position in, with its
    own position and files; the operator sees every batch in any state."""
    cursor: tuple[date, str] | None = None
    if after is not None:
        day, batch_id = decode_cursor(after, 2)
        try:
            cursor = (date.fromisoformat(day), batch_id)
        except ValueError:
            raise InvalidInput("invalid cursor", field="after") from None
    batches = repo.list_batches(
        session,
        org_id=None if caller.is_platform else caller.org_id,
        states=None if caller.is_platform else ("published",),
        after=cursor,
        limit=limit + 1,
    )
    more = len(batches) > limit
    batches = batches[:limit]
    last = batches[-1] if more and batches else None
    return Page[PartyBatchOut](
        items=[_party_batch(session, b, caller) for b in batches],
        next=None if last is None else encode_cursor(last.business_date.isoformat(), last.id),
    )


@router.get(
    "/batches/{business_date}/files/{name}",
    responses={200: {"content": {t: {} for t in CONTENT_TYPES.values()}}},
)
def download_file(
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    business_date: date,
    name: FileName,
    currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None,
    party: Annotated[uuid.UUID | None, Query(description="Operator only: whose file")] = None,
) -> Response:
    """One file of the caller's own folder of a published batch (the operator: of `party`, by
    default the platform's own). Anything else, including another party's file, is a 404."""
    owner = caller.org_id
    if party is not None and party != caller.org_id:
        if not caller.is_platform:
            raise SettlementFileNotFound("no such file")
        owner = party
    if currency is None:
        org = session.get(Organisation, owner)
        if org is None:
            raise SettlementFileNotFound("no such file")
        currency = org.currency
    batch = repo.get_batch(session, currency, business_date)
    if batch is None or batch.state != "published":
        raise SettlementFileNotFound("no such file")
    row = repo.file_of(session, batch.id, owner, name)
    if row is None:
        raise SettlementFileNotFound("no such file")
    settings: Settings = request.app.state.settings
    path = settings.settlement_dir / row.path
    if not path.is_file():
        raise SettlementFileNotFound("no such file")
    return file_download(path, name, row.sha256, row.size)


def file_download(path: pathlib.Path, name: str, sha256: str, size: int) -> DigestedFileResponse:
    """A settlement file as an attachment, streamed, its digest (from the manifest) in the head."""
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    return DigestedFileResponse(
        path,
        sha256,
        size,
        media_type=CONTENT_TYPES.get(suffix, "application/octet-stream"),
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Content-SHA256": sha256,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )

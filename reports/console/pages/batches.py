"""Settlement: the batches, each party folder's files to download and their verification."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, Response

from clearing.core.config import Settings
from clearing.core.timeutil import utcnow
from clearing.web.api import SessionDep
from clearing.web.platform_key import load_or_create
from reports.console import finance
from reports.console.accounts import record
from reports.console.roles import Page
from reports.console.web import Viewing, allowed, render
from settlement.routes import file_download

router = APIRouter()
Finance = Annotated[Viewing, Depends(allowed(Page.BATCHES))]
BatchId = Annotated[str, Path(pattern=r"^SB-[A-Z]{3}-[0-9]{8}$")]
FileName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _scope(viewer: Viewing) -> uuid.UUID | None:
    """Whose figures the viewer sees: None (every party) for the platform's users."""
    return None if viewer.is_platform else viewer.org_id


@router.get("/batches", response_class=HTMLResponse)
def batch_list(request: Request, viewer: Finance, session: SessionDep) -> HTMLResponse:
    """Every batch the viewer may see, newest first, with its state."""
    found = finance.batches(session, _scope(viewer))
    return render(request, "batches.html", viewer=viewer, batches=found)


@router.get(f"/batches/{finance.PUBLIC_KEY_NAME}")
def platform_public_key(request: Request, viewer: Finance, session: SessionDep) -> Response:
    """The platform's public key (PEM), the one OpenSSL checks the manifests' signatures with."""
    key = load_or_create(_settings(request).platform_key_path)
    record(session, viewer.signed_in, "public_key_downloaded", key.keyid, {}, utcnow())
    return Response(
        finance.public_key_pem(key.public_key),
        media_type="application/x-pem-file",
        headers={"content-disposition": f'attachment; filename="{finance.PUBLIC_KEY_NAME}"'},
    )


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
def batch_files(
    request: Request, viewer: Finance, session: SessionDep, batch_id: BatchId
) -> HTMLResponse:
    """One batch: the viewer's folders (the platform: every party's), each file checked."""
    found = finance.batch(session, batch_id, _scope(viewer))
    settings = _settings(request)
    folders = finance.folders(
        session,
        settings.settlement_dir,
        found,
        _scope(viewer),
        load_or_create(settings.platform_key_path).public_key,
    )
    return render(
        request,
        "batch.html",
        viewer=viewer,
        batch=found,
        folders=folders,
        signature_command=finance.OPENSSL_SIGNATURE,
        public_key_name=finance.PUBLIC_KEY_NAME,
    )


@router.get("/batches/{batch_id}/files/{org_id}/{name}")
def download(
    request: Request,
    viewer: Finance,
    session: SessionDep,
    batch_id: BatchId,
    org_id: uuid.UUID,
    name: FileName,
) -> Response:
    """A file of a party's folder, streamed under its recorded SHA-256; every download audited."""
    scope = _scope(viewer)
    if scope is not None and org_id != scope:
        raise finance.BatchNotFound("no such file")
    found = finance.batch(session, batch_id, scope)
    row = finance.file_for(session, found, org_id, name)
    path = _settings(request).settlement_dir / row.path
    if not path.is_file():
        raise finance.BatchNotFound("no such file")
    record(
        session,
        viewer.signed_in,
        "file_downloaded",
        f"{batch_id}/{org_id}/{name}",
        {"sha256": row.sha256, "size": row.size},
        utcnow(),
    )
    return file_download(path, name, row.sha256, row.size)

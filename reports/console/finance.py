"""What the finance pages read: batches, each file checked against its signed manifest, positions
and payments, and the OpenSSL commands that check the same offline (no HTTP here).

A file's check is the one `settlement.verify` makes: its SHA-256 against the manifest's entry,
and the manifest's Ed25519 signature by the platform key. Hashing a large statement costs
seconds, so a file's digest is kept per (path, size, modification time): a file that changes on
disk is hashed again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select
from sqlalchemy.orm import Session

from clearing.core.errors import Forbidden, NotFound
from risk.models import SettlementPayment
from settlement import repository as settlement_repo
from settlement.files import file_sha256
from settlement.manifest import MANIFEST_NAME, SIGNATURE_NAME
from settlement.models import SettlementBatch, SettlementFile, SettlementPosition

PUBLIC_KEY_NAME = "platform.pem"
"""What the console names the platform's public key when a finance user downloads it."""
OPENSSL_SIGNATURE = (
    f"openssl pkeyutl -verify -pubin -inkey {PUBLIC_KEY_NAME} -rawin "
    f"-in {MANIFEST_NAME} -sigfile {SIGNATURE_NAME}"
)
"""settlement/FILES.md's command: checks the manifest's signature by the platform key."""


class BatchNotFound(NotFound):
    code = "batch_not_found"
    title = "No such settlement batch"


class FileState(StrEnum):
    """Whether a file on disk is the one its signed manifest lists."""

    VERIFIED = "verified"  # its SHA-256 is the manifest's, and the manifest's signature holds
    UNSIGNED = "unsigned"  # the hash matches, but the manifest's signature does not verify
    MISMATCH = "mismatch"  # the bytes on disk are not the ones the manifest lists
    MISSING = "missing"  # recorded, but not on disk


@dataclass(frozen=True, slots=True)
class FileCheck:
    """One file of a party's folder, and what checking it found."""

    name: str
    size: int
    sha256: str
    """The digest the manifest lists (for the manifest and its signature: the recorded one)."""
    state: FileState

    @property
    def openssl(self) -> str:
        """The command that prints the file's SHA-256 offline, to compare with `sha256`."""
        return f"openssl dgst -sha256 {self.name}"


@dataclass(frozen=True, slots=True)
class FolderCheck:
    """A party's folder of a batch: its files, checked, and whether the manifest is signed."""

    org_id: uuid.UUID
    party_name: str
    signature_ok: bool
    files: list[FileCheck] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        """Every file is the one the signed manifest lists."""
        return self.signature_ok and all(f.state == FileState.VERIFIED for f in self.files)


@dataclass(frozen=True, slots=True)
class PositionLine:
    """A party's net position in a batch, and its payment if one is recorded."""

    batch: SettlementBatch
    position: SettlementPosition
    net: int
    payment: SettlementPayment | None

    @property
    def due(self) -> str | None:
        """What the payment is to be: `paid` (a debit), `received` (a credit); None for zero
        and for the platform's own position (its fee income, which nobody pays it by transfer)."""
        if self.net == 0 or self.position.party_kind == "platform":
            return None
        return "paid" if self.net < 0 else "received"


@lru_cache(maxsize=4096)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def digest_of(path: Path) -> str | None:
    """The file's SHA-256, hashed once per version of the file; None when it is not there."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return _digest(str(path), stat.st_size, stat.st_mtime_ns)


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    """The platform's public key as OpenSSL reads it (SubjectPublicKeyInfo PEM)."""
    return public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def _manifest(folder: Path, public_key: Ed25519PublicKey) -> tuple[bool, dict[str, str]]:
    """Whether the manifest's signature holds, and the digests it lists by file name."""
    try:
        data = (folder / MANIFEST_NAME).read_bytes()
        signature = (folder / SIGNATURE_NAME).read_bytes()
    except FileNotFoundError:
        return False, {}
    try:
        public_key.verify(signature, data)
        signed = True
    except InvalidSignature:
        signed = False
    try:
        listed = json.loads(data).get("files", [])
        hashes = {str(e["name"]): str(e["sha256"]) for e in listed if isinstance(e, dict)}
    except (ValueError, AttributeError, KeyError, TypeError):
        return False, {}
    return signed, hashes


def check_folder(
    settlement_dir: Path,
    rows: Sequence[SettlementFile],
    public_key: Ed25519PublicKey,
    party_name: str,
) -> FolderCheck:
    """Check one party's recorded files against the folder's signed manifest."""
    if not rows:
        raise ValueError("a folder to check has at least one file")
    folder = (settlement_dir / rows[0].path).parent
    signed, listed = _manifest(folder, public_key)
    checks: list[FileCheck] = []
    for row in sorted(rows, key=lambda r: r.name):
        # The manifest and its signature are not listed in the manifest: the signature vouches
        # for the first, and the recorded digest for both.
        expected = listed.get(row.name, row.sha256)
        actual = digest_of(settlement_dir / row.path)
        if actual is None:
            state = FileState.MISSING
        elif actual != expected or actual != row.sha256:
            state = FileState.MISMATCH
        elif not signed:
            state = FileState.UNSIGNED
        else:
            state = FileState.VERIFIED
        checks.append(FileCheck(row.name, row.size, expected, state))
    return FolderCheck(rows[0].org_id, party_name, signed, checks)


def batches(session: Session, org_id: uuid.UUID | None, limit: int = 60) -> list[SettlementBatch]:
    """Batches newest first: a party's published ones it has a position in; every one for None."""
    return settlement_repo.list_batches(
        session,
        org_id=org_id,
        states=None if org_id is None else ("published",),
        limit=limit,
    )


def batch(session: Session, batch_id: str, org_id: uuid.UUID | None) -> SettlementBatch:
    """One batch the viewer may see (a party: published, with its own position)."""
    found = settlement_repo.batch_by_id(session, batch_id)
    if found is None:
        raise BatchNotFound("no such batch")
    if org_id is not None:
        own = session.get(SettlementPosition, (batch_id, org_id))
        if found.state != "published" or own is None:
            raise BatchNotFound("no such batch")
    return found


def folders(
    session: Session,
    settlement_dir: Path,
    found: SettlementBatch,
    org_id: uuid.UUID | None,
    public_key: Ed25519PublicKey,
) -> list[FolderCheck]:
    """The folders of a batch the viewer may download (a party: its own), each checked."""
    rows = settlement_repo.files(session, found.id, org_id)
    names = {p.org_id: p.party_name for p in settlement_repo.positions(session, found.id)}
    by_party: dict[uuid.UUID, list[SettlementFile]] = {}
    for row in rows:
        by_party.setdefault(row.org_id, []).append(row)
    return [
        check_folder(settlement_dir, files, public_key, names.get(party, str(party)))
        for party, files in by_party.items()
    ]


def file_for(
    session: Session, found: SettlementBatch, owner: uuid.UUID, name: str
) -> SettlementFile:
    """A recorded file of a published batch (any other state has nothing to hand out)."""
    row = settlement_repo.file_of(session, found.id, owner, name)
    if found.state != "published" or row is None:
        raise BatchNotFound("no such file")
    return row


def positions(
    session: Session, org_id: uuid.UUID | None, limit: int = 30
) -> list[tuple[SettlementBatch, list[PositionLine]]]:
    """Positions per batch, newest batch first (a party: only its own), with their payments."""
    shown = batches(session, org_id, limit)
    if not shown:
        return []
    ids = [b.id for b in shown]
    query = select(SettlementPosition).where(SettlementPosition.batch_id.in_(ids))
    paid = select(SettlementPayment).where(SettlementPayment.batch_id.in_(ids))
    if org_id is not None:
        query = query.where(SettlementPosition.org_id == org_id)
        paid = paid.where(SettlementPayment.org_id == org_id)
    payments = {(p.batch_id, p.org_id): p for p in session.execute(paid).scalars()}
    lines: dict[str, list[PositionLine]] = {b.id: [] for b in shown}
    by_id = {b.id: b for b in shown}
    for position in session.execute(
        query.order_by(SettlementPosition.party_kind, SettlementPosition.party_name)
    ).scalars():
        lines[position.batch_id].append(
            PositionLine(
                by_id[position.batch_id],
                position,
                int(position.net),
                payments.get((position.batch_id, position.org_id)),
            )
        )
    return [(b, lines[b.id]) for b in shown]


def latest_positions(
    session: Session, org_id: uuid.UUID | None, on_or_before: date
) -> list[tuple[SettlementBatch, list[PositionLine]]]:
    """The latest published batch of each currency up to `on_or_before` (yesterday), with its
    positions: a party's own, or every party's for None."""
    latest: dict[str, tuple[SettlementBatch, list[PositionLine]]] = {}
    for found, lines in positions(session, org_id, limit=60):
        if found.state != "published" or found.business_date > on_or_before:
            continue
        latest.setdefault(found.currency, (found, lines))
    return [latest[c] for c in sorted(latest)]


class PaymentsReadOnly(Forbidden):
    code = "payments_read_only"
    title = "Only the platform records payments"

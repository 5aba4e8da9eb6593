"""Names the pages show for ids (organisations, programs), and which of them a viewer may see."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from issuers.models import Organisation, Program


@dataclass(frozen=True, slots=True)
class Directory:
    """The organisations and programs a viewer may see, by id: every one for the platform's
    users, only their own organisation (and its programs) for a party's users."""

    organisations: dict[uuid.UUID, Organisation]
    programs: dict[uuid.UUID, Program]

    def name(self, org_id: uuid.UUID | None) -> str:
        """An organisation's name ('' if unknown or not visible)."""
        org = self.organisations.get(org_id) if org_id else None
        return org.name if org else ""

    def program(self, program_id: uuid.UUID | None) -> str:
        """A program's code ('' if unknown or not visible)."""
        program = self.programs.get(program_id) if program_id else None
        return program.code if program else ""

    def sees(self, some_id: uuid.UUID | None) -> bool:
        """Whether the id is an organisation or program the viewer may see."""
        return some_id in self.organisations or some_id in self.programs


def directory(session: Session, org_id: uuid.UUID | None) -> Directory:
    """The directory of every party (`org_id` None) or of one organisation only."""
    orgs = select(Organisation).order_by(Organisation.kind, Organisation.name)
    programs = select(Program).order_by(Program.code)
    if org_id is not None:
        orgs = orgs.where(Organisation.id == org_id)
        programs = programs.where(Program.issuer_id == org_id)
    return Directory(
        {o.id: o for o in session.scalars(orgs)},
        {p.id: p for p in session.scalars(programs)},
    )

"""Who is calling: every operation acts as one organisation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from clearing.core.kinds import OrgKind


@dataclass(frozen=True, slots=True)
class Caller:
    """The organisation on whose behalf an operation runs (the owner of the signing key)."""

    org_id: uuid.UUID
    kind: str
    key_id: str | None = None
    """The signing key's id (None for the platform's own tools and jobs)."""

    @property
    def is_platform(self) -> bool:
        """Operators act with a key of the platform organisation."""
        return self.kind == OrgKind.PLATFORM

"""Routes of the platform itself: its public keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

router = APIRouter(prefix="/v1", tags=["platform"])


@router.get("/platform/keys", summary="The platform's response-signing keys (JWKS)")
async def platform_keys(request: Request) -> dict[str, Any]:
    """JWKS of the keys that sign our responses; needs no signature, so partners can bootstrap."""
    return dict(request.app.state.platform_key.jwks())

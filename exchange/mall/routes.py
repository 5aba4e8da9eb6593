"""Routes of the points mall (thin): the catalogue, orders and vouchers."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1")

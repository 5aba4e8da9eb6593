"""The partner SDK: signs requests, verifies responses; needs neither SQLAlchemy nor pandas."""

from clearing.sdk.client import ApiError, PartnerClient

__all__ = ["ApiError", "PartnerClient"]

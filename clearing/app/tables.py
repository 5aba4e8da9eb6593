"""Imports every package's models so that the one metadata knows every table (app wiring)."""

from __future__ import annotations

import clearing.core.models
import exchange.mall.models
import exchange.models
import issuers.models
import reports.console.models
import risk.models
import settlement.models

__all__ = ["clearing", "exchange", "issuers", "reports", "risk", "settlement"]

"""settlement totals and positions wider than bigint

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 12:00:00

A day's totals (amount, points, fee income) and a party's net position can pass 2^63 minor
units when many obligations of up to 10^15 - 1 fall in one window. NUMERIC(38, 0) on
PostgreSQL; on SQLite decimal text (VARCHAR), because SQLite's NUMERIC affinity stores an
integer past 2^63 as a float. Self-contained: the types are spelled out here, not imported.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TOTALS = ("amount_total", "points_total", "fee_income")


def _wide() -> sa.types.TypeEngine[Any]:
    return sa.Numeric(38, 0).with_variant(sa.String(40), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("settlement_batches", schema=None) as batch_op:
        for name in _TOTALS:
            batch_op.alter_column(
                name,
                existing_type=sa.BigInteger(),
                type_=_wide(),
                existing_nullable=True,
                postgresql_using=f"{name}::numeric(38, 0)",
            )
    with op.batch_alter_table("settlement_positions", schema=None) as batch_op:
        batch_op.alter_column(
            "net",
            existing_type=sa.BigInteger(),
            type_=_wide(),
            existing_nullable=False,
            postgresql_using="net::numeric(38, 0)",
        )


def downgrade() -> None:
    # Fails (out of range) if a stored total no longer fits a bigint: nothing is truncated.
    with op.batch_alter_table("settlement_positions", schema=None) as batch_op:
        batch_op.alter_column(
            "net",
            existing_type=_wide(),
            type_=sa.BigInteger(),
            existing_nullable=False,
            postgresql_using="net::bigint",
        )
    with op.batch_alter_table("settlement_batches", schema=None) as batch_op:
        for name in _TOTALS:
            batch_op.alter_column(
                name,
                existing_type=_wide(),
                type_=sa.BigInteger(),
                existing_nullable=True,
                postgresql_using=f"{name}::bigint",
            )

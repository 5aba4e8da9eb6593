"""ledger_post_v2: refuses a missing balance row, keeps the memo's JSON text

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 09:00:00

The body is clearing/core/sql/ledger_post_v2.sql (see its header for what changed since v1). The
code calls `ledger_post_v2` by name, so v1, no longer called, is dropped here; the downgrade
puts v1 back from its own file.
"""

from __future__ import annotations

from alembic import op

from clearing.core.sql import load

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(load("ledger_post_v2"))
        op.execute("DROP FUNCTION ledger_post(jsonb)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(load("ledger_post_v1"))
        op.execute("DROP FUNCTION ledger_post_v2(jsonb)")

"""ledger_post: the posting engine on PostgreSQL, one round trip per posting

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 17:30:00
"""

from __future__ import annotations

from alembic import op

from clearing.core.sql import load

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The body lives in clearing/core/sql/ledger_post_v1.sql (byte for byte what this migration always
# installed); a later body is a new file and a new migration (0008 installs ledger_post_v2).
LEDGER_POST = load("ledger_post_v1")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(LEDGER_POST)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS ledger_post(jsonb)")

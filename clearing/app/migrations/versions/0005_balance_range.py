"""balances stay within +/- 10^18 (clearing.core.money.BALANCE_LIMIT)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 06:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

RANGE = (
    "balance BETWEEN -1000000000000000000 AND 1000000000000000000"
    " AND held BETWEEN 0 AND 1000000000000000000"
)


def upgrade() -> None:
    # Batch mode: SQLite adds a CHECK constraint by rebuilding the table.
    with op.batch_alter_table("balances") as batch:
        batch.create_check_constraint(op.f("ck_balances_balance_in_range"), RANGE)


def downgrade() -> None:
    with op.batch_alter_table("balances") as batch:
        batch.drop_constraint(op.f("ck_balances_balance_in_range"), type_="check")

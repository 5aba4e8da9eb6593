"""settlement: the `exported` batch state (the window written out as Parquet for the Spark
engine, between closing and netted)

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-01 02:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

_NAME = "ck_settlement_batches_state_known"
_WITH = "state IN ('open', 'closing', 'exported', 'netted', 'files_written', 'published')"
_WITHOUT = "state IN ('open', 'closing', 'netted', 'files_written', 'published')"


def upgrade() -> None:
    # Batch mode: SQLite changes a CHECK constraint by rebuilding the table.
    with op.batch_alter_table("settlement_batches") as batch:
        batch.drop_constraint(op.f(_NAME), type_="check")
        batch.create_check_constraint(op.f(_NAME), _WITH)


def downgrade() -> None:
    op.execute("UPDATE settlement_batches SET state = 'closing' WHERE state = 'exported'")
    with op.batch_alter_table("settlement_batches") as batch:
        batch.drop_constraint(op.f(_NAME), type_="check")
        batch.create_check_constraint(op.f(_NAME), _WITHOUT)

"""settlement batches, positions, files

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settlement_batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("cutoff", sa.String(length=5), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("line_count", sa.BigInteger(), nullable=True),
        sa.Column("amount_total", sa.BigInteger(), nullable=True),
        sa.Column("points_total", sa.BigInteger(), nullable=True),
        sa.Column("fee_income", sa.BigInteger(), nullable=True),
        sa.Column("directory", sa.String(length=300), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_batches")),
        sa.UniqueConstraint(
            "currency", "business_date", name="uq_settlement_batches_currency_date"
        ),
        sa.UniqueConstraint("currency", "sequence", name="uq_settlement_batches_currency_sequence"),
        sa.CheckConstraint(
            "state IN ('open', 'closing', 'netted', 'files_written', 'published')",
            name=op.f("ck_settlement_batches_state_known"),
        ),
    )
    with op.batch_alter_table("settlement_batches", schema=None) as batch_op:
        batch_op.create_index("ix_settlement_batches_state", ["state"], unique=False)

    op.create_table(
        "settlement_positions",
        sa.Column("batch_id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("party_kind", sa.String(length=12), nullable=False),
        sa.Column("party_name", sa.String(length=200), nullable=False),
        sa.Column("net", sa.BigInteger(), nullable=False),
        sa.Column("statement_sequence", sa.Integer(), nullable=False),
        sa.Column("file_id", sa.String(length=120), nullable=False),
        sa.Column("previous_file_id", sa.String(length=120), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["settlement_batches.id"],
            name=op.f("fk_settlement_positions_batch_id_settlement_batches"),
        ),
        sa.PrimaryKeyConstraint("batch_id", "org_id", name=op.f("pk_settlement_positions")),
    )
    with op.batch_alter_table("settlement_positions", schema=None) as batch_op:
        batch_op.create_index("ix_settlement_positions_org", ["org_id", "batch_id"], unique=False)

    op.create_table(
        "settlement_files",
        sa.Column("batch_id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.String(length=400), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["settlement_batches.id"],
            name=op.f("fk_settlement_files_batch_id_settlement_batches"),
        ),
        sa.PrimaryKeyConstraint("batch_id", "org_id", "name", name=op.f("pk_settlement_files")),
    )


def downgrade() -> None:
    op.drop_table("settlement_files")
    with op.batch_alter_table("settlement_positions", schema=None) as batch_op:
        batch_op.drop_index("ix_settlement_positions_org")
    op.drop_table("settlement_positions")
    with op.batch_alter_table("settlement_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_settlement_batches_state")
    op.drop_table("settlement_batches")

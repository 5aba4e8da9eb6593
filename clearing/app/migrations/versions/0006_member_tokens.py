"""member tokens (consent to a checkout or a link), issuers' trust in merchants

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import clearing.core.db

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "member_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=12), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("max_amount", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_by_org_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "purpose IN ('payment', 'link')", name=op.f("ck_member_tokens_purpose_known")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_tokens_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["used_by_org_id"],
            ["organisations.id"],
            name=op.f("fk_member_tokens_used_by_org_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_member_tokens_token_hash")),
    )
    with op.batch_alter_table("member_tokens", schema=None) as batch_op:
        batch_op.create_index("ix_member_tokens_member_id", ["member_id"], unique=False)

    # SQLite cannot alter a column in place: batch mode copies the table.
    with op.batch_alter_table("merchant_terms", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "checkout_without_token", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch_op.alter_column(
            "fee_rate",
            existing_type=clearing.core.db.ExactDecimal(precision=12, scale=8),
            nullable=True,
        )


def downgrade() -> None:
    # Terms that only recorded trust have no fee rate of their own; they go with the flag.
    op.execute("DELETE FROM merchant_terms WHERE fee_rate IS NULL")
    with op.batch_alter_table("merchant_terms", schema=None) as batch_op:
        batch_op.alter_column(
            "fee_rate",
            existing_type=clearing.core.db.ExactDecimal(precision=12, scale=8),
            nullable=False,
        )
        batch_op.drop_column("checkout_without_token")
    with op.batch_alter_table("member_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_member_tokens_member_id")
    op.drop_table("member_tokens")

"""expiry_policies_notices: per-program expiry policy, notice window, enrolment on first accrual;
expiry notices

Revision ID: 0021
Revises: 0016
Create Date: 2026-11-30 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("programs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "expiry_policy", sa.String(length=12), server_default="rolling", nullable=False
            )
        )
        batch_op.add_column(sa.Column("expiry_notice_days", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("enrol_on_accrual", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "expiry_notices",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_expiry_notices_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_expiry_notices_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_expiry_notices")),
        sa.UniqueConstraint("member_id", "expires_on", name=op.f("uq_expiry_notices_member_id")),
    )
    with op.batch_alter_table("expiry_notices", schema=None) as batch_op:
        batch_op.create_index("ix_expiry_notices_program_id", ["program_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("expiry_notices", schema=None) as batch_op:
        batch_op.drop_index("ix_expiry_notices_program_id")
    op.drop_table("expiry_notices")
    with op.batch_alter_table("programs", schema=None) as batch_op:
        batch_op.drop_column("enrol_on_accrual")
        batch_op.drop_column("expiry_notice_days")
        batch_op.drop_column("expiry_policy")

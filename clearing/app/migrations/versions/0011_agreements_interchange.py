"""agreements between merchants and programs, issuers' interchange consent, caps' daily use

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 12:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "merchant_agreements",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("accept", sa.Boolean(), nullable=False),
        sa.Column("fund", sa.Boolean(), nullable=False),
        sa.Column("daily_accept_cap", sa.BigInteger(), nullable=True),
        sa.Column("daily_fund_cap", sa.BigInteger(), nullable=True),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("proposed_by", sa.Uuid(), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_by", sa.Uuid(), nullable=True),
        sa.Column("approved_key", sa.String(length=200), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('proposed', 'active', 'superseded', 'ended')",
            name=op.f("ck_merchant_agreements_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["organisations.id"],
            name=op.f("fk_merchant_agreements_merchant_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_merchant_agreements_program_id_programs")
        ),
        sa.ForeignKeyConstraint(
            ["proposed_by"],
            ["organisations.id"],
            name=op.f("fk_merchant_agreements_proposed_by_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["approved_by"],
            ["organisations.id"],
            name=op.f("fk_merchant_agreements_approved_by_organisations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchant_agreements")),
        sa.UniqueConstraint(
            "merchant_id",
            "program_id",
            "version",
            name=op.f("uq_merchant_agreements_merchant_id"),
        ),
    )
    with op.batch_alter_table("merchant_agreements", schema=None) as batch_op:
        batch_op.create_index(
            "ix_merchant_agreements_in_force", ["merchant_id", "program_id", "status"]
        )
    op.create_table(
        "interchange",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("issuer_id", sa.Uuid(), nullable=False),
        sa.Column("counterparty_id", sa.Uuid(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("changed_by_key", sa.String(length=200), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["issuer_id"], ["organisations.id"], name=op.f("fk_interchange_issuer_id_organisations")
        ),
        sa.ForeignKeyConstraint(
            ["counterparty_id"],
            ["organisations.id"],
            name=op.f("fk_interchange_counterparty_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_interchange")),
        sa.UniqueConstraint("issuer_id", "counterparty_id", name=op.f("uq_interchange_issuer_id")),
    )
    op.create_table(
        "risk_agreement_usage",
        sa.Column("agreement_id", sa.Uuid(), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("accepted", sa.BigInteger(), nullable=False),
        sa.Column("funded", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "agreement_id", "business_date", name=op.f("pk_risk_agreement_usage")
        ),
    )


def downgrade() -> None:
    op.drop_table("risk_agreement_usage")
    op.drop_table("interchange")
    op.drop_table("merchant_agreements")

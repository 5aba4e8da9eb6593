"""ledger core, issuers, exchange

Revision ID: 0001
Revises:
Create Date: 2026-11-25 14:49:02.655419
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import clearing.core.db  # custom column types (ExactDecimal)

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("asset", sa.String(length=60), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("slots", sa.SmallInteger(), nullable=False),
        sa.Column("floor_zero", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("name", name=op.f("uq_accounts_name")),
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_index("ix_accounts_asset_kind", ["asset", "kind"], unique=False)

    op.create_table(
        "idempotency_records",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("operation", sa.String(length=60), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.SmallInteger(), nullable=False),
        sa.Column("result", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "key", name=op.f("pk_idempotency_records")),
    )
    op.create_table(
        "journal_entries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("booked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reverses_id", sa.Uuid(), nullable=True),
        sa.Column("memo", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["reverses_id"],
            ["journal_entries.id"],
            name=op.f("fk_journal_entries_reverses_id_journal_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journal_entries")),
    )
    op.create_table(
        "organisations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column(
            "conversion_fee_rate",
            clearing.core.db.ExactDecimal(precision=12, scale=8),
            nullable=True,
        ),
        sa.Column(
            "default_fee_rate", clearing.core.db.ExactDecimal(precision=12, scale=8), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisations")),
    )
    op.create_table(
        "balances",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("floor_zero", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "NOT floor_zero OR (held >= 0 AND balance >= held)",
            name=op.f("ck_balances_floor_zero_respected"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_balances_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "slot", name=op.f("pk_balances")),
    )
    op.create_table(
        "holds",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("captured_points", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_holds_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holds")),
    )
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.create_index("ix_holds_account_status", ["account_id", "status"], unique=False)
        batch_op.create_index("ix_holds_status_expiry", ["status", "expires_at"], unique=False)

    op.create_table(
        "lots",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.String(length=24), nullable=False),
        sa.Column("funding_org_id", sa.Uuid(), nullable=True),
        sa.Column("source_program", sa.String(length=40), nullable=True),
        sa.Column("earned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "remaining >= 0 AND remaining <= points", name=op.f("ck_lots_remaining_in_range")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_lots_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("fk_lots_entry_id_journal_entries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lots")),
    )
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.create_index("ix_lots_account_expiry", ["account_id", "expires_at"], unique=False)
        batch_op.create_index("ix_lots_expiry", ["expires_at"], unique=False)

    op.create_table(
        "obligations",
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.SmallInteger(), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("payer_org_id", sa.Uuid(), nullable=False),
        sa.Column("payee_org_id", sa.Uuid(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("program_code", sa.String(length=40), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=True),
        sa.Column(
            "point_value", clearing.core.db.ExactDecimal(precision=24, scale=12), nullable=True
        ),
        sa.Column("point_value_version", sa.Integer(), nullable=True),
        sa.Column("original_entry_id", sa.Uuid(), nullable=True),
        sa.Column("booked_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_obligations_amount_positive")),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["journal_entries.id"],
            name=op.f("fk_obligations_entry_id_journal_entries"),
        ),
        sa.PrimaryKeyConstraint("entry_id", "seq", name=op.f("pk_obligations")),
    )
    with op.batch_alter_table("obligations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_obligations_window", ["currency", "booked_at", "entry_id", "seq"], unique=False
        )

    op.create_table(
        "postings",
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("leg", sa.SmallInteger(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("asset", sa.String(length=60), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_postings_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("fk_postings_entry_id_journal_entries")
        ),
        sa.PrimaryKeyConstraint("entry_id", "leg", name=op.f("pk_postings")),
    )
    with op.batch_alter_table("postings", schema=None) as batch_op:
        batch_op.create_index("ix_postings_account", ["account_id"], unique=False)

    op.create_table(
        "programs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("issuer_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("expiry_months", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["issuer_id"], ["organisations.id"], name=op.f("fk_programs_issuer_id_organisations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_programs")),
        sa.UniqueConstraint("code", name=op.f("uq_programs_code")),
    )
    op.create_table(
        "bilateral_rates",
        sa.Column("source_program_id", sa.Uuid(), nullable=False),
        sa.Column("target_program_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source_block", sa.BigInteger(), nullable=False),
        sa.Column("target_block", sa.BigInteger(), nullable=False),
        sa.Column("min_source_points", sa.BigInteger(), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_program_id"],
            ["programs.id"],
            name=op.f("fk_bilateral_rates_source_program_id_programs"),
        ),
        sa.ForeignKeyConstraint(
            ["target_program_id"],
            ["programs.id"],
            name=op.f("fk_bilateral_rates_target_program_id_programs"),
        ),
        sa.PrimaryKeyConstraint(
            "source_program_id", "target_program_id", "version", name=op.f("pk_bilateral_rates")
        ),
    )
    op.create_table(
        "lot_movements",
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("lot_id", sa.Uuid(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["journal_entries.id"],
            name=op.f("fk_lot_movements_entry_id_journal_entries"),
        ),
        sa.ForeignKeyConstraint(["lot_id"], ["lots.id"], name=op.f("fk_lot_movements_lot_id_lots")),
        sa.PrimaryKeyConstraint("entry_id", "lot_id", name=op.f("pk_lot_movements")),
    )
    with op.batch_alter_table("lot_movements", schema=None) as batch_op:
        batch_op.create_index("ix_lot_movements_lot", ["lot_id"], unique=False)

    op.create_table(
        "members",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_members_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_members_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_members")),
        sa.UniqueConstraint("account_id", name=op.f("uq_members_account_id")),
        sa.UniqueConstraint("program_id", "external_id", name=op.f("uq_members_program_id")),
    )
    op.create_table(
        "merchant_terms",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("fee_rate", clearing.core.db.ExactDecimal(precision=12, scale=8), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["organisations.id"],
            name=op.f("fk_merchant_terms_merchant_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_merchant_terms_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchant_terms")),
        sa.UniqueConstraint(
            "merchant_id", "program_id", name=op.f("uq_merchant_terms_merchant_id")
        ),
    )
    op.create_table(
        "point_values",
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("value", clearing.core.db.ExactDecimal(precision=24, scale=12), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_point_values_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("program_id", "version", name=op.f("pk_point_values")),
    )
    op.create_table(
        "accruals",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("funding_org_id", sa.Uuid(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("reversed_points", sa.BigInteger(), nullable=False),
        sa.Column("lot_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("fk_accruals_entry_id_journal_entries")
        ),
        sa.ForeignKeyConstraint(
            ["funding_org_id"],
            ["organisations.id"],
            name=op.f("fk_accruals_funding_org_id_organisations"),
        ),
        sa.ForeignKeyConstraint(["lot_id"], ["lots.id"], name=op.f("fk_accruals_lot_id_lots")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_accruals_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accruals")),
    )
    op.create_table(
        "checkouts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("hold_id", sa.Uuid(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("order_total", sa.BigInteger(), nullable=False),
        sa.Column("points_amount", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column(
            "point_value", clearing.core.db.ExactDecimal(precision=24, scale=12), nullable=False
        ),
        sa.Column("point_value_version", sa.Integer(), nullable=False),
        sa.Column("fee_rate", clearing.core.db.ExactDecimal(precision=12, scale=8), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("captured_amount", sa.BigInteger(), nullable=False),
        sa.Column("captured_points", sa.BigInteger(), nullable=False),
        sa.Column("fee_amount", sa.BigInteger(), nullable=False),
        sa.Column("refunded_amount", sa.BigInteger(), nullable=False),
        sa.Column("refunded_points", sa.BigInteger(), nullable=False),
        sa.Column("refunded_fee", sa.BigInteger(), nullable=False),
        sa.Column("capture_entry_id", sa.Uuid(), nullable=True),
        sa.Column("reference", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["capture_entry_id"],
            ["journal_entries.id"],
            name=op.f("fk_checkouts_capture_entry_id_journal_entries"),
        ),
        sa.ForeignKeyConstraint(["hold_id"], ["holds.id"], name=op.f("fk_checkouts_hold_id_holds")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_checkouts_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["organisations.id"],
            name=op.f("fk_checkouts_merchant_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkouts")),
    )
    op.create_table(
        "conversion_quotes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("source_member_id", sa.Uuid(), nullable=False),
        sa.Column("target_member_id", sa.Uuid(), nullable=False),
        sa.Column("points_out", sa.BigInteger(), nullable=False),
        sa.Column("points_in", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "source_value", clearing.core.db.ExactDecimal(precision=24, scale=12), nullable=False
        ),
        sa.Column("source_value_version", sa.Integer(), nullable=False),
        sa.Column(
            "target_value", clearing.core.db.ExactDecimal(precision=24, scale=12), nullable=False
        ),
        sa.Column("target_value_version", sa.Integer(), nullable=False),
        sa.Column("bilateral_version", sa.Integer(), nullable=True),
        sa.Column("fee_rate", clearing.core.db.ExactDecimal(precision=12, scale=8), nullable=False),
        sa.Column("fee_amount", sa.BigInteger(), nullable=False),
        sa.Column("settlement_amount", sa.BigInteger(), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entry_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["journal_entries.id"],
            name=op.f("fk_conversion_quotes_entry_id_journal_entries"),
        ),
        sa.ForeignKeyConstraint(
            ["source_member_id"],
            ["members.id"],
            name=op.f("fk_conversion_quotes_source_member_id_members"),
        ),
        sa.ForeignKeyConstraint(
            ["target_member_id"],
            ["members.id"],
            name=op.f("fk_conversion_quotes_target_member_id_members"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversion_quotes")),
    )
    op.create_table(
        "member_links",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("source_member_id", sa.Uuid(), nullable=False),
        sa.Column("target_member_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_member_id"],
            ["members.id"],
            name=op.f("fk_member_links_source_member_id_members"),
        ),
        sa.ForeignKeyConstraint(
            ["target_member_id"],
            ["members.id"],
            name=op.f("fk_member_links_target_member_id_members"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_links")),
        sa.UniqueConstraint(
            "source_member_id", "target_member_id", name=op.f("uq_member_links_source_member_id")
        ),
    )
    _guard_journal()


def downgrade() -> None:
    _drop_guards()
    op.drop_table("member_links")
    op.drop_table("conversion_quotes")
    op.drop_table("checkouts")
    op.drop_table("accruals")
    op.drop_table("point_values")
    op.drop_table("merchant_terms")
    op.drop_table("members")
    with op.batch_alter_table("lot_movements", schema=None) as batch_op:
        batch_op.drop_index("ix_lot_movements_lot")

    op.drop_table("lot_movements")
    op.drop_table("bilateral_rates")
    op.drop_table("programs")
    with op.batch_alter_table("postings", schema=None) as batch_op:
        batch_op.drop_index("ix_postings_account")

    op.drop_table("postings")
    with op.batch_alter_table("obligations", schema=None) as batch_op:
        batch_op.drop_index("ix_obligations_window")

    op.drop_table("obligations")
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_index("ix_lots_expiry")
        batch_op.drop_index("ix_lots_account_expiry")

    op.drop_table("lots")
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.drop_index("ix_holds_status_expiry")
        batch_op.drop_index("ix_holds_account_status")

    op.drop_table("holds")
    op.drop_table("balances")
    op.drop_table("organisations")
    op.drop_table("journal_entries")
    op.drop_table("idempotency_records")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index("ix_accounts_asset_kind")

    op.drop_table("accounts")


APPEND_ONLY = ("journal_entries", "postings", "obligations", "lot_movements")

ZERO_SUM_FUNCTION = """
CREATE FUNCTION postings_sum_to_zero() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad text;
BEGIN
    SELECT asset INTO bad FROM postings WHERE entry_id = NEW.entry_id
    GROUP BY asset HAVING sum(amount) <> 0 LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'journal entry % does not sum to zero for %', NEW.entry_id, bad
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
"""

APPEND_ONLY_FUNCTION = """
CREATE FUNCTION journal_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
"""


def _guard_journal() -> None:
    """The database itself refuses unbalanced entries and any change to the journal."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(ZERO_SUM_FUNCTION)
        # Deferred to commit: an entry's legs are inserted one statement at a time.
        op.execute(
            "CREATE CONSTRAINT TRIGGER postings_zero_sum AFTER INSERT ON postings "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION postings_sum_to_zero()"
        )
        op.execute(APPEND_ONLY_FUNCTION)
        for table in APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION journal_is_append_only()"
            )
    else:
        for table in APPEND_ONLY:
            for event in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                )


def _drop_guards() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS postings_zero_sum ON postings")
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS postings_sum_to_zero()")
        op.execute("DROP FUNCTION IF EXISTS journal_is_append_only()")
    else:
        for table in APPEND_ONLY:
            for event in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{event}")

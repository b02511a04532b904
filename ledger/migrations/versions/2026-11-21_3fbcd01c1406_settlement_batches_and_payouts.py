"""Settlement: batches per institution and business date, payout instructions to the banks.

Lessons point at the batch that released them; refunds record when their payout deadline passed.

Revision ID: 3fbcd01c1406
Revises: 0d7b300a7b94
Create Date: 2026-11-21 11:12:44.997025
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3fbcd01c1406"
down_revision: str | None = "0d7b300a7b94"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "settlement_batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("institution_id", sa.String(length=40), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("gross_fen", sa.BigInteger(), nullable=False),
        sa.Column("netted_fen", sa.BigInteger(), nullable=False),
        sa.Column("lessons", sa.Integer(), nullable=False),
        sa.Column("after_seq", sa.BigInteger(), nullable=False),
        sa.Column("through_seq", sa.BigInteger(), nullable=False),
        sa.Column("released_fen", sa.BigInteger(), nullable=False),
        sa.Column("settled_fen", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "gross_fen >= 0 AND netted_fen >= 0 AND netted_fen <= gross_fen",
            name=op.f("ck_settlement_batches_amounts"),
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_settlement_batches_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_batches")),
        sa.UniqueConstraint(
            "institution_id",
            "business_date",
            name=op.f("uq_settlement_batches_institution_id_business_date"),
        ),
    )
    with op.batch_alter_table("settlement_batches", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_settlement_batches_business_date"), ["business_date"], unique=False
        )

    op.create_table(
        "payouts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("batch_id", sa.String(length=40), nullable=False),
        sa.Column("institution_id", sa.String(length=40), nullable=False),
        sa.Column("bank_id", sa.String(length=40), nullable=False),
        sa.Column("instructed_on", sa.Date(), nullable=False),
        sa.Column("settlement_account", sa.String(length=64), nullable=False),
        sa.Column("escrow_account", sa.String(length=64), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "instructed",
                "executed",
                "failed",
                name="payout_status",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("retry_of", sa.String(length=40), nullable=True),
        sa.Column("retried", sa.Boolean(), nullable=False),
        sa.Column("bank_reference", sa.String(length=64), nullable=True),
        sa.Column("failure_reason", sa.String(length=500), nullable=True),
        sa.Column("instructed_seq", sa.BigInteger(), nullable=False),
        sa.Column("answered_seq", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_payouts_amount_positive")),
        sa.ForeignKeyConstraint(["bank_id"], ["banks.id"], name=op.f("fk_payouts_bank_id_banks")),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["settlement_batches.id"],
            name=op.f("fk_payouts_batch_id_settlement_batches"),
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_payouts_institution_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["retry_of"], ["payouts.id"], name=op.f("fk_payouts_retry_of_payouts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payouts")),
    )
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payouts_bank_id_instructed_on", ["bank_id", "instructed_on"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_payouts_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_payouts_institution_id"), ["institution_id"], unique=False
        )

    with op.batch_alter_table("lessons", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.String(length=40), nullable=True))
        batch_op.create_index(batch_op.f("ix_lessons_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(
            "ix_lessons_institution_id_decided_seq", ["institution_id", "decided_seq"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_lessons_batch_id_settlement_batches"),
            "settlement_batches",
            ["batch_id"],
            ["id"],
        )

    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("overdue_seq", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    raise RuntimeError("settlement batches and payouts cannot be downgraded: money was released")

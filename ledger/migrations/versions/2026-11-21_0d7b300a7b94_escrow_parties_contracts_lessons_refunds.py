"""Escrow domain: parties, contracts, lessons, refunds, receipts, deposits, transfers.

Projections of the event log, written by the escrow services in the same transaction as the entry
that records each change. Names and phone numbers are not here (see personal_data).

Revision ID: 0d7b300a7b94
Revises: 944c71f250a3
Create Date: 2026-11-21 09:53:37.580854
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0d7b300a7b94"
down_revision: str | None = "944c71f250a3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "banks",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("registered_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_banks")),
    )
    op.create_table(
        "parents",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("registered_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_parents")),
    )
    op.create_table(
        "regulators",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("jurisdiction", sa.String(length=64), nullable=False),
        sa.Column("registered_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_regulators")),
    )
    op.create_table(
        "institutions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "licence",
            sa.Enum(
                "academic",
                "non_academic",
                name="licence_type",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("district", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "frozen",
                "winding_down",
                "closed",
                name="institution_status",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("bank_id", sa.String(length=40), nullable=False),
        sa.Column("escrow_account", sa.String(length=64), nullable=False),
        sa.Column("settlement_account", sa.String(length=64), nullable=False),
        sa.Column("is_new", sa.Boolean(), nullable=False),
        sa.Column("risk_deposit_fen", sa.BigInteger(), nullable=False),
        sa.Column("policy", sa.String(length=64), nullable=False),
        sa.Column("successor_id", sa.String(length=40), nullable=True),
        sa.Column("registered_seq", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "risk_deposit_fen >= 0", name=op.f("ck_institutions_risk_deposit_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["bank_id"], ["banks.id"], name=op.f("fk_institutions_bank_id_banks")
        ),
        sa.ForeignKeyConstraint(
            ["successor_id"],
            ["institutions.id"],
            name=op.f("fk_institutions_successor_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_institutions")),
    )
    with op.batch_alter_table("institutions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_institutions_bank_id"), ["bank_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_institutions_district"), ["district"], unique=False)

    op.create_table(
        "students",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("parent_id", sa.String(length=40), nullable=False),
        sa.Column("registered_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["parents.id"], name=op.f("fk_students_parent_id_parents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_students")),
    )
    with op.batch_alter_table("students", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_students_parent_id"), ["parent_id"], unique=False)

    op.create_table(
        "contracts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("institution_id", sa.String(length=40), nullable=False),
        sa.Column("parent_id", sa.String(length=40), nullable=False),
        sa.Column("student_id", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("course_name", sa.String(length=200), nullable=False),
        sa.Column("lessons", sa.Integer(), nullable=False),
        sa.Column("unit_price_fen", sa.BigInteger(), nullable=False),
        sa.Column("total_fen", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=False),
        sa.Column("class_size", sa.Integer(), nullable=True),
        sa.Column("lesson_minutes", sa.Integer(), nullable=False),
        sa.Column("policy", sa.String(length=64), nullable=False),
        sa.Column("advance_bp", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "awaiting_payment",
                "active",
                "completed",
                "refunded",
                "cancelled",
                name="contract_status",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("lessons_delivered", sa.Integer(), nullable=False),
        sa.Column("lessons_refunded", sa.Integer(), nullable=False),
        sa.Column("lessons_reserved", sa.Integer(), nullable=False),
        sa.Column("advance_fen", sa.BigInteger(), nullable=False),
        sa.Column("advance_remaining_fen", sa.BigInteger(), nullable=False),
        sa.Column("transferred_from", sa.String(length=40), nullable=True),
        sa.Column("created_seq", sa.BigInteger(), nullable=False),
        sa.Column("paid_seq", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "advance_remaining_fen >= 0", name=op.f("ck_contracts_advance_remaining_non_negative")
        ),
        sa.CheckConstraint("end_date >= start_date", name=op.f("ck_contracts_ends_after_start")),
        sa.CheckConstraint("lessons > 0", name=op.f("ck_contracts_lessons_positive")),
        sa.CheckConstraint(
            "lessons_delivered >= 0 AND lessons_refunded >= 0 AND lessons_reserved >= 0 AND lessons_delivered + lessons_refunded + lessons_reserved <= lessons",
            name=op.f("ck_contracts_lesson_counts"),
        ),
        sa.CheckConstraint(
            "total_fen = lessons * unit_price_fen",
            name=op.f("ck_contracts_total_is_lessons_times_price"),
        ),
        sa.CheckConstraint("unit_price_fen > 0", name=op.f("ck_contracts_unit_price_positive")),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_contracts_institution_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["parents.id"], name=op.f("fk_contracts_parent_id_parents")
        ),
        sa.ForeignKeyConstraint(
            ["student_id"], ["students.id"], name=op.f("fk_contracts_student_id_students")
        ),
        sa.ForeignKeyConstraint(
            ["transferred_from"],
            ["institutions.id"],
            name=op.f("fk_contracts_transferred_from_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contracts")),
    )
    with op.batch_alter_table("contracts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_contracts_institution_id"), ["institution_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_contracts_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index(
            "ix_contracts_student_id_institution_id", ["student_id", "institution_id"], unique=False
        )

    op.create_table(
        "risk_deposits",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("bank_id", sa.String(length=40), nullable=False),
        sa.Column("bank_reference", sa.String(length=64), nullable=False),
        sa.Column("institution_id", sa.String(length=40), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_risk_deposits_amount_positive")),
        sa.ForeignKeyConstraint(
            ["bank_id"], ["banks.id"], name=op.f("fk_risk_deposits_bank_id_banks")
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_risk_deposits_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_deposits")),
        sa.UniqueConstraint(
            "bank_id", "bank_reference", name=op.f("uq_risk_deposits_bank_id_bank_reference")
        ),
    )
    with op.batch_alter_table("risk_deposits", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_risk_deposits_institution_id"), ["institution_id"], unique=False
        )

    op.create_table(
        "transfers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("from_institution_id", sa.String(length=40), nullable=False),
        sa.Column("to_institution_id", sa.String(length=40), nullable=False),
        sa.Column("decline_by", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["from_institution_id"],
            ["institutions.id"],
            name=op.f("fk_transfers_from_institution_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["to_institution_id"],
            ["institutions.id"],
            name=op.f("fk_transfers_to_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfers")),
    )
    op.create_table(
        "lessons",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("institution_id", sa.String(length=40), nullable=False),
        sa.Column("ref", sa.String(length=64), nullable=False),
        sa.Column("contract_id", sa.String(length=40), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("teacher_id", sa.String(length=64), nullable=False),
        sa.Column("price_fen", sa.BigInteger(), nullable=False),
        sa.Column("advance_fen", sa.BigInteger(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "reported",
                "confirmed",
                "disputed",
                "voided",
                name="lesson_status",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("confirm_by", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "confirmed_by",
            sa.Enum(
                "parent",
                "silence",
                "regulator",
                name="confirmed_by",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=True,
        ),
        sa.Column("dispute_reason", sa.String(length=500), nullable=True),
        sa.Column("reported_seq", sa.BigInteger(), nullable=False),
        sa.Column("decided_seq", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "price_fen > 0 AND advance_fen >= 0 AND advance_fen <= price_fen",
            name=op.f("ck_lessons_shares"),
        ),
        sa.ForeignKeyConstraint(
            ["contract_id"], ["contracts.id"], name=op.f("fk_lessons_contract_id_contracts")
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_lessons_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lessons")),
        sa.UniqueConstraint("institution_id", "ref", name=op.f("uq_lessons_institution_id_ref")),
    )
    with op.batch_alter_table("lessons", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lessons_contract_id"), ["contract_id"], unique=False)
        batch_op.create_index(
            "ix_lessons_status_confirm_by", ["status", "confirm_by"], unique=False
        )

    op.create_table(
        "receipts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("bank_id", sa.String(length=40), nullable=False),
        sa.Column("bank_reference", sa.String(length=64), nullable=False),
        sa.Column("contract_id", sa.String(length=40), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column(
            "payer",
            sa.Enum(
                "parent",
                "guardian",
                "lender",
                name="payer_type",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "booked",
                "returned",
                name="receipt_status",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["bank_id"], ["banks.id"], name=op.f("fk_receipts_bank_id_banks")),
        sa.ForeignKeyConstraint(
            ["contract_id"], ["contracts.id"], name=op.f("fk_receipts_contract_id_contracts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_receipts")),
        sa.UniqueConstraint(
            "bank_id", "bank_reference", name=op.f("uq_receipts_bank_id_bank_reference")
        ),
    )
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_receipts_contract_id"), ["contract_id"], unique=False)

    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("contract_id", sa.String(length=40), nullable=False),
        sa.Column("institution_id", sa.String(length=40), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "requested",
                "forced",
                "wind_down",
                "transfer_declined",
                name="refund_kind",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "requested",
                "approved",
                "rejected",
                "paid",
                name="refund_status",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("lessons", sa.Integer(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=True),
        sa.Column("advance_due_fen", sa.BigInteger(), nullable=True),
        sa.Column("shortfall_fen", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("answer", sa.String(length=500), nullable=True),
        sa.Column("before_start", sa.Boolean(), nullable=False),
        sa.Column("answer_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pay_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("bank_reference", sa.String(length=64), nullable=True),
        sa.Column("requested_seq", sa.BigInteger(), nullable=False),
        sa.Column("decided_seq", sa.BigInteger(), nullable=True),
        sa.Column("paid_seq", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("lessons > 0", name=op.f("ck_refunds_lessons_positive")),
        sa.ForeignKeyConstraint(
            ["contract_id"], ["contracts.id"], name=op.f("fk_refunds_contract_id_contracts")
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_refunds_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
    )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_refunds_contract_id"), ["contract_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_refunds_institution_id"), ["institution_id"], unique=False
        )
        batch_op.create_index("ix_refunds_status_answer_by", ["status", "answer_by"], unique=False)

    op.create_table(
        "transferred_contracts",
        sa.Column("transfer_id", sa.String(length=40), nullable=False),
        sa.Column("contract_id", sa.String(length=40), nullable=False),
        sa.Column("value_fen", sa.BigInteger(), nullable=False),
        sa.Column("declined_seq", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["contract_id"],
            ["contracts.id"],
            name=op.f("fk_transferred_contracts_contract_id_contracts"),
        ),
        sa.ForeignKeyConstraint(
            ["transfer_id"],
            ["transfers.id"],
            name=op.f("fk_transferred_contracts_transfer_id_transfers"),
        ),
        sa.PrimaryKeyConstraint(
            "transfer_id", "contract_id", name=op.f("pk_transferred_contracts")
        ),
    )


def downgrade() -> None:
    raise RuntimeError(
        "the escrow tables cannot be downgraded: contracts, lessons and refunds would be lost"
    )

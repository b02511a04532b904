"""Bank statements and reconciliation breaks (issue 7: daily reconciliation, 对账).

A custody bank's daily statement of an escrow account is stored with every line and its match
result, and the breaks found; resolutions of breaks get their own table. All four tables are
append-only (triggers refuse UPDATE and DELETE, as for the log): a break is closed by a new
resolution row and its log entry, never by editing what the import found.

Revision ID: 4f9c29249932
Revises: d0ff23a32475
Create Date: 2026-11-21 13:22:42.842195
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4f9c29249932"
down_revision: str | None = "d0ff23a32475"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = (
    "bank_statements",
    "bank_statement_lines",
    "reconciliation_breaks",
    "reconciliation_break_resolutions",
)


def _append_only() -> list[str]:
    """Triggers refusing UPDATE and DELETE, like the log's (foundation migration)."""
    dialect = op.get_bind().dialect.name
    statements: list[str] = []
    for table in APPEND_ONLY:
        if dialect == "postgresql":
            create = (
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION escrow_refuse_change()"
            )
            statements += [create, f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_append_only"]
        elif dialect == "sqlite":
            statements += [
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); END"
                for operation in ("UPDATE", "DELETE")
            ]
        else:
            raise NotImplementedError(f"no triggers for the {dialect} dialect")
    return statements


def upgrade() -> None:
    op.create_table(
        "bank_statements",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("bank_id", sa.String(length=40), nullable=False),
        sa.Column("institution_id", sa.String(length=40), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("statement_ref", sa.String(length=64), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("opening_fen", sa.BigInteger(), nullable=False),
        sa.Column("closing_fen", sa.BigInteger(), nullable=False),
        sa.Column("ledger_closing_fen", sa.BigInteger(), nullable=False),
        sa.Column("ledger_through_seq", sa.BigInteger(), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("break_count", sa.Integer(), nullable=False),
        sa.Column("imported_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["bank_id"], ["banks.id"], name=op.f("fk_bank_statements_bank_id_banks")
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_bank_statements_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_statements")),
        sa.UniqueConstraint(
            "bank_id", "file_sha256", name=op.f("uq_bank_statements_bank_id_file_sha256")
        ),
        sa.UniqueConstraint(
            "institution_id",
            "business_date",
            name=op.f("uq_bank_statements_institution_id_business_date"),
        ),
    )
    with op.batch_alter_table("bank_statements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_bank_statements_imported_seq"), ["imported_seq"], unique=False
        )

    op.create_table(
        "bank_statement_lines",
        sa.Column("statement_id", sa.String(length=40), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("booking_date", sa.Date(), nullable=False),
        sa.Column("direction", sa.String(length=4), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("bank_reference", sa.String(length=64), nullable=False),
        sa.Column("end_to_end_id", sa.String(length=64), nullable=False),
        sa.Column("remittance", sa.String(length=500), nullable=False),
        sa.Column(
            "result",
            sa.Enum(
                "matched",
                "unmatched_bank",
                "amount_mismatch",
                "duplicate",
                name="statement_line_result",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("rule", sa.String(length=32), nullable=True),
        sa.Column(
            "counterpart_kind",
            sa.Enum(
                "receipt",
                "risk_deposit",
                "payout",
                "refund",
                name="statement_counterpart_kind",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=True,
        ),
        sa.Column("counterpart_id", sa.String(length=64), nullable=True),
        sa.Column("ledger_amount_fen", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["statement_id"],
            ["bank_statements.id"],
            name=op.f("fk_bank_statement_lines_statement_id_bank_statements"),
        ),
        sa.PrimaryKeyConstraint("statement_id", "line_no", name=op.f("pk_bank_statement_lines")),
    )
    with op.batch_alter_table("bank_statement_lines", schema=None) as batch_op:
        batch_op.create_index(
            "ix_bank_statement_lines_counterpart", ["counterpart_id"], unique=False
        )

    op.create_table(
        "reconciliation_breaks",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("statement_id", sa.String(length=40), nullable=False),
        sa.Column("institution_id", sa.String(length=40), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "unmatched_bank",
                "unmatched_ledger",
                "amount_mismatch",
                "duplicate",
                "balance_difference",
                name="reconciliation_break_kind",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("line_no", sa.Integer(), nullable=True),
        sa.Column(
            "counterpart_kind",
            sa.Enum(
                "receipt",
                "risk_deposit",
                "payout",
                "refund",
                name="break_counterpart_kind",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=True,
        ),
        sa.Column("counterpart_id", sa.String(length=64), nullable=True),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_reconciliation_breaks_institution_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["statement_id"],
            ["bank_statements.id"],
            name=op.f("fk_reconciliation_breaks_statement_id_bank_statements"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_breaks")),
    )
    with op.batch_alter_table("reconciliation_breaks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_reconciliation_breaks_institution_id_seq", ["institution_id", "seq"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_reconciliation_breaks_statement_id"), ["statement_id"], unique=False
        )

    op.create_table(
        "reconciliation_break_resolutions",
        sa.Column("break_id", sa.String(length=40), nullable=False),
        sa.Column("note", sa.String(length=1000), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["break_id"],
            ["reconciliation_breaks.id"],
            name=op.f("fk_reconciliation_break_resolutions_break_id_reconciliation_breaks"),
        ),
        sa.PrimaryKeyConstraint("break_id", name=op.f("pk_reconciliation_break_resolutions")),
    )
    for statement in _append_only():
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        else:
            for operation in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation}")
    op.drop_table("reconciliation_break_resolutions")
    with op.batch_alter_table("reconciliation_breaks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reconciliation_breaks_statement_id"))
        batch_op.drop_index("ix_reconciliation_breaks_institution_id_seq")

    op.drop_table("reconciliation_breaks")
    with op.batch_alter_table("bank_statement_lines", schema=None) as batch_op:
        batch_op.drop_index("ix_bank_statement_lines_counterpart")

    op.drop_table("bank_statement_lines")
    with op.batch_alter_table("bank_statements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bank_statements_imported_seq"))

    op.drop_table("bank_statements")

"""Foundation: accounts, postings, the hash-chained event log and its head.

The database defends the ledger's invariants by itself, whatever client writes to it:
- log_entries and postings are append-only: UPDATE and DELETE (and TRUNCATE) are refused;
- an entry's postings must sum to zero per currency (postings are never zero, so a lone posting
  cannot balance), else the write is refused. PostgreSQL checks with a deferred constraint trigger
  at commit; SQLite, which has no deferred triggers, with a trigger on the entry's insert, which is
  why postings are written before their entry;
- postings cannot be added to an entry that has already been written;
- a non-negative account's stored balance cannot go below zero (check constraint).

Revision ID: 944c71f250a3
Revises:
Create Date: 2026-11-21 08:44:58.865903
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "944c71f250a3"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
APPEND_ONLY = ("log_entries", "postings")

POSTGRES_FUNCTIONS = [
    """
    CREATE FUNCTION escrow_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'restrict_violation';
    END $$
    """,
    """
    CREATE FUNCTION escrow_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        bad record;
    BEGIN
        SELECT currency, sum(amount) AS total INTO bad
          FROM postings WHERE seq = NEW.seq
         GROUP BY currency HAVING sum(amount) <> 0 LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'unbalanced entry %: % postings sum to %', NEW.seq, bad.currency, bad.total
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION escrow_refuse_late_posting() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM log_entries WHERE seq = NEW.seq) THEN
            RAISE EXCEPTION 'entry % is already written: postings cannot be added to it', NEW.seq
                USING ERRCODE = 'restrict_violation';
        END IF;
        RETURN NEW;
    END $$
    """,
]


def _postgres_triggers() -> list[str]:
    statements = []
    for table in APPEND_ONLY:
        statements += [
            (
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION escrow_refuse_change()"
            ),
            (
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION escrow_refuse_change()"
            ),
        ]
    statements += [
        (
            "CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            "EXECUTE FUNCTION escrow_check_entry_balanced()"
        ),
        (
            "CREATE TRIGGER postings_sealed BEFORE INSERT ON postings "
            "FOR EACH ROW EXECUTE FUNCTION escrow_refuse_late_posting()"
        ),
    ]
    return statements


def _sqlite_triggers() -> list[str]:
    statements = []
    for table in APPEND_ONLY:
        for operation in ("UPDATE", "DELETE"):
            statements.append(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); END"
            )
    statements += [
        """
        CREATE TRIGGER log_entries_balanced BEFORE INSERT ON log_entries
        WHEN EXISTS (
            SELECT 1 FROM postings WHERE seq = NEW.seq
            GROUP BY currency HAVING sum(amount) <> 0)
        BEGIN
            SELECT RAISE(ABORT, 'unbalanced entry: its postings do not sum to zero per currency');
        END
        """,
        """
        CREATE TRIGGER postings_sealed BEFORE INSERT ON postings
        WHEN EXISTS (SELECT 1 FROM log_entries WHERE seq = NEW.seq)
        BEGIN
            SELECT RAISE(ABORT, 'entry already written: postings cannot be added to it');
        END
        """,
    ]
    return statements


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", BigIntPK, nullable=False),
        sa.Column("code", sa.String(length=160), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "escrow",
                "contract",
                "pending",
                "releasable",
                "payable",
                "refund_payable",
                "advance",
                name="account_kind",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("non_negative", sa.Boolean(), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("opened_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "NOT non_negative OR balance >= 0", name=op.f("ck_accounts_non_negative")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("code", name=op.f("uq_accounts_code")),
    )
    op.create_index(op.f("ix_accounts_kind"), "accounts", ["kind"])

    op.create_table(
        "log_entries",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_log_entries")),
    )
    op.create_index(op.f("ix_log_entries_time"), "log_entries", ["time"])

    log_head = op.create_table(
        "log_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("last_time", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_log_head_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_head")),
    )
    op.bulk_insert(log_head, [{"id": 1, "size": 0, "head_hash": bytes(32), "last_time": None}])

    op.create_table(
        "postings",
        sa.Column("id", BigIntPK, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("account_id", BigIntPK, nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_postings_non_zero")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_postings_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["seq"],
            ["log_entries.seq"],
            name=op.f("fk_postings_seq_log_entries"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_postings")),
    )
    op.create_index("ix_postings_account_id_seq", "postings", ["account_id", "seq"])
    op.create_index(op.f("ix_postings_seq"), "postings", ["seq"])

    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        statements = POSTGRES_FUNCTIONS + _postgres_triggers()
    elif dialect == "sqlite":
        statements = _sqlite_triggers()
    else:
        raise NotImplementedError(f"no ledger triggers for the {dialect} dialect")
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    raise RuntimeError(
        "the foundation migration cannot be downgraded: it would drop the event log, "
        "which is append-only by design"
    )

"""Foundation: accounts, postings, the hash-chained event log, personal data.

The database defends the ledger by itself, whatever client writes to it:
- log_entries and postings are append-only: UPDATE and DELETE (and TRUNCATE) are refused, and on
  SQLite so is INSERT OR REPLACE, which deletes without firing delete triggers;
- entries are appended in seq order with no gap, under the same lock the application takes
  (PostgreSQL: a transaction advisory lock, taken again inside the triggers so that raw SQL
  serializes with the application; SQLite: the database write lock of BEGIN IMMEDIATE);
- postings may only be written for an entry not yet written, and an entry's postings must sum to
  zero per currency (postings are never zero, so a lone posting cannot balance). PostgreSQL checks
  the sum with a deferred constraint trigger per entry at commit; SQLite, which has no deferred
  triggers, when the entry row is inserted, which is why postings are written before their entry;
- on SQLite, whose columns accept any type, seqs, account ids and amounts must be integers and
  bodies and hashes blobs, checked by triggers (a connection can switch CHECK constraints off);
- on PostgreSQL every trigger is ENABLE ALWAYS, so ``session_replication_role = replica`` does not
  silence it;
- a stored balance cannot go below zero (every kind of account in the chart is non-negative).

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
LOG_LOCK_KEY = 7310295963299966055  # b"escrowlg"; must equal ledger.log.LOG_LOCK_KEY

POSTGRES_FUNCTIONS = [
    """
    CREATE FUNCTION escrow_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'restrict_violation';
    END $$
    """,
    f"""
    CREATE FUNCTION escrow_entry_in_order() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        next_seq bigint;
    BEGIN
        PERFORM pg_advisory_xact_lock({LOG_LOCK_KEY});
        SELECT COALESCE(max(seq) + 1, 0) INTO next_seq FROM log_entries;
        IF NEW.seq IS DISTINCT FROM next_seq THEN
            RAISE EXCEPTION 'log entries are appended in order: seq % refused, the next is %',
                NEW.seq, next_seq USING ERRCODE = 'restrict_violation';
        END IF;
        IF octet_length(NEW.hash) <> 32 THEN
            RAISE EXCEPTION 'entry %: a hash is 32 bytes', NEW.seq USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END $$
    """,
    f"""
    CREATE FUNCTION escrow_posting_for_new_entry() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock({LOG_LOCK_KEY});
        IF NEW.seq <= COALESCE((SELECT max(seq) FROM log_entries), -1) THEN
            RAISE EXCEPTION 'entry % is already written: postings cannot be added to it', NEW.seq
                USING ERRCODE = 'restrict_violation';
        END IF;
        RETURN NEW;
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
]


def _postgres_triggers() -> list[str]:
    triggers = [
        ("log_entries_in_order", "log_entries", "BEFORE INSERT", "escrow_entry_in_order"),
        ("postings_for_new_entry", "postings", "BEFORE INSERT", "escrow_posting_for_new_entry"),
    ]
    for table in APPEND_ONLY:
        triggers.append(
            (f"{table}_append_only", table, "BEFORE UPDATE OR DELETE", "escrow_refuse_change")
        )
    statements = [
        f"CREATE TRIGGER {name} {when} ON {table} FOR EACH ROW EXECUTE FUNCTION {function}()"
        for name, table, when, function in triggers
    ]
    for table in APPEND_ONLY:
        statements.append(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION escrow_refuse_change()"
        )
    statements.append(
        "CREATE CONSTRAINT TRIGGER log_entries_balanced AFTER INSERT ON log_entries "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION escrow_check_entry_balanced()"
    )
    names = [(name, table) for name, table, _, _ in triggers]
    names += [(f"{table}_no_truncate", table) for table in APPEND_ONLY]
    names.append(("log_entries_balanced", "log_entries"))
    statements += [f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}" for name, table in names]
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
        CREATE TRIGGER log_entries_in_order BEFORE INSERT ON log_entries
        WHEN typeof(NEW.seq) != 'integer'
            OR NEW.seq != COALESCE((SELECT max(seq) + 1 FROM log_entries), 0)
            OR typeof(NEW.body) != 'blob' OR typeof(NEW.hash) != 'blob' OR length(NEW.hash) != 32
        BEGIN
            SELECT RAISE(ABORT, 'log entries are appended in order, with a blob body and a 32-byte hash');
        END
        """,
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
        CREATE TRIGGER postings_well_formed BEFORE INSERT ON postings
        WHEN typeof(NEW.seq) != 'integer' OR typeof(NEW.account_id) != 'integer'
            OR typeof(NEW.amount) != 'integer'
            OR EXISTS (SELECT 1 FROM postings WHERE id = NEW.id)
        BEGIN
            SELECT RAISE(ABORT, 'postings are new rows with integer seq, account and amount');
        END
        """,
        """
        CREATE TRIGGER postings_for_new_entry BEFORE INSERT ON postings
        WHEN NEW.seq <= COALESCE((SELECT max(seq) FROM log_entries), -1)
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
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("opened_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("balance >= 0", name=op.f("ck_accounts_non_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("code", name=op.f("uq_accounts_code")),
    )
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
    op.create_index("ix_log_entries_time_seq", "log_entries", ["time", "seq"])
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
    op.create_table(
        "personal_data",
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("salt", sa.LargeBinary(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("subject_id", name=op.f("pk_personal_data")),
    )

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

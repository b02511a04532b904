"""Merkle tree levels: the hash of every complete subtree of the log, append-only.

Existing logs are backfilled from their entries' leaf hashes, streaming, keeping only the
frontier (at most one node per level) in memory.

Revision ID: 12f35abd4be0
Revises: 53509eaca446
Create Date: 2026-11-21 12:31:24.399162
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ledger.merkle import parents_completed

revision: str = "12f35abd4be0"
down_revision: str | None = "53509eaca446"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5_000


def _triggers(dialect: str) -> list[str]:
    if dialect == "postgresql":
        return [
            (
                "CREATE TRIGGER merkle_nodes_append_only BEFORE UPDATE OR DELETE ON merkle_nodes "
                "FOR EACH ROW EXECUTE FUNCTION escrow_refuse_change()"
            ),
            (
                "CREATE TRIGGER merkle_nodes_no_truncate BEFORE TRUNCATE ON merkle_nodes "
                "FOR EACH STATEMENT EXECUTE FUNCTION escrow_refuse_change()"
            ),
            "ALTER TABLE merkle_nodes ENABLE ALWAYS TRIGGER merkle_nodes_append_only",
            "ALTER TABLE merkle_nodes ENABLE ALWAYS TRIGGER merkle_nodes_no_truncate",
        ]
    if dialect == "sqlite":
        return [
            f"CREATE TRIGGER merkle_nodes_no_{operation.lower()} BEFORE {operation} ON "
            f"merkle_nodes BEGIN SELECT RAISE(ABORT, 'merkle_nodes is append-only: "
            f"{operation} refused'); END"
            for operation in ("UPDATE", "DELETE")
        ]
    raise NotImplementedError(f"no ledger triggers for the {dialect} dialect")


def _backfill() -> None:
    connection = op.get_bind()
    nodes = sa.table("merkle_nodes", sa.column("level"), sa.column("idx"), sa.column("hash"))
    frontier: dict[tuple[int, int], bytes] = {}
    pending: list[dict[str, object]] = []
    # Statement-level options: Connection.execution_options would switch every later statement
    # of the migration (the triggers) to a server-side cursor too.
    leaves = connection.execute(
        sa.text("SELECT seq, hash FROM log_entries ORDER BY seq").execution_options(yield_per=BATCH)
    )
    for seq, leaf in leaves:
        for level, index, value in parents_completed(
            seq, bytes(leaf), lambda level, index: frontier[(level, index)]
        ):
            frontier[(level, index)] = value
            pending.append({"level": level, "idx": index, "hash": value})
        frontier[(0, seq)] = bytes(leaf)
        # Only the last node of each level can still gain a right sibling.
        for key in [k for k in frontier if k[1] < (seq + 1 >> k[0]) - 1]:
            del frontier[key]
        if len(pending) >= BATCH:
            connection.execute(nodes.insert(), pending)
            pending = []
    if pending:
        connection.execute(nodes.insert(), pending)


def upgrade() -> None:
    op.create_table(
        "merkle_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_merkle_nodes")),
    )
    _backfill()
    for statement in _triggers(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    raise RuntimeError(
        "the Merkle levels cannot be downgraded: checkpoints already signed are computed from them"
    )

"""Party signing keys: the Ed25519 keys institutions and banks sign their reports with.

While a party has an active key, its lesson reports (institution) and receipts (bank) must carry
its signature, stored in the log entry, so the log proves which party made each claim. One active
key per party; revoked keys stay, with the entry that revoked them, to verify older entries.

Revision ID: 69625dd23ba2
Revises: 8823622801fe
Create Date: 2026-11-21 12:37:17.529461
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "69625dd23ba2"
down_revision: str | None = "8823622801fe"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "party_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column(
            "party_kind",
            sa.Enum(
                "institution",
                "bank",
                name="party_kind",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("party_id", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("key_id", sa.LargeBinary(length=4), nullable=False),
        sa.Column("registered_seq", sa.BigInteger(), nullable=False),
        sa.Column("revoked_seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_party_keys")),
    )
    with op.batch_alter_table("party_keys", schema=None) as batch_op:
        batch_op.create_index("ix_party_keys_party", ["party_kind", "party_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("party_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_party_keys_party")

    op.drop_table("party_keys")

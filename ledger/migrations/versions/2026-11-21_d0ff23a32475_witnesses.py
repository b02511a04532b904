"""Witnesses: the cosigner keys banks and regulators register, and the cosignatures they return.

A checkpoint is witnessed when enough independent witnesses cosigned it, each having checked it
extends the last checkpoint it saw; keys stay after revocation (with the revoking entry) so older
cosignatures remain checkable.

Revision ID: d0ff23a32475
Revises: 69625dd23ba2
Create Date: 2026-11-21 12:43:26.449101
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d0ff23a32475"
down_revision: str | None = "69625dd23ba2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "witness_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column(
            "holder_role",
            sa.Enum(
                "bank",
                "regulator",
                name="witness_holder_role",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("holder_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("key_id", sa.LargeBinary(length=4), nullable=False),
        sa.Column("url", sa.String(length=512), nullable=False),
        sa.Column("registered_seq", sa.BigInteger(), nullable=False),
        sa.Column("revoked_seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_witness_keys")),
    )
    with op.batch_alter_table("witness_keys", schema=None) as batch_op:
        batch_op.create_index("ix_witness_keys_holder", ["holder_role", "holder_id"], unique=False)

    op.create_table(
        "cosignatures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "checkpoint_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("witness_key_id", sa.String(length=40), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_cosignatures_checkpoint_id_checkpoints"),
        ),
        sa.ForeignKeyConstraint(
            ["witness_key_id"],
            ["witness_keys.id"],
            name=op.f("fk_cosignatures_witness_key_id_witness_keys"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cosignatures")),
        sa.UniqueConstraint(
            "checkpoint_id",
            "witness_key_id",
            name=op.f("uq_cosignatures_checkpoint_id_witness_key_id"),
        ),
    )
    with op.batch_alter_table("cosignatures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cosignatures_checkpoint_id"), ["checkpoint_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_cosignatures_witness_key_id"), ["witness_key_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("cosignatures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cosignatures_witness_key_id"))
        batch_op.drop_index(batch_op.f("ix_cosignatures_checkpoint_id"))

    op.drop_table("cosignatures")
    with op.batch_alter_table("witness_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_witness_keys_holder")

    op.drop_table("witness_keys")

"""The confirmation sweep's index covers its whole order: (status, confirm_by, id).

``auto_confirm`` takes due lessons ordered by (confirm_by, id), a chunk at a time. With the index
on (status, confirm_by) alone every chunk sorted all due lessons sharing a deadline again (issue 8:
quadratic in the backlog, every lesson of a day's reports shares its deadline); with ``id`` in the
index a chunk is a range read.

Revision ID: 5e7c1a2b9d40
Revises: 0605fa99ad00
Create Date: 2026-11-21 14:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "5e7c1a2b9d40"
down_revision: str | None = "0605fa99ad00"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lessons", schema=None) as batch_op:
        batch_op.create_index(
            "ix_lessons_status_confirm_by_id", ["status", "confirm_by", "id"], unique=False
        )
        batch_op.drop_index("ix_lessons_status_confirm_by")


def downgrade() -> None:
    with op.batch_alter_table("lessons", schema=None) as batch_op:
        batch_op.create_index(
            "ix_lessons_status_confirm_by", ["status", "confirm_by"], unique=False
        )
        batch_op.drop_index("ix_lessons_status_confirm_by_id")

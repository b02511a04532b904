"""Risk grades and alerts (issue 7: daily risk grading of institutions, 风险等级).

One grade per institution and business date, with the signals and fired rules it was computed
from (JSON), so the history a regulator reads is the one that was logged as ``risk.graded``; and
the alerts raised when a grade worsened into C or D, acknowledged later by a regulator.

Revision ID: 0605fa99ad00
Revises: 4f9c29249932
Create Date: 2026-11-21 13:23:16.742988
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0605fa99ad00"
down_revision: str | None = "4f9c29249932"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "risk_alerts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("institution_id", sa.String(length=40), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column(
            "from_grade",
            sa.Enum(
                "A",
                "B",
                "C",
                "D",
                name="risk_alert_from",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=True,
        ),
        sa.Column(
            "to_grade",
            sa.Enum(
                "A", "B", "C", "D", name="risk_alert_to", native_enum=False, create_constraint=True
            ),
            nullable=False,
        ),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("raised_seq", sa.BigInteger(), nullable=False),
        sa.Column("acknowledged_by", sa.String(length=128), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_seq", sa.BigInteger(), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_risk_alerts_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_alerts")),
        sa.UniqueConstraint(
            "institution_id",
            "business_date",
            name=op.f("uq_risk_alerts_institution_id_business_date"),
        ),
    )
    with op.batch_alter_table("risk_alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_risk_alerts_raised_seq"), ["raised_seq"], unique=False)

    op.create_table(
        "risk_grades",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("institution_id", sa.String(length=40), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column(
            "grade",
            sa.Enum(
                "A", "B", "C", "D", name="risk_grade", native_enum=False, create_constraint=True
            ),
            nullable=False,
        ),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("policy", sa.String(length=64), nullable=False),
        sa.Column("signals", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_risk_grades_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_grades")),
        sa.UniqueConstraint(
            "institution_id",
            "business_date",
            name=op.f("uq_risk_grades_institution_id_business_date"),
        ),
    )
    with op.batch_alter_table("risk_grades", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_risk_grades_business_date"), ["business_date"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("risk_grades", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_risk_grades_business_date"))

    op.drop_table("risk_grades")
    with op.batch_alter_table("risk_alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_risk_alerts_raised_seq"))

    op.drop_table("risk_alerts")

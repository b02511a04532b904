"""The demo month: built through the services, every step of the story present, and it verifies."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from api.cli import app
from api.demo import DemoSummary, build_demo, demo_start
from ledger.clock import ManualClock
from ledger.config import Settings
from ledger.entities import (
    ConfirmedBy,
    Institution,
    InstitutionStatus,
    Lesson,
    LessonStatus,
    Refund,
    RefundKind,
    RefundStatus,
)
from ledger.models import LogEntry
from ledger.runtime import Ledger


@pytest.fixture
def demo(settings: Settings) -> tuple[Ledger, DemoSummary]:
    clock = ManualClock(demo_start(datetime.now(UTC), settings.zone))
    ledger = Ledger.open(settings, clock=clock, migrate=False)
    try:
        yield ledger, build_demo(ledger, clock)  # type: ignore[misc]
    finally:
        ledger.close()


def test_the_demo_month_verifies_and_holds_every_invariant(
    demo: tuple[Ledger, DemoSummary],
) -> None:
    _, summary = demo
    assert summary.report is not None
    assert summary.report.ok, summary.report.problems
    assert summary.invariant_problems == []
    assert summary.ok
    assert [row.name for row in summary.institutions] == ["星河艺术中心", "启明学堂", "飞跃体育"]


def test_the_demo_tells_the_whole_story(demo: tuple[Ledger, DemoSummary]) -> None:
    ledger, summary = demo
    assert summary.refused == ["rules/max-lessons: 72 lessons requested; the limit is 60"]
    assert summary.returned_receipts == 1
    assert summary.failed_payouts == 1
    assert all(row.paid_out_fen > 0 for row in summary.institutions)
    with ledger.readers() as session:
        types = Counter(session.scalars(select(LogEntry.type)))
        statuses = {i.name: i.status for i in session.scalars(select(Institution))}
        refunds = list(session.scalars(select(Refund)))
        confirmed_by = Counter(
            session.scalars(
                select(Lesson.confirmed_by).where(Lesson.status == LessonStatus.CONFIRMED)
            )
        )
        parents = session.scalar(
            select(func.count()).select_from(LogEntry).where(LogEntry.type == "parent.registered")
        )
    assert parents == 30
    assert statuses["飞跃体育"] is InstitutionStatus.WINDING_DOWN
    assert types["institution.frozen"] == 1
    assert types["receipt.returned"] == 1
    assert types["lesson.disputed"] == 2
    assert types["lesson.voided"] == 1  # withdrawn by the institution
    assert types["refund.rejected"] == 1
    assert {ConfirmedBy.PARENT, ConfirmedBy.SILENCE, ConfirmedBy.REGULATOR} <= set(confirmed_by)
    kinds = Counter((r.kind, r.status) for r in refunds)
    assert kinds[(RefundKind.WIND_DOWN, RefundStatus.PAID)] >= 1
    assert (
        kinds[(RefundKind.REQUESTED, RefundStatus.PAID)] >= 2
    )  # after and before a course started
    assert any(
        r.lessons >= 10 and r.kind is RefundKind.REQUESTED for r in refunds
    )  # a whole package
    assert sum(types[t] for t in ("lesson.reported",)) > 200
    # one batch per institution and day that released money; idle days leave no batch
    assert 30 < types["settlement.batched"] < 3 * 30
    assert types["payout.failed"] == 1
    assert types["payout.instructed"] == 1  # the retry of the bounced payout
    assert types["payout.executed"] > 30


def test_the_collapsing_institution_goes_from_a_to_d_before_its_freeze(
    demo: tuple[Ledger, DemoSummary],
) -> None:
    from ledger.risk import RiskAlert, history

    ledger, summary = demo
    with ledger.readers() as session:
        by_name = {i.name: i for i in session.scalars(select(Institution))}
        sports = by_name["飞跃体育"]
        frozen_at = session.scalar(
            select(LogEntry.time).where(LogEntry.type == "institution.frozen")
        )
        assert frozen_at is not None
        freeze_day = ledger.escrow.local_date(frozen_at)
        grades = [(g.business_date, g.grade.value) for g in history(session, sports.id)]
        before = "".join(grade for day, grade in grades if day < freeze_day)
        alerts = list(
            session.scalars(select(RiskAlert).where(RiskAlert.institution_id == sports.id))
        )
        healthy = {
            name: "".join(g.grade.value for g in history(session, i.id))
            for name, i in by_name.items()
            if i.id != sports.id
        }
    # green for its first weeks, red before the regulator froze it
    assert before.startswith("A" * 14)
    assert before.endswith("D")
    assert set(before) <= {"A", "B", "C", "D"}
    assert before.index("D") > before.rindex("A")
    assert any(a.to_grade.value == "D" and a.business_date < freeze_day for a in alerts)
    for letters in healthy.values():
        assert len(letters) == 30
        assert set(letters) <= {"A", "B"}
    row = next(r for r in summary.institutions if r.name == "飞跃体育")
    assert row.grades == "".join(grade for _, grade in grades)


def test_escrow_demo_refuses_a_database_that_is_not_empty(tmp_path: Path) -> None:
    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    env = {"ESCROW_KEY_DIR": str(tmp_path / "keys")}
    first = runner.invoke(app, ["demo", "--database-url", url], env=env)
    assert first.exit_code == 0, first.output
    assert "The demo month" in first.output
    assert "OK: " in first.output
    again = runner.invoke(app, ["demo", "--database-url", url], env=env)
    assert again.exit_code == 2
    assert "builds a fresh database" in again.output

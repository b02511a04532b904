"""Deadline sweeps: each deadline acted on once, whenever the sweep runs."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from ledger.accounts import AccountKind
from ledger.entities import ConfirmedBy, Lesson, Refund, RefundStatus, Regulator
from ledger.escrow import queries
from ledger.models import LogEntry
from settlement.sweeps import run_sweeps
from tests.escrow.world import LESSON, World


def _overdue_entries(world: World) -> int:
    with world.read() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(LogEntry).where(LogEntry.type == "refund.overdue")
            )
            or 0
        )


def test_an_unpaid_refund_past_its_deadline_is_flagged_once_for_the_regulator(world: World) -> None:
    contract = world.paid_contract(lessons=10, unit=LESSON)
    world.report(contract)
    refund = world.approve(world.request_refund(contract, 2))
    assert refund.pay_by is not None
    world.set_clock(refund.pay_by - timedelta(seconds=1))
    assert run_sweeps(world.ledger.sessions, world.ctx).overdue == 0
    world.set_clock(refund.pay_by)
    assert run_sweeps(world.ledger.sessions, world.ctx).overdue == 1
    assert run_sweeps(world.ledger.sessions, world.ctx).overdue == 0
    assert _overdue_entries(world) == 1
    with world.read() as session:
        municipal = session.get(Regulator, world.regulator)
        district = session.get(Regulator, world.district_regulator)
        assert municipal is not None
        assert district is not None
        assert [r.id for r in queries.overdue_refunds(session, municipal)] == [refund.id]
        assert [r.id for r in queries.overdue_refunds(session, district)] == [refund.id]  # haishu
    world.do(
        __import__("ledger.escrow.refunds", fromlist=["pay_refund"]).pay_refund,
        bank_id=world.bank,
        refund_id=refund.id,
        bank_reference="LATE",
    )
    assert world.get(Refund, refund.id).status is RefundStatus.PAID
    assert world.get(Refund, refund.id).overdue_seq is not None  # it was late, and stays on record
    with world.read() as session:
        assert queries.overdue_refunds(session, session.get(Regulator, world.regulator)) == []  # type: ignore[arg-type]


def test_one_sweep_after_long_downtime_catches_every_passed_deadline(world: World) -> None:
    contract = world.paid_contract(lessons=20, unit=LESSON)
    reported = world.report(contract, 5)
    asked = world.request_refund(contract, 3)
    world.advance_clock(days=60)
    report = run_sweeps(world.ledger.sessions, world.ctx)
    assert (report.confirmed, report.approved, report.overdue) == (5, 1, 1)
    assert {world.get(Lesson, x.id).confirmed_by for x in reported} == {ConfirmedBy.SILENCE}
    assert world.get(Refund, asked.id).status is RefundStatus.APPROVED
    assert world.acct(AccountKind.RELEASABLE) == 5 * LESSON
    again = run_sweeps(world.ledger.sessions, world.ctx)
    assert (again.confirmed, again.approved, again.overdue) == (0, 0, 0)

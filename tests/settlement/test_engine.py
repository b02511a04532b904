"""The settlement engine: exactly once, crash-safe, netting advances, never negative."""

from __future__ import annotations

import random
from datetime import date

import pytest
from sqlalchemy import func, select

from ledger.accounts import AccountKind
from ledger.entities import Lesson, Payout, SettlementBatch
from ledger.escrow import refunds
from ledger.models import LogEntry
from settlement.engine import latest_due, preview, settle
from tests.escrow.world import LESSON, World, shanghai


def _confirmed_lessons(world: World, institution: str, count: int) -> str:
    contract = world.paid_contract(institution, lessons=20, unit=LESSON)
    for lesson in world.report(contract, count):
        world.confirm(lesson.id)
    return contract


def _log_size(world: World) -> int:
    with world.read() as session:
        return int(session.scalar(select(func.count()).select_from(LogEntry)) or 0)


def test_confirmed_lessons_are_settled_the_next_day_into_one_payout(world: World) -> None:
    _confirmed_lessons(world, world.school, 3)
    assert not [b for b in world.settle(institutions=[world.school]).created if b.gross_fen]
    world.set_clock(shanghai(2026, 9, 2, 2))
    report = world.settle(institutions=[world.school])
    [batch] = [b for b in report.created if b.gross_fen]
    assert (batch.business_date, batch.lessons, batch.gross_fen, batch.payable_fen) == (
        date(2026, 9, 1),
        3,
        3 * LESSON,
        3 * LESSON,
    )
    [payout] = report.payouts
    assert (payout.amount_fen, payout.settlement_account) == (3 * LESSON, "SET-national")
    assert world.acct(AccountKind.RELEASABLE) == 0
    assert world.acct(AccountKind.PAYABLE) == 3 * LESSON
    with world.read() as session:
        assert set(session.scalars(select(Lesson.batch_id))) == {batch.id}


def test_running_the_same_date_again_creates_nothing_and_reports_the_batch(world: World) -> None:
    _confirmed_lessons(world, world.school, 2)
    world.set_clock(shanghai(2026, 9, 2, 2))
    first = world.settle(through=date(2026, 9, 1))
    size = _log_size(world)
    again = world.settle(through=date(2026, 9, 1))
    assert again.created == []
    assert again.payouts == []
    assert {b.id for b in again.existing} >= {
        b.id for b in first.created if b.business_date == date(2026, 9, 1)
    }
    assert _log_size(world) == size


def test_a_date_not_yet_due_is_not_settled(world: World) -> None:
    _confirmed_lessons(world, world.school, 1)
    report = world.settle(through=date(2026, 9, 1), institutions=[world.school])
    assert report.not_due == [world.school]
    assert world.acct(AccountKind.RELEASABLE) == LESSON


@pytest.mark.parametrize("crash_after", [0, 1, 2, 3])
def test_a_run_killed_between_institutions_is_completed_exactly_by_the_next(
    world: World, crash_after: int
) -> None:
    institutions = [world.institution("national") for _ in range(4)]
    for institution in institutions:
        _confirmed_lessons(world, institution, random.randint(1, 5))
    releasable = {i: world.acct(AccountKind.RELEASABLE, i) for i in institutions}
    world.set_clock(shanghai(2026, 9, 2, 2))
    done: list[str] = []

    def crash(institution_id: str) -> None:
        done.append(institution_id)
        if len(done) == crash_after + 1:
            raise RuntimeError("the process died")

    with pytest.raises(RuntimeError):
        settle(
            world.ledger.sessions, world.ctx, institutions=institutions, between_institutions=crash
        )
    assert sum(world.acct(AccountKind.PAYABLE, i) > 0 for i in institutions) == crash_after + 1
    world.settle(institutions=institutions)  # the next run completes the rest
    world.settle(institutions=institutions)  # and a third changes nothing
    for institution in institutions:
        assert world.acct(AccountKind.PAYABLE, institution) == releasable[institution]
        assert world.acct(AccountKind.RELEASABLE, institution) == 0
    with world.read() as session:
        per_day = session.execute(
            select(SettlementBatch.institution_id, SettlementBatch.business_date, func.count())
            .where(SettlementBatch.institution_id.in_(institutions))
            .group_by(SettlementBatch.institution_id, SettlementBatch.business_date)
        ).all()
        payouts = session.scalar(
            select(func.count()).select_from(Payout).where(Payout.institution_id.in_(institutions))
        )
    assert {count for *_, count in per_day} == {1}
    assert payouts == len(institutions)


def test_advances_owed_back_are_netted_before_anything_is_paid(world: World) -> None:
    contract = world.paid_contract(world.advance, lessons=20, unit=LESSON)  # advance 22,500
    assert world.pay_out_releasable(world.advance) == 22_500
    world.approve(world.request_refund(contract, 10))  # 11,250 of the advance falls due
    assert world.acct(AccountKind.ADVANCE_DUE, world.advance) == 11_250
    other = world.paid_contract(world.advance, lessons=20, unit=LESSON, subject="music")
    for lesson in world.report(other, 2):
        world.confirm(lesson.id)
    # the second receipt released another 22,500 of advance; with two lessons 2 × 13,875 pending
    releasable = world.acct(AccountKind.RELEASABLE, world.advance)
    world.advance_clock(days=1)
    report = world.settle(institutions=[world.advance])
    [batch] = [b for b in report.created if b.gross_fen]
    assert (batch.gross_fen, batch.netted_fen) == (releasable, 11_250)
    assert batch.payable_fen == releasable - 11_250
    assert world.acct(AccountKind.ADVANCE_DUE, world.advance) == 0


def test_money_recovered_after_the_day_ended_is_not_settled_twice(world: World) -> None:
    contract = world.paid_contract(world.advance, lessons=20, unit=LESSON)  # releasable 22,500
    world.set_clock(shanghai(2026, 9, 2, 1))  # after the business day of the receipt ended...
    world.approve(world.request_refund(contract))  # ...the refund takes the advance back
    assert world.acct(AccountKind.RELEASABLE, world.advance) == 0
    world.set_clock(shanghai(2026, 9, 2, 2))
    report = world.settle(institutions=[world.advance])
    assert [b.gross_fen for b in report.created] == [0]  # never more than releasable holds now
    assert report.payouts == []


def test_money_confirmed_after_the_day_is_not_released_with_it(world: World) -> None:
    """A recovery after midnight must not let the next day's confirmations into the batch."""
    first = world.paid_contract(world.advance, lessons=20, unit=LESSON)  # releasable 22,500
    other = world.paid_contract(  # +22,500
        world.advance,
        lessons=20,
        unit=LESSON,
        parent=world.other_parent,
        student=world.other_student,
    )
    [lesson] = world.report(other)
    world.confirm(
        lesson.id, world.other_parent
    )  # + 13,875 (15,000 less its 1,125 advance share), all on 1 Sep
    world.set_clock(shanghai(2026, 9, 2, 0, 30))
    world.approve(world.request_refund(first))  # recovers 22,500 of 1 Sep's money
    world.set_clock(shanghai(2026, 9, 2, 1, 0))
    [late] = world.report(other)
    world.confirm(late.id, world.other_parent)  # 13,875 more, but on 2 Sep
    world.set_clock(shanghai(2026, 9, 2, 2))
    [batch] = world.settle(institutions=[world.advance]).created
    assert batch.business_date == date(2026, 9, 1)
    # 1 Sep's money that is still there: two advances and a lesson, less the recovered advance
    assert batch.gross_fen == 2 * 22_500 + 13_875 - 22_500
    assert batch.lessons == 1
    world.set_clock(shanghai(2026, 9, 3, 2))
    [next_day] = world.settle(institutions=[world.advance]).created
    assert (next_day.business_date, next_day.gross_fen, next_day.lessons) == (
        date(2026, 9, 2),
        13_875,
        1,
    )


def test_a_working_day_lag_waits_for_the_next_working_day(world: World) -> None:
    institution = world.institution("working-t1")
    world.set_clock(shanghai(2026, 9, 30, 12))  # Wednesday before the National Day week
    _confirmed_lessons(world, institution, 1)
    policy = world.ctx.policy("working-t1")
    assert latest_due(world.ctx, policy.settlement_lag, date(2026, 10, 7)) == date(2026, 9, 29)
    assert latest_due(world.ctx, policy.settlement_lag, date(2026, 10, 8)) == date(2026, 10, 7)
    world.set_clock(shanghai(2026, 10, 7, 12))
    assert world.acct(AccountKind.PAYABLE, institution) == 0
    world.settle(institutions=[institution])
    assert world.acct(AccountKind.PAYABLE, institution) == 0
    world.set_clock(shanghai(2026, 10, 8, 2))
    world.settle(institutions=[institution])
    assert world.acct(AccountKind.PAYABLE, institution) == LESSON


def test_a_dry_run_shows_the_batches_and_writes_nothing(world: World) -> None:
    _confirmed_lessons(world, world.school, 2)
    world.set_clock(shanghai(2026, 9, 2, 2))
    size = _log_size(world)
    shown = preview(world.ledger.readers, world.ctx)
    assert sum(b.gross_fen for b in shown.created) == 2 * LESSON
    assert _log_size(world) == size
    assert world.acct(AccountKind.PAYABLE) == 0


def test_catching_up_after_downtime_settles_every_missed_date_in_order(world: World) -> None:
    contract = world.paid_contract(lessons=20, unit=LESSON)
    for day in range(1, 5):  # a lesson confirmed on each of 4 days, and no settlement run
        world.set_clock(shanghai(2026, 9, 1 + day, 18))
        [lesson] = world.report(contract)
        world.confirm(lesson.id)
    world.set_clock(shanghai(2026, 9, 10, 9))
    report = world.settle(institutions=[world.school])
    # one batch per day on which money became releasable (the receipt day had nothing), in order
    assert [(b.business_date, b.gross_fen) for b in report.created] == [
        (date(2026, 9, 1 + day), LESSON) for day in range(1, 5)
    ]
    assert world.acct(AccountKind.PAYABLE) == 4 * LESSON


def test_refunds_and_the_auto_approved_ones_are_not_touched_by_settlement(world: World) -> None:
    contract = world.paid_contract(lessons=10, unit=LESSON)
    world.report(contract)
    world.do(refunds.request_refund, parent_id=world.parent, contract_id=contract, lessons=3)
    world.set_clock(shanghai(2026, 9, 20, 2))
    world.settle(institutions=[world.school])
    assert world.acct(AccountKind.REFUND_PAYABLE) == 0
    assert world.acct(AccountKind.PENDING) == LESSON  # never confirmed: not releasable

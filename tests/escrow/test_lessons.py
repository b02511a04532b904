"""Lesson consumption: reports, confirmation, disputes, and confirmation by silence."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from ledger.accounts import AccountKind
from ledger.entities import ConfirmedBy, Contract, ContractStatus, Lesson, LessonStatus
from ledger.errors import (
    ConfirmationWindowClosed,
    ContractNotActive,
    InstitutionNotActive,
    InvalidRequest,
    LessonBeforeStart,
    LessonInFuture,
    LessonNotOpen,
    LessonRefConflict,
    NoLessonsLeft,
    NotFound,
)
from ledger.escrow import lessons
from ledger.escrow.lessons import LessonReport
from ledger.models import LogEntry
from tests.escrow.world import LESSON, World, shanghai


def _log_size(world: World) -> int:
    with world.read() as session:
        return int(session.scalar(select(func.count()).select_from(LogEntry)) or 0)


def test_a_reported_lesson_moves_its_price_from_the_contract_to_pending(world: World) -> None:
    contract_id = world.paid_contract(lessons=20, unit=LESSON)
    [lesson] = world.report(contract_id)
    assert (lesson.price_fen, lesson.advance_fen, lesson.status) == (
        LESSON,
        0,
        LessonStatus.REPORTED,
    )
    assert world.owed(contract_id) == 285_000
    assert world.acct(AccountKind.PENDING) == 15_000
    assert world.escrow() == 300_000


def test_confirmation_makes_a_lesson_releasable(world: World) -> None:
    contract_id = world.paid_contract()
    [lesson] = world.report(contract_id)
    confirmed = world.confirm(lesson.id)
    assert (confirmed.status, confirmed.confirmed_by) == (
        LessonStatus.CONFIRMED,
        ConfirmedBy.PARENT,
    )
    assert world.acct(AccountKind.PENDING) == 0
    assert world.acct(AccountKind.RELEASABLE) == 15_000


def test_the_window_counts_working_days_across_the_national_day_week(world: World) -> None:
    contract_id = world.paid_contract(lessons=10, unit=LESSON, start=world.ctx.today())
    world.set_clock(shanghai(2026, 9, 29, 9))
    [lesson] = world.report(contract_id)
    # Sep 30, Oct 8, 9, 10 (make-up Saturday), 12, 13, 14: the window ends at Oct 15 00:00 Shanghai
    assert lesson.confirm_by == datetime(2026, 10, 14, 16, 0, tzinfo=UTC)
    world.set_clock(shanghai(2026, 10, 14, 23, 59))
    assert world.do(lessons.auto_confirm) == 0
    world.set_clock(shanghai(2026, 10, 15, 0, 0))
    assert world.do(lessons.auto_confirm) == 1
    after = world.get(Lesson, lesson.id)
    assert (after.status, after.confirmed_by) == (LessonStatus.CONFIRMED, ConfirmedBy.SILENCE)
    assert world.acct(AccountKind.RELEASABLE) == 15_000
    assert world.do(lessons.auto_confirm) == 0  # idempotent


def test_a_disputed_lesson_stays_pending_and_withdrawing_it_returns_the_money(world: World) -> None:
    contract_id = world.paid_contract(lessons=2, unit=LESSON)
    first, second = world.report(contract_id, 2)
    assert world.get(Contract, contract_id).status is ContractStatus.COMPLETED
    world.do(lessons.dispute_lesson, parent_id=world.parent, lesson_id=first.id, reason="absent")
    world.advance_clock(days=30)
    world.do(lessons.auto_confirm)  # the disputed one is not confirmed by silence
    assert world.get(Lesson, first.id).status is LessonStatus.DISPUTED
    assert world.acct(AccountKind.PENDING) == 15_000
    world.do(lessons.withdraw_lesson, institution_id=world.school, lesson_id=first.id)
    assert world.get(Lesson, first.id).status is LessonStatus.VOIDED
    assert world.owed(contract_id) == 15_000
    assert world.acct(AccountKind.PENDING) == 0
    assert world.get(Contract, contract_id).status is ContractStatus.ACTIVE
    [again] = world.report(contract_id)  # the lesson can be delivered again
    assert again.price_fen == 15_000
    assert world.get(Lesson, second.id).status is LessonStatus.CONFIRMED


@pytest.mark.parametrize("for_institution", [True, False])
def test_a_regulator_resolves_a_dispute_either_way(world: World, for_institution: bool) -> None:
    contract_id = world.paid_contract()
    [lesson] = world.report(contract_id)
    world.do(lessons.dispute_lesson, parent_id=world.parent, lesson_id=lesson.id, reason="late")
    world.do(
        lessons.resolve_dispute,
        regulator_id=world.regulator,
        lesson_id=lesson.id,
        for_institution=for_institution,
        note="checked the attendance sheet",
    )
    resolved = world.get(Lesson, lesson.id)
    if for_institution:
        assert (resolved.status, resolved.confirmed_by) == (
            LessonStatus.CONFIRMED,
            ConfirmedBy.REGULATOR,
        )
        assert world.acct(AccountKind.RELEASABLE) == 15_000
    else:
        assert resolved.status is LessonStatus.VOIDED
        assert world.owed(contract_id) == 300_000
    assert world.acct(AccountKind.PENDING) == 0


def test_a_dispute_after_the_window_is_refused(world: World) -> None:
    [lesson] = world.report(world.paid_contract())
    world.set_clock(lesson.confirm_by)
    with pytest.raises(ConfirmationWindowClosed):
        world.do(lessons.dispute_lesson, parent_id=world.parent, lesson_id=lesson.id, reason="x")


def test_only_a_disputed_lesson_can_be_withdrawn_or_resolved(world: World) -> None:
    [lesson] = world.report(world.paid_contract())
    with pytest.raises(LessonNotOpen):
        world.do(lessons.withdraw_lesson, institution_id=world.school, lesson_id=lesson.id)
    with pytest.raises(LessonNotOpen):
        world.do(
            lessons.resolve_dispute,
            regulator_id=world.regulator,
            lesson_id=lesson.id,
            for_institution=True,
            note="n/a",
        )
    world.confirm(lesson.id)
    with pytest.raises(LessonNotOpen):
        world.confirm(lesson.id)


def test_a_batch_is_recorded_whole_or_not_at_all(world: World) -> None:
    paid, unpaid = world.paid_contract(), world.contract(subject="music", lessons=5)
    before = _log_size(world)
    now = world.now()
    batch = [
        LessonReport(paid, "B1", now, "t"),
        LessonReport(paid, "B2", now, "t"),
        LessonReport(unpaid, "B3", now, "t"),
    ]
    with pytest.raises(ContractNotActive):
        world.do(lessons.report_lessons, institution_id=world.school, reports=batch)
    assert _log_size(world) == before
    assert world.owed(paid) == 300_000
    assert world.get(Contract, paid).lessons_delivered == 0


def test_reporting_a_lesson_id_again_returns_the_same_lesson(world: World) -> None:
    contract_id = world.paid_contract()
    report = LessonReport(contract_id, "ROOM-3-0901", world.now(), "teacher-1")
    [first] = world.do(lessons.report_lessons, institution_id=world.school, reports=[report])
    size = _log_size(world)
    [again] = world.do(lessons.report_lessons, institution_id=world.school, reports=[report])
    assert again.id == first.id
    assert _log_size(world) == size
    assert world.owed(contract_id) == 285_000
    changed = LessonReport(contract_id, "ROOM-3-0901", world.now(), "teacher-2")
    with pytest.raises(LessonRefConflict):
        world.do(lessons.report_lessons, institution_id=world.school, reports=[changed])


def test_no_more_lessons_than_were_bought(world: World) -> None:
    contract_id = world.paid_contract(lessons=2, unit=LESSON)
    world.report(contract_id, 2)
    with pytest.raises(ContractNotActive, match="completed"):
        world.report(contract_id)


def test_lessons_reserved_by_a_refund_request_cannot_be_reported(world: World) -> None:
    contract_id = world.paid_contract(lessons=3, unit=LESSON)
    world.report(contract_id)
    world.request_refund(contract_id, 2)
    with pytest.raises(NoLessonsLeft, match="2 reserved by refund requests"):
        world.report(contract_id)


def test_a_frozen_institution_cannot_report_lessons(world: World) -> None:
    contract_id = world.paid_contract()
    world.freeze(world.school)
    with pytest.raises(InstitutionNotActive):
        world.report(contract_id)


def test_a_lesson_in_the_future_or_before_the_course_is_refused(world: World) -> None:
    contract_id = world.paid_contract()
    with pytest.raises(LessonInFuture):
        world.report(contract_id, at=world.now() + timedelta(minutes=1))
    with pytest.raises(LessonBeforeStart):
        world.report(contract_id, at=world.now() - timedelta(days=1))


def test_another_institutions_contract_or_lesson_is_not_found(world: World) -> None:
    contract_id = world.paid_contract()
    with pytest.raises(NotFound):
        world.do(
            lessons.report_lessons,
            institution_id=world.academy,
            reports=[LessonReport(contract_id, "X", world.now(), "t")],
        )
    [lesson] = world.report(contract_id)
    with pytest.raises(NotFound):
        world.confirm(lesson.id, parent=world.other_parent)
    with pytest.raises(NotFound):
        world.do(lessons.withdraw_lesson, institution_id=world.academy, lesson_id=lesson.id)
    academy_contract = world.paid_contract(world.academy, lessons=5, unit=4_000, class_size=20)
    [academy_lesson] = world.report(academy_contract)
    world.do(
        lessons.dispute_lesson, parent_id=world.parent, lesson_id=academy_lesson.id, reason="x"
    )
    with pytest.raises(NotFound):  # the Haishu bureau does not supervise Yinzhou
        world.do(
            lessons.resolve_dispute,
            regulator_id=world.district_regulator,
            lesson_id=academy_lesson.id,
            for_institution=True,
            note="n/a",
        )


def test_advance_shares_add_up_to_the_advance_to_the_fen(world: World) -> None:
    contract_id = world.paid_contract(world.advance, lessons=20, unit=14_995)
    reported = world.report(contract_id, 20)
    # 22,492 over 20 lessons: 12 lessons carry 1,125 and 8 carry 1,124 (largest remainder)
    assert sorted({x.advance_fen for x in reported}) == [1_124, 1_125]
    assert sum(x.advance_fen for x in reported) == 22_492
    assert [x.advance_fen for x in reported[:12]] == [1_125] * 12
    assert all(x.price_fen == 14_995 for x in reported)
    assert world.acct(AccountKind.ADVANCE, world.advance) == 0
    assert world.acct(AccountKind.PENDING, world.advance) == 299_900 - 22_492
    assert world.owed(contract_id) == 0


def test_a_retried_batch_answers_as_before_even_after_a_freeze(world: World) -> None:
    contract_id = world.paid_contract()
    report = LessonReport(contract_id, "RETRY-1", world.now(), "teacher-1")
    [first] = world.do(lessons.report_lessons, institution_id=world.school, reports=[report])
    world.freeze(world.school)
    [again] = world.do(lessons.report_lessons, institution_id=world.school, reports=[report])
    assert again.id == first.id


@pytest.mark.parametrize(
    "report",
    [
        LessonReport("ctr_x", "L 1", datetime(2026, 9, 1, tzinfo=UTC), "t"),
        LessonReport("ctr_x", "L1", datetime(2026, 9, 1), "t"),  # naive
        LessonReport("ctr_x", "L1", datetime(2026, 9, 1, tzinfo=UTC), None),  # type: ignore[arg-type]
        LessonReport(None, "L1", datetime(2026, 9, 1, tzinfo=UTC), "t"),  # type: ignore[arg-type]
    ],
)
def test_malformed_lesson_reports_are_invalid_requests(world: World, report: LessonReport) -> None:
    with pytest.raises(InvalidRequest):
        world.do(lessons.report_lessons, institution_id=world.school, reports=[report])


def test_a_dispute_needs_a_reason(world: World) -> None:
    [lesson] = world.report(world.paid_contract())
    for reason in (None, "  ", "x" * 501):
        with pytest.raises(InvalidRequest):
            world.do(
                lessons.dispute_lesson, parent_id=world.parent, lesson_id=lesson.id, reason=reason
            )

"""Regulators: freeze and unfreeze, wind-down, transfer to a successor operator."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from ledger.accounts import AccountKind
from ledger.entities import (
    Contract,
    ContractStatus,
    Institution,
    InstitutionStatus,
    RefundKind,
    RefundStatus,
)
from ledger.errors import InstitutionNotActive, InvalidState, NotFound, TransferWindowClosed
from ledger.escrow import lessons as lessons_ops
from ledger.escrow import refunds, supervision
from ledger.models import LogEntry
from tests.escrow.world import LESSON, World


def test_freezing_stops_new_business_and_unfreezing_restores_it(world: World) -> None:
    contract_id = world.paid_contract()
    world.freeze(world.school)
    assert world.get(Institution, world.school).status is InstitutionStatus.FROZEN
    with pytest.raises(InstitutionNotActive):
        world.report(contract_id)
    with pytest.raises(InvalidState):
        world.freeze(world.school)
    world.do(
        supervision.unfreeze,
        regulator_id=world.regulator,
        institution_id=world.school,
        reason="inspection passed",
    )
    world.report(contract_id)


def test_only_the_supervising_regulator_can_freeze(world: World) -> None:
    with pytest.raises(NotFound):
        world.do(
            supervision.freeze,
            regulator_id=world.district_regulator,
            institution_id=world.academy,
            reason="x",
        )


def test_a_wind_down_refunds_every_undelivered_lesson_each_in_its_own_entry(
    world: World,
) -> None:
    delivered = world.paid_contract(lessons=10, unit=LESSON)
    [lesson] = world.report(delivered)
    requested = world.paid_contract(lessons=5, unit=10_000, subject="music")
    open_request = world.request_refund(requested, 2)
    unpaid = world.contract(lessons=3, unit=5_000, subject="chess")
    other_family = world.paid_contract(
        lessons=4, unit=LESSON, parent=world.other_parent, student=world.other_student
    )
    outcome = world.do(
        supervision.wind_down,
        regulator_id=world.regulator,
        institution_id=world.school,
        reason="operator absconded",
    )
    assert world.get(Institution, world.school).status is InstitutionStatus.WINDING_DOWN
    assert [c.id for c in outcome.cancelled] == [unpaid]
    by_contract = {
        contract: sorted(
            (r.kind, r.amount_fen) for r in outcome.refunds if r.contract_id == contract
        )
        for contract in (delivered, requested, other_family)
    }
    assert by_contract == {
        delivered: [(RefundKind.WIND_DOWN, 9 * LESSON)],
        # the parent's open request for 2 lessons is approved, the other 3 are refunded too
        requested: [(RefundKind.REQUESTED, 20_000), (RefundKind.WIND_DOWN, 30_000)],
        other_family: [(RefundKind.WIND_DOWN, 4 * LESSON)],
    }
    assert open_request.id in {r.id for r in outcome.refunds}
    assert {r.status for r in outcome.refunds} == {RefundStatus.APPROVED}
    assert outcome.refunded_fen == 9 * LESSON + 50_000 + 4 * LESSON
    assert world.acct(AccountKind.REFUND_PAYABLE) == outcome.refunded_fen
    assert world.acct(AccountKind.PENDING) == LESSON  # the delivered lesson follows its course
    for contract_id in (delivered, requested, other_family):
        assert world.owed(contract_id) == 0
    with world.read() as session:
        types = list(session.scalars(select(LogEntry.type).order_by(LogEntry.seq)))
    assert types.count("refund.approved") == len(outcome.refunds) == 4
    assert "institution.winding_down" in types
    with pytest.raises(InstitutionNotActive):
        world.contract(lessons=1)
    world.confirm(lesson.id)


def test_a_transfer_moves_contracts_with_their_escrow_value(world: World) -> None:
    successor = world.institution("national", district="haishu")
    half = world.paid_contract(lessons=10, unit=LESSON)
    world.report(half, 5)
    untouched = world.paid_contract(lessons=4, unit=10_000, subject="music")
    outcome = world.do(
        supervision.approve_transfer,
        regulator_id=world.regulator,
        from_institution_id=world.school,
        to_institution_id=successor,
        reason="new owner approved",
    )
    assert outcome.value_fen == 5 * LESSON + 40_000
    assert world.get(Contract, half).institution_id == successor
    assert world.get(Contract, half).transferred_from == world.school
    assert world.escrow(successor) == 115_000
    assert world.escrow() == 5 * LESSON  # the 5 delivered lessons stay with the old operator
    assert world.acct(AccountKind.PENDING) == 5 * LESSON
    old = world.get(Institution, world.school)
    assert (old.status, old.successor_id) == (InstitutionStatus.CLOSED, successor)
    world.report(half)  # the successor now delivers the remaining lessons
    assert world.acct(AccountKind.PENDING, successor) == LESSON
    with world.read() as session:
        assert session.get(Contract, untouched).status is ContractStatus.ACTIVE


def test_a_parent_may_decline_a_transfer_within_the_window_and_be_refunded(world: World) -> None:
    successor = world.institution("national", district="haishu")
    contract_id = world.paid_contract(lessons=10, unit=LESSON)
    world.report(contract_id, 3)
    outcome = world.do(
        supervision.approve_transfer,
        regulator_id=world.regulator,
        from_institution_id=world.school,
        to_institution_id=successor,
        reason="merger",
    )
    decline_by = outcome.transfer.decline_by
    world.set_clock(decline_by - timedelta(seconds=1))
    refund = world.do(supervision.decline_transfer, parent_id=world.parent, contract_id=contract_id)
    assert (refund.kind, refund.amount_fen, refund.institution_id) == (
        RefundKind.TRANSFER_DECLINED,
        7 * LESSON,
        successor,
    )
    assert world.acct(AccountKind.REFUND_PAYABLE, successor) == 7 * LESSON
    with pytest.raises(TransferWindowClosed, match="already declined"):
        world.do(supervision.decline_transfer, parent_id=world.parent, contract_id=contract_id)


def test_declining_after_the_window_is_refused(world: World) -> None:
    successor = world.institution("national", district="haishu")
    contract_id = world.paid_contract()
    outcome = world.do(
        supervision.approve_transfer,
        regulator_id=world.regulator,
        from_institution_id=world.school,
        to_institution_id=successor,
        reason="merger",
    )
    world.set_clock(outcome.transfer.decline_by)
    with pytest.raises(TransferWindowClosed):
        world.do(supervision.decline_transfer, parent_id=world.parent, contract_id=contract_id)


def test_a_transfer_needs_an_active_successor(world: World) -> None:
    with pytest.raises(InvalidState):
        world.do(
            supervision.approve_transfer,
            regulator_id=world.regulator,
            from_institution_id=world.school,
            to_institution_id=world.school,
            reason="x",
        )
    world.freeze(world.academy)
    with pytest.raises(InvalidState):
        world.do(
            supervision.approve_transfer,
            regulator_id=world.regulator,
            from_institution_id=world.school,
            to_institution_id=world.academy,
            reason="x",
        )


def test_verify_reports_an_escrow_invariant_broken_behind_the_services_back(world: World) -> None:
    from sqlalchemy import text

    from ledger.verify import ProblemKind, verify_database

    contract_id = world.paid_contract(lessons=10, unit=LESSON)
    world.report(contract_id, 2)
    with world.ledger.engine.begin() as conn:
        conn.execute(
            text("UPDATE contracts SET lessons_delivered = 1 WHERE id = :c"), {"c": contract_id}
        )
    report = verify_database(world.ledger.engine)
    assert {p.kind for p in report.problems} == {ProblemKind.INVARIANT}
    details = " | ".join(p.detail for p in report.problems)
    assert "2 delivered or pending + 0 refunded + 9 remaining != 10 lessons" in details
    assert "lessons_delivered disagrees" in details
    with world.ledger.engine.begin() as conn:  # put it back for the fixture's final check
        conn.execute(
            text("UPDATE contracts SET lessons_delivered = 2 WHERE id = :c"), {"c": contract_id}
        )


def test_a_lesson_voided_after_a_transfer_follows_its_contract_to_the_successor(
    world: World,
) -> None:
    successor = world.institution("national", district="haishu")
    contract_id = world.paid_contract(lessons=10, unit=LESSON)
    [lesson] = world.report(contract_id)
    world.do(
        lessons_ops.dispute_lesson, parent_id=world.parent, lesson_id=lesson.id, reason="absent"
    )
    world.do(
        supervision.approve_transfer,
        regulator_id=world.regulator,
        from_institution_id=world.school,
        to_institution_id=successor,
        reason="merger",
    )
    assert world.escrow(successor) == 9 * LESSON
    world.do(lessons_ops.withdraw_lesson, institution_id=world.school, lesson_id=lesson.id)
    assert world.owed(contract_id) == 10 * LESSON
    assert world.escrow(successor) == 10 * LESSON  # the lesson's money moved with the contract
    assert world.escrow() == 0
    assert world.acct(AccountKind.PENDING) == 0
    refund = world.do(supervision.decline_transfer, parent_id=world.parent, contract_id=contract_id)
    assert refund.amount_fen == 10 * LESSON
    world.do(refunds.pay_refund, bank_id=world.bank, refund_id=refund.id, bank_reference="RF-T")
    assert world.escrow(successor) == 0


def test_an_advance_share_returned_by_a_void_after_a_transfer_is_owed_by_the_old_operator(
    world: World,
) -> None:
    successor = world.institution("national", district="haishu")
    contract_id = world.paid_contract(world.advance, lessons=20, unit=LESSON)  # advance 22,500
    [lesson] = world.report(contract_id)
    assert lesson.advance_fen == 1_125
    world.do(lessons_ops.dispute_lesson, parent_id=world.parent, lesson_id=lesson.id, reason="x")
    world.do(
        supervision.approve_transfer,
        regulator_id=world.regulator,
        from_institution_id=world.advance,
        to_institution_id=successor,
        reason="merger",
    )
    world.do(
        lessons_ops.resolve_dispute,
        regulator_id=world.regulator,
        lesson_id=lesson.id,
        for_institution=False,
        note="no attendance record",
    )
    # the old operator's releasable money (its advance) repays every advance share it now owes
    assert world.acct(AccountKind.ADVANCE_DUE, world.advance) == 0
    assert world.acct(AccountKind.RELEASABLE, world.advance) == 22_500 - 21_375 - 1_125
    assert world.owed(contract_id) == 20 * LESSON
    world.report(contract_id)  # the successor delivers it, with no advance of its own
    assert world.acct(AccountKind.ADVANCE, successor) == 0


def test_a_lesson_voided_during_a_wind_down_is_refunded_at_once(world: World) -> None:
    contract_id = world.paid_contract(lessons=10, unit=LESSON)
    [lesson] = world.report(contract_id)
    world.do(lessons_ops.dispute_lesson, parent_id=world.parent, lesson_id=lesson.id, reason="x")
    world.do(
        supervision.wind_down,
        regulator_id=world.regulator,
        institution_id=world.school,
        reason="closed",
    )
    world.do(
        lessons_ops.resolve_dispute,
        regulator_id=world.regulator,
        lesson_id=lesson.id,
        for_institution=False,
        note="not delivered",
    )
    assert world.owed(contract_id) == 0
    assert world.acct(AccountKind.REFUND_PAYABLE) == 10 * LESSON


def test_a_parent_answers_the_latest_of_two_transfers(world: World) -> None:
    second = world.institution("national", district="haishu")
    third = world.institution("national", district="haishu")
    contract_id = world.paid_contract(lessons=10, unit=LESSON)
    world.do(
        supervision.approve_transfer,
        regulator_id=world.regulator,
        from_institution_id=world.school,
        to_institution_id=second,
        reason="first",
    )
    world.advance_clock(days=20)  # the first window has closed
    world.do(
        supervision.approve_transfer,
        regulator_id=world.regulator,
        from_institution_id=second,
        to_institution_id=third,
        reason="second",
    )
    refund = world.do(supervision.decline_transfer, parent_id=world.parent, contract_id=contract_id)
    assert refund.institution_id == third


def test_a_district_bureau_cannot_hand_contracts_to_another_district(world: World) -> None:
    with pytest.raises(NotFound):
        world.do(
            supervision.approve_transfer,
            regulator_id=world.district_regulator,
            from_institution_id=world.school,
            to_institution_id=world.academy,
            reason="x",
        )

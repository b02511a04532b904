"""Refunds: before and after the start, answers, silence, regulator orders, advances, payment."""

from datetime import date

import pytest

from ledger.accounts import AccountKind
from ledger.entities import Contract, ContractStatus, Refund, RefundKind, RefundStatus
from ledger.errors import ContractNotActive, InvalidRequest, NotFound, RefundNotOpen
from ledger.escrow import contracts, refunds
from tests.escrow.world import LESSON, World, shanghai


def test_before_the_course_starts_a_refund_returns_everything(world: World) -> None:
    contract_id = world.paid_contract(lessons=20, unit=LESSON, start=date(2026, 9, 15))
    refund = world.request_refund(contract_id, 5)  # asked for 5, before the start it is all 20
    assert refund.lessons == 20
    approved = world.approve(refund)
    assert approved.amount_fen == 300_000
    assert world.owed(contract_id) == 0
    assert world.acct(AccountKind.REFUND_PAYABLE) == 300_000
    assert world.get(Contract, contract_id).status is ContractStatus.REFUNDED
    world.do(refunds.pay_refund, bank_id=world.bank, refund_id=refund.id, bank_reference="RF-1")
    assert world.escrow() == 0
    assert world.acct(AccountKind.REFUND_PAYABLE) == 0
    assert world.get(Refund, refund.id).status is RefundStatus.PAID


def test_after_the_start_undelivered_lessons_are_refunded_pro_rata(world: World) -> None:
    contract_id = world.paid_contract(lessons=20, unit=LESSON)
    world.report(contract_id, 5)
    refund = world.request_refund(contract_id, 5)
    assert world.get(Contract, contract_id).lessons_available == 10
    approved = world.approve(refund)
    assert approved.amount_fen == 75_000
    assert world.owed(contract_id) == 150_000  # 10 lessons left
    assert world.acct(AccountKind.PENDING) == 75_000
    assert world.escrow() == 300_000
    # Beijing-style deadline in the national profile: 15 calendar days after approval
    assert approved.pay_by == shanghai(2026, 9, 17, 0, 0)


def test_asking_back_all_remaining_lessons_completes_a_partly_delivered_contract(
    world: World,
) -> None:
    contract_id = world.paid_contract(lessons=4, unit=LESSON)
    world.report(contract_id, 1)
    world.approve(world.request_refund(contract_id))
    contract = world.get(Contract, contract_id)
    assert (contract.status, contract.lessons_refunded) == (ContractStatus.COMPLETED, 3)


def test_a_rejected_request_frees_its_lessons(world: World) -> None:
    contract_id = world.paid_contract(lessons=10, unit=LESSON)
    world.report(contract_id)
    refund = world.request_refund(contract_id, 4)
    with pytest.raises(InvalidRequest, match="reason"):
        world.do(
            refunds.reject_refund, institution_id=world.school, refund_id=refund.id, reason=" "
        )
    rejected = world.do(
        refunds.reject_refund,
        institution_id=world.school,
        refund_id=refund.id,
        reason="the course is half-price already",
    )
    assert rejected.status is RefundStatus.REJECTED
    assert world.get(Contract, contract_id).lessons_available == 9
    with pytest.raises(RefundNotOpen):
        world.approve(refund)


def test_silence_past_five_working_days_approves_a_request(world: World) -> None:
    contract_id = world.paid_contract(lessons=10, unit=LESSON)
    world.report(contract_id)
    world.set_clock(shanghai(2026, 9, 29, 10))
    refund = world.request_refund(contract_id, 2)
    # Sep 30, Oct 8, 9, 10 (make-up Saturday), 12: the answer window ends Oct 13 00:00 Shanghai
    assert refund.answer_by == shanghai(2026, 10, 13, 0, 0)
    world.set_clock(shanghai(2026, 10, 12, 23, 59))
    assert world.do(refunds.auto_approve_refunds) == 0
    world.set_clock(shanghai(2026, 10, 13, 0, 0))
    assert world.do(refunds.auto_approve_refunds) == 1
    assert world.get(Refund, refund.id).status is RefundStatus.APPROVED
    assert world.acct(AccountKind.REFUND_PAYABLE) == 30_000
    assert world.do(refunds.auto_approve_refunds) == 0


def test_a_regulator_can_force_a_refund(world: World) -> None:
    contract_id = world.paid_contract(lessons=10, unit=LESSON)
    world.report(contract_id, 2)
    forced = world.do(
        refunds.force_refund,
        regulator_id=world.regulator,
        contract_id=contract_id,
        lessons=None,
        reason="complaint upheld",
    )
    assert (forced.kind, forced.status, forced.amount_fen) == (
        RefundKind.FORCED,
        RefundStatus.APPROVED,
        120_000,
    )
    academy = world.paid_contract(world.academy, lessons=5, unit=4_000, class_size=20)
    with pytest.raises(NotFound):  # Haishu's bureau cannot reach a Yinzhou institution
        world.do(
            refunds.force_refund,
            regulator_id=world.district_regulator,
            contract_id=academy,
            lessons=None,
            reason="x",
        )


def test_only_paid_open_contracts_are_refunded(world: World) -> None:
    unpaid = world.contract()
    with pytest.raises(ContractNotActive):
        world.request_refund(unpaid)
    with pytest.raises(InvalidRequest, match="21 lessons asked back; 20 can be refunded"):
        world.request_refund(world.paid_contract(subject="music", lessons=20, unit=100), 21)


def test_a_refund_is_paid_once_and_only_by_the_institutions_bank(world: World) -> None:
    contract_id = world.paid_contract()
    refund = world.approve(world.request_refund(contract_id))
    with pytest.raises(NotFound):
        world.do(
            refunds.pay_refund, bank_id=world.other_bank, refund_id=refund.id, bank_reference="R"
        )
    world.do(refunds.pay_refund, bank_id=world.bank, refund_id=refund.id, bank_reference="R")
    with pytest.raises(RefundNotOpen):
        world.do(refunds.pay_refund, bank_id=world.bank, refund_id=refund.id, bank_reference="R2")


def test_a_refund_recovers_the_advance_from_releasable_money(world: World) -> None:
    contract_id = world.paid_contract(world.advance, lessons=20, unit=14_995)  # advance 22,492
    world.report(contract_id, 7)  # 7 advance shares of 1,125 repaid: 7,875
    refund = world.approve(world.request_refund(contract_id, 13))
    assert refund.amount_fen == 13 * 14_995
    assert refund.advance_due_fen == 22_492 - 7_875  # 14,617 for the 13 undelivered lessons
    assert refund.shortfall_fen == 0
    assert world.acct(AccountKind.ADVANCE, world.advance) == 0
    assert world.acct(AccountKind.ADVANCE_DUE, world.advance) == 0
    assert world.acct(AccountKind.RELEASABLE, world.advance) == 22_492 - 14_617
    assert world.get(Contract, contract_id).advance_remaining_fen == 0


def test_an_advance_already_paid_out_is_recovered_from_the_deposit_then_recorded_as_shortfall(
    world: World,
) -> None:
    contract_id = world.paid_contract(world.advance, lessons=20, unit=15_000)  # advance 22,500
    assert world.pay_out_releasable(world.advance) == 22_500  # the institution got its advance
    world.do(
        contracts.lodge_risk_deposit,
        bank_id=world.bank,
        institution_id=world.advance,
        amount_fen=10_000,
        bank_reference="DEP-1",
    )
    refund = world.approve(world.request_refund(contract_id))  # all 20 lessons back
    assert refund.amount_fen == 300_000
    assert refund.advance_due_fen == 22_500
    assert refund.shortfall_fen == 12_500
    assert world.acct(AccountKind.RISK_DEPOSIT, world.advance) == 0
    assert world.acct(AccountKind.ADVANCE_DUE, world.advance) == 12_500  # owed, and visible
    # Escrow holds what was paid in less the advance paid out: the refund cannot be paid in full.
    assert world.escrow(world.advance) == 300_000 - 22_500 + 10_000
    assert world.acct(AccountKind.REFUND_PAYABLE, world.advance) == 300_000


def test_uneven_pro_rata_refunds_add_up_exactly(world: World) -> None:
    contract_id = world.paid_contract(world.advance, lessons=7, unit=14_999)  # advance 7,874
    world.report(contract_id, 2)
    first = world.approve(world.request_refund(contract_id, 2))
    second = world.approve(world.request_refund(contract_id, 3))
    contract = world.get(Contract, contract_id)
    assert contract.lessons_remaining == 0
    assert (first.advance_due_fen or 0) + (second.advance_due_fen or 0) + 2 * 1_125 == 7_874


def test_a_request_made_before_the_start_keeps_the_before_start_payout_period(world: World) -> None:
    contract_id = world.paid_contract(world.beijing, lessons=10, unit=5_000, start=date(2026, 9, 3))
    refund = world.request_refund(contract_id)
    assert refund.before_start
    world.set_clock(shanghai(2026, 9, 4, 10))  # answered after the course started
    approved = world.approve(refund)
    assert approved.pay_by == shanghai(2026, 9, 10, 0, 0)  # Beijing: 5 days, not 15


def test_a_rejection_keeps_the_parents_reason_and_records_the_answer(world: World) -> None:
    contract_id = world.paid_contract()
    world.report(contract_id)
    refund = world.do(
        refunds.request_refund,
        parent_id=world.parent,
        contract_id=contract_id,
        lessons=2,
        reason="moving away",
    )
    world.do(refunds.reject_refund, institution_id=world.school, refund_id=refund.id, reason="no")
    rejected = world.get(Refund, refund.id)
    assert (rejected.reason, rejected.answer) == ("moving away", "no")


@pytest.mark.parametrize("count", ["3", 2.0, 0, -1, True])
def test_a_malformed_number_of_lessons_is_an_invalid_request(world: World, count: object) -> None:
    contract_id = world.paid_contract()
    world.report(contract_id)
    with pytest.raises(InvalidRequest):
        world.request_refund(contract_id, count)  # type: ignore[arg-type]

"""Payouts: the bank's answers, retries after failure, and the export files."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

import pytest

from ledger.accounts import AccountKind
from ledger.entities import Payout, PayoutStatus
from ledger.errors import InvalidRequest, InvalidState, NotFound
from settlement import payouts
from tests.escrow.world import LESSON, World, shanghai


def _settled(world: World, lessons: int = 2) -> Payout:
    contract = world.paid_contract(lessons=10, unit=LESSON)
    for lesson in world.report(contract, lessons):
        world.confirm(lesson.id)
    world.set_clock(shanghai(2026, 9, 2, 2))
    [payout] = world.settle(institutions=[world.school]).payouts
    return payout


def test_an_executed_payout_takes_the_money_out_of_escrow(world: World) -> None:
    payout = _settled(world)
    world.do(payouts.execute_payout, bank_id=world.bank, payout_id=payout.id, bank_reference="B-1")
    assert world.get(Payout, payout.id).status is PayoutStatus.EXECUTED
    assert world.acct(AccountKind.PAYABLE) == 0
    assert world.escrow() == 150_000 - 2 * LESSON


def test_a_failed_payout_stays_payable_and_the_next_run_instructs_it_again(world: World) -> None:
    payout = _settled(world)
    world.do(payouts.fail_payout, bank_id=world.bank, payout_id=payout.id, reason="wrong name")
    assert world.acct(AccountKind.PAYABLE) == 2 * LESSON
    world.set_clock(shanghai(2026, 9, 3, 2))
    [retry] = world.settle(institutions=[world.school]).payouts
    assert (retry.retry_of, retry.amount_fen, retry.business_date) == (
        payout.id,
        2 * LESSON,
        date(2026, 9, 2),
    )
    world.set_clock(shanghai(2026, 9, 4, 2))
    assert world.settle(institutions=[world.school]).payouts == []  # retried once, not again
    world.do(payouts.execute_payout, bank_id=world.bank, payout_id=retry.id, bank_reference="B-2")
    assert world.acct(AccountKind.PAYABLE) == 0


def test_a_frozen_institution_gets_no_retry_until_it_is_unfrozen(world: World) -> None:
    payout = _settled(world)
    world.do(payouts.fail_payout, bank_id=world.bank, payout_id=payout.id, reason="closed")
    world.freeze(world.school)
    world.set_clock(shanghai(2026, 9, 3, 2))
    assert world.settle(institutions=[world.school]).payouts == []


def test_a_payout_is_answered_once_and_only_by_its_bank(world: World) -> None:
    payout = _settled(world)
    with pytest.raises(NotFound):
        world.do(
            payouts.execute_payout,
            bank_id=world.other_bank,
            payout_id=payout.id,
            bank_reference="X",
        )
    with pytest.raises(InvalidRequest):
        world.do(payouts.fail_payout, bank_id=world.bank, payout_id=payout.id, reason="")
    world.do(payouts.execute_payout, bank_id=world.bank, payout_id=payout.id, bank_reference="B-1")
    with pytest.raises(InvalidState):
        world.do(payouts.fail_payout, bank_id=world.bank, payout_id=payout.id, reason="late")
    with pytest.raises(InvalidState):
        world.do(
            payouts.execute_payout, bank_id=world.bank, payout_id=payout.id, bank_reference="B-2"
        )


def test_the_csv_export_lists_each_instruction_with_its_accounts_and_amount(world: World) -> None:
    payout = _settled(world, lessons=3)
    with world.read() as session:
        text = payouts.export_csv(session, world.bank, date(2026, 9, 1))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == ",".join(payouts.EXPORT_COLUMNS)
    assert rows == [
        {
            "end_to_end_id": payout.id,
            "business_date": "2026-09-01",
            "bank_id": world.bank,
            "debit_account": "ESC-national",
            "institution_id": world.school,
            "institution_name": "national institution",
            "credit_account": "SET-national",
            "amount_fen": "45000",
            "amount": "450.00",
            "currency": "CNY",
            "retry_of": "",
            "batch_id": payout.batch_id,
            "status": "instructed",
        }
    ]


def test_the_json_export_carries_a_count_and_a_control_total(world: World) -> None:
    _settled(world, lessons=3)
    with world.read() as session:
        document = json.loads(payouts.export_json(session, world.bank, date(2026, 9, 1)))
        other = json.loads(payouts.export_json(session, world.other_bank, date(2026, 9, 1)))
    assert (document["count"], document["total_fen"]) == (1, 45_000)
    assert document["payouts"][0]["amount"] == "450.00"
    assert (other["count"], other["total_fen"], other["payouts"]) == (0, 0, [])

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
    world.do(
        payouts.fail_payout,
        bank_id=world.bank,
        payout_id=payout.id,
        reason="wrong name",
        bank_reference="RTN-1",
    )
    assert world.get(Payout, payout.id).bank_reference == "RTN-1"
    assert world.acct(AccountKind.PAYABLE) == 2 * LESSON
    world.set_clock(shanghai(2026, 9, 3, 2))
    [retry] = world.settle(institutions=[world.school]).payouts
    assert (retry.retry_of, retry.amount_fen, retry.instructed_on) == (
        payout.id,
        2 * LESSON,
        date(2026, 9, 3),  # the retrying run's date: today's file
    )
    world.set_clock(shanghai(2026, 9, 4, 2))
    assert world.settle(institutions=[world.school]).payouts == []  # retried once, not again
    world.do(payouts.execute_payout, bank_id=world.bank, payout_id=retry.id, bank_reference="B-2")
    assert world.acct(AccountKind.PAYABLE) == 0


def test_a_frozen_institution_gets_no_retry_until_it_is_unfrozen(world: World) -> None:
    payout = _settled(world)
    world.do(
        payouts.fail_payout,
        bank_id=world.bank,
        payout_id=payout.id,
        reason="closed",
        bank_reference="RTN-1",
    )
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
        world.do(
            payouts.fail_payout,
            bank_id=world.bank,
            payout_id=payout.id,
            reason="",
            bank_reference="RTN-1",
        )
    world.do(payouts.execute_payout, bank_id=world.bank, payout_id=payout.id, bank_reference="B-1")
    with pytest.raises(InvalidState):
        world.do(
            payouts.fail_payout,
            bank_id=world.bank,
            payout_id=payout.id,
            reason="late",
            bank_reference="RTN-2",
        )
    with pytest.raises(InvalidState):
        world.do(
            payouts.execute_payout, bank_id=world.bank, payout_id=payout.id, bank_reference="B-2"
        )


def test_the_csv_export_lists_each_instruction_with_its_accounts_and_amount(world: World) -> None:
    payout = _settled(world, lessons=3)
    with world.read() as session:
        text = payouts.export_csv(session, world.bank, on=date(2026, 9, 2))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == ",".join(payouts.EXPORT_COLUMNS)
    assert rows == [
        {
            "end_to_end_id": payout.id,
            "instructed_on": "2026-09-02",
            "settles": "2026-09-01",
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
        document = json.loads(payouts.export_json(session, world.bank, on=date(2026, 9, 2)))
        other = json.loads(payouts.export_json(session, world.other_bank, on=date(2026, 9, 2)))
    assert (document["count"], document["total_fen"]) == (1, 45_000)
    assert document["payouts"][0]["amount"] == "450.00"
    assert (other["count"], other["total_fen"], other["payouts"]) == (0, 0, [])


def test_a_file_once_read_never_grows_and_open_instructions_are_listed_apart(world: World) -> None:
    first = _settled(world)
    with world.read() as session:
        read_on_the_day = payouts.export_csv(session, world.bank, on=date(2026, 9, 2))
    world.do(
        payouts.fail_payout,
        bank_id=world.bank,
        payout_id=first.id,
        reason="closed",
        bank_reference="RTN-1",
    )
    world.set_clock(shanghai(2026, 9, 5, 2))  # a catch-up run retries it three days later
    [retry] = world.settle(institutions=[world.school]).payouts
    with world.read() as session:
        assert payouts.export_csv(session, world.bank, on=date(2026, 9, 2)).splitlines()[1:] == [
            line.replace("instructed", "failed") for line in read_on_the_day.splitlines()[1:]
        ]
        assert [p.id for p in payouts.instructions(session, world.bank, on=date(2026, 9, 5))] == [
            retry.id
        ]
        assert [p.id for p in payouts.instructions(session, world.bank, open_only=True)] == [
            retry.id
        ]


def test_a_retry_goes_to_the_settlement_account_as_it_is_now(world: World) -> None:
    from ledger.escrow import parties

    payout = _settled(world)
    world.do(
        payouts.fail_payout,
        bank_id=world.bank,
        payout_id=payout.id,
        reason="account closed",
        bank_reference="RTN-1",
    )
    world.do(
        parties.change_settlement_account,
        institution_id=world.school,
        account="SET-NEW",
        actor="admin:root",
    )
    world.set_clock(shanghai(2026, 9, 3, 2))
    [retry] = world.settle(institutions=[world.school]).payouts
    assert (retry.settlement_account, world.get(Payout, payout.id).settlement_account) == (
        "SET-NEW",
        "SET-national",
    )

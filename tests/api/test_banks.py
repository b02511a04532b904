"""The custody bank's API: receipts, risk deposits, payouts, refunds and escrow balances."""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import date
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from api.writes import receipt_message
from ledger.accounts import AccountKind
from ledger.entities import Contract, ContractStatus, Payout, Refund, RefundStatus
from ledger.errors import InvalidRequest, NotFound, RefundNotOpen
from ledger.escrow import refunds
from ledger.models import LogEntry
from settlement import payouts
from tests.api.conftest import Api
from tests.escrow.world import LESSON, World, shanghai

PREPAYMENT = 20 * LESSON  # world.contract's default: 20 lessons at ¥150
SMALL = 4 * LESSON
"""A contract small enough that one student may hold several (the balance limit is ¥5,000)."""


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"].endswith(f"/problems/{code}"), body
    return body


def _verify(api: Api, receipt: dict[str, Any]) -> None:
    """The receipt is the log's signature over the entry it names."""
    key = api.world.ledger.key
    with api.world.read() as session:
        entry = session.get(LogEntry, receipt["seq"])
        assert entry is not None
        assert receipt["hash"] == entry.hash.hex()
    Ed25519PublicKey.from_public_bytes(key.public_bytes).verify(
        base64.b64decode(receipt["signature"]),
        receipt_message(receipt["origin"], receipt["seq"], receipt["hash"]),
    )


def _receipt(
    contract_id: str, reference: str, amount: int = PREPAYMENT, payer: str = "parent"
) -> dict[str, Any]:
    return {
        "contract_id": contract_id,
        "amount_fen": amount,
        "bank_reference": reference,
        "payer": payer,
    }


def _entries(world: World, type_: str) -> list[dict[str, Any]]:
    with world.read() as session:
        rows = session.scalars(
            select(LogEntry).where(LogEntry.type == type_).order_by(LogEntry.seq)
        )
        return [json.loads(row.body) for row in rows]


# --- receipts -----------------------------------------------------------------------------------


def test_a_receipt_books_the_prepayment_and_answers_a_signed_receipt(api: Api) -> None:
    world = api.world
    contract_id = world.contract()
    response = api.post("bank", "/v1/bank/receipts", _receipt(contract_id, "NB-0001"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert {k: body[k] for k in ("contract_id", "institution_id", "amount_fen", "status")} == {
        "contract_id": contract_id,
        "institution_id": world.school,
        "amount_fen": PREPAYMENT,
        "status": "booked",
    }
    assert body["advance_fen"] == 0
    assert body["receipt"]["seq"] == body["seq"] == world.get(Contract, contract_id).paid_seq
    _verify(api, body["receipt"])
    assert world.get(Contract, contract_id).status is ContractStatus.ACTIVE
    assert world.escrow() == PREPAYMENT
    assert world.owed(contract_id) == PREPAYMENT


def test_a_receipt_retried_with_its_key_is_booked_once(api: Api) -> None:
    world = api.world
    contract_id = world.contract()
    first = api.post("bank", "/v1/bank/receipts", _receipt(contract_id, "NB-1"), key="k-1")
    again = api.post("bank", "/v1/bank/receipts", _receipt(contract_id, "NB-1"), key="k-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert world.escrow() == PREPAYMENT


def test_a_receipt_of_the_wrong_amount_is_refused_and_books_nothing(api: Api) -> None:
    world = api.world
    contract_id = world.contract()
    response = api.post(
        "bank", "/v1/bank/receipts", _receipt(contract_id, "NB-2", amount=PREPAYMENT - 1)
    )
    problem = _problem(response, 422, "wrong-amount")
    assert (problem["expected"], problem["value"]) == (PREPAYMENT, PREPAYMENT - 1)
    assert world.get(Contract, contract_id).status is ContractStatus.AWAITING_PAYMENT
    assert world.escrow() == 0


def test_a_bank_reference_is_used_once(api: Api) -> None:
    world = api.world
    first, second = world.contract(lessons=4), world.contract(subject="music", lessons=4)
    assert api.post("bank", "/v1/bank/receipts", _receipt(first, "NB-3", SMALL)).status_code == 201
    response = api.post("bank", "/v1/bank/receipts", _receipt(second, "NB-3", SMALL))
    _problem(response, 409, "duplicate-bank-reference")
    assert world.get(Contract, second).status is ContractStatus.AWAITING_PAYMENT
    # receipts and risk deposits share one set of references
    deposit = {"institution_id": world.school, "amount_fen": 10_000, "bank_reference": "NB-3"}
    _problem(api.post("bank", "/v1/bank/risk-deposits", deposit), 409, "duplicate-bank-reference")


def test_a_lenders_payment_is_recorded_for_return_not_booked(api: Api) -> None:
    world = api.world
    contract_id = world.contract()
    response = api.post("bank", "/v1/bank/receipts", _receipt(contract_id, "NB-4", payer="lender"))
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "returned"
    _verify(api, response.json()["receipt"])
    assert world.escrow() == 0
    assert world.get(Contract, contract_id).status is ContractStatus.AWAITING_PAYMENT
    [returned] = _entries(world, "receipt.returned")
    assert returned["payload"]["rule"] == "rules/no-loan-funded-tuition"


def test_a_contract_at_another_banks_institution_answers_404_like_a_missing_one(
    api: Api,
) -> None:
    world = api.world
    contract_id = world.contract()
    foreign = world.contract(world.institution("national", bank=world.other_bank))
    elsewhere = api.post("other_bank", "/v1/bank/receipts", _receipt(contract_id, "OB-1"))
    reverse = api.post("bank", "/v1/bank/receipts", _receipt(foreign, "NB-5"))
    missing = api.post("bank", "/v1/bank/receipts", _receipt("ctr_missing", "NB-6"))
    for response in (elsewhere, reverse, missing):
        _problem(response, 404, "not-found")
    assert world.get(Contract, contract_id).status is ContractStatus.AWAITING_PAYMENT
    assert world.get(Contract, foreign).status is ContractStatus.AWAITING_PAYMENT


def test_receipts_are_for_banks_only(api: Api) -> None:
    contract_id = api.world.contract()
    _problem(
        api.post("parent", "/v1/bank/receipts", _receipt(contract_id, "P-1")), 403, "forbidden"
    )
    _problem(api.post(None, "/v1/bank/receipts", _receipt(contract_id, "P-1")), 401, "unauthorized")


def test_a_receipt_body_is_validated_field_by_field(api: Api) -> None:
    contract_id = api.world.contract()
    bad = {**_receipt(contract_id, "bad reference!"), "amount_fen": 1.5, "extra": 1}
    problem = _problem(api.post("bank", "/v1/bank/receipts", bad), 422, "validation-error")
    fields = {e["field"] for e in problem["errors"]}
    assert {"body.bank_reference", "body.amount_fen", "body.extra"} <= fields


# --- batches ------------------------------------------------------------------------------------


def test_a_batch_books_every_receipt_each_with_its_own_signed_receipt(api: Api) -> None:
    world = api.world
    contracts = [world.contract(subject=s, lessons=4) for s in ("art", "music", "chess")]
    items = [_receipt(c, f"NB-B{i}", SMALL) for i, c in enumerate(contracts)]
    lent = world.contract(subject="dance", lessons=4)
    items.append(_receipt(lent, "NB-B9", SMALL, payer="lender"))
    response = api.post("bank", "/v1/bank/receipts/batch", {"receipts": items})
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["count"], body["booked_fen"], body["returned"]) == (4, 3 * SMALL, 1)
    assert [r["contract_id"] for r in body["receipts"]] == [i["contract_id"] for i in items]
    seqs = [r["receipt"]["seq"] for r in body["receipts"]]
    assert seqs == sorted(set(seqs))
    for booked in body["receipts"]:
        _verify(api, booked["receipt"])
    assert body["receipt"]["seq"] == seqs[-1]
    assert world.escrow() == 3 * SMALL


def test_a_batch_is_all_or_nothing_and_names_the_refused_receipt(api: Api) -> None:
    world = api.world
    first, second = world.contract(lessons=4), world.contract(subject="music", lessons=4)
    items = [_receipt(first, "NB-C1", SMALL), _receipt(second, "NB-C2", amount=1)]
    response = api.post("bank", "/v1/bank/receipts/batch", {"receipts": items})
    problem = _problem(response, 422, "wrong-amount")
    assert problem["index"] == 1
    assert problem["detail"].startswith("receipts[1] (NB-C2): ")
    assert world.get(Contract, first).status is ContractStatus.AWAITING_PAYMENT
    assert world.escrow() == 0
    # a reference repeated inside one batch is a duplicate too
    twice = [_receipt(first, "NB-C3", SMALL), _receipt(second, "NB-C3", SMALL)]
    problem = _problem(
        api.post("bank", "/v1/bank/receipts/batch", {"receipts": twice}),
        409,
        "duplicate-bank-reference",
    )
    assert problem["index"] == 1
    assert world.escrow() == 0
    # a contract of another bank's institution refuses the whole batch with 404
    foreign = world.contract(world.institution("national", bank=world.other_bank))
    mixed = [_receipt(first, "NB-C4", SMALL), _receipt(foreign, "NB-C5")]
    _problem(api.post("bank", "/v1/bank/receipts/batch", {"receipts": mixed}), 404, "not-found")
    assert world.escrow() == 0


def test_a_batch_holds_one_to_a_thousand_receipts(api: Api) -> None:
    contract_id = api.world.contract()
    too_many = [_receipt(contract_id, f"NB-{i}") for i in range(1_001)]
    for receipts in ([], too_many):
        response = api.post("bank", "/v1/bank/receipts/batch", {"receipts": receipts})
        _problem(response, 422, "validation-error")


# --- risk deposits ------------------------------------------------------------------------------


def test_a_risk_deposit_is_lodged_in_the_institutions_escrow(api: Api) -> None:
    world = api.world
    deposit = {"institution_id": world.school, "amount_fen": 1_000_000, "bank_reference": "DEP-1"}
    response = api.post("bank", "/v1/bank/risk-deposits", deposit)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["institution_id"], body["amount_fen"]) == (world.school, 1_000_000)
    assert body["receipt"]["seq"] == body["seq"]
    _verify(api, body["receipt"])
    assert world.acct(AccountKind.RISK_DEPOSIT) == 1_000_000
    assert world.escrow() == 1_000_000
    other = {**deposit, "bank_reference": "DEP-2"}
    _problem(api.post("other_bank", "/v1/bank/risk-deposits", other), 404, "not-found")
    assert world.escrow() == 1_000_000


# --- payouts ------------------------------------------------------------------------------------


def _settled(world: World, lessons: int = 2) -> Payout:
    """Two confirmed lessons at world.school, settled by the run of 2026-09-02."""
    contract = world.paid_contract(lessons=10, unit=LESSON)
    for lesson in world.report(contract, lessons):
        world.confirm(lesson.id)
    world.set_clock(shanghai(2026, 9, 2, 2))
    [payout] = world.settle(institutions=[world.school]).payouts
    return payout


def test_payouts_are_listed_per_instruction_date_and_while_open(api: Api) -> None:
    world = api.world
    payout = _settled(world)
    by_date = api.get("bank", "/v1/bank/payouts", date="2026-09-02")
    assert by_date.status_code == 200, by_date.text
    body = by_date.json()
    assert (body["bank_id"], body["instructed_on"], body["open_only"]) == (
        world.bank,
        "2026-09-02",
        False,
    )
    assert (body["count"], body["total_fen"]) == (1, 2 * LESSON)
    [row] = body["payouts"]
    assert row == {
        "end_to_end_id": payout.id,
        "instructed_on": "2026-09-02",
        "settles": "2026-09-01",
        "bank_id": world.bank,
        "debit_account": "ESC-national",
        "institution_id": world.school,
        "institution_name": "national institution",
        "credit_account": "SET-national",
        "amount_fen": 2 * LESSON,
        "amount": "300.00",
        "currency": "CNY",
        "retry_of": "",
        "batch_id": payout.batch_id,
        "status": "instructed",
    }
    assert set(row) == set(payouts.EXPORT_COLUMNS)
    assert api.get("bank", "/v1/bank/payouts", open="true").json()["payouts"] == [row]
    both = api.get("bank", "/v1/bank/payouts", date="2026-09-02", open="true").json()
    assert both["count"] == 1
    assert api.get("bank", "/v1/bank/payouts", date="2026-09-03").json()["count"] == 0
    # another bank's file is its own: empty here
    other = api.get("other_bank", "/v1/bank/payouts", date="2026-09-02").json()
    assert (other["count"], other["total_fen"], other["payouts"]) == (0, 0, [])


def test_the_payout_file_is_served_as_csv(api: Api) -> None:
    world = api.world
    payout = _settled(world, lessons=3)
    response = api.get("bank", "/v1/bank/payouts", date="2026-09-02", format="csv")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    with world.read() as session:
        assert response.text == payouts.export_csv(session, world.bank, on=date(2026, 9, 2))
    [row] = list(csv.DictReader(io.StringIO(response.text)))
    assert (row["end_to_end_id"], row["amount_fen"]) == (payout.id, str(3 * LESSON))


def test_payouts_need_a_date_or_open(api: Api) -> None:
    _problem(api.get("bank", "/v1/bank/payouts"), 422, "invalid-request")
    _problem(api.get("bank", "/v1/bank/payouts", open="false"), 422, "invalid-request")
    _problem(api.get("bank", "/v1/bank/payouts", date="2026-13-01"), 422, "validation-error")
    _problem(
        api.get("bank", "/v1/bank/payouts", open="true", format="xml"), 422, "validation-error"
    )


def test_an_executed_payout_leaves_escrow_and_is_answered_once(api: Api) -> None:
    world = api.world
    payout = _settled(world)
    escrow_before = world.escrow()
    path = f"/v1/bank/payouts/{payout.id}"
    response = api.post("bank", f"{path}/executed", {"bank_reference": "PAY-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["bank_reference"], body["amount_fen"]) == (
        "executed",
        "PAY-1",
        2 * LESSON,
    )
    assert body["receipt"]["seq"] == body["answered_seq"]
    _verify(api, body["receipt"])
    assert world.escrow() == escrow_before - 2 * LESSON
    assert world.acct(AccountKind.PAYABLE) == 0
    assert api.get("bank", "/v1/bank/payouts", open="true").json()["count"] == 0
    dated = api.get("bank", "/v1/bank/payouts", date="2026-09-02").json()
    assert dated["payouts"][0]["status"] == "executed"
    _problem(
        api.post("bank", f"{path}/executed", {"bank_reference": "PAY-2"}), 409, "invalid-state"
    )
    failed = {"bank_reference": "RTN-1", "reason": "late"}
    _problem(api.post("bank", f"{path}/failed", failed), 409, "invalid-state")
    assert world.escrow() == escrow_before - 2 * LESSON


def test_a_failed_payout_stays_payable_and_is_instructed_again(api: Api) -> None:
    world = api.world
    payout = _settled(world)
    escrow_before = world.escrow()
    path = f"/v1/bank/payouts/{payout.id}"
    response = api.post("bank", f"{path}/failed", {"bank_reference": "RTN-1", "reason": "closed"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["failure_reason"], body["bank_reference"]) == (
        "failed",
        "closed",
        "RTN-1",
    )
    _verify(api, body["receipt"])
    assert world.escrow() == escrow_before
    assert world.acct(AccountKind.PAYABLE) == 2 * LESSON
    _problem(
        api.post("bank", f"{path}/executed", {"bank_reference": "PAY-1"}), 409, "invalid-state"
    )
    again = {"bank_reference": "RTN-2", "reason": "closed"}
    _problem(api.post("bank", f"{path}/failed", again), 409, "invalid-state")
    # the next run instructs it again, under a new end-to-end id in the new day's file
    world.set_clock(shanghai(2026, 9, 3, 2))
    [retry] = world.settle(institutions=[world.school]).payouts
    listed = api.get("bank", "/v1/bank/payouts", open="true").json()
    assert [(p["end_to_end_id"], p["retry_of"], p["instructed_on"]) for p in listed["payouts"]] == [
        (retry.id, payout.id, "2026-09-03")
    ]
    paid = api.post("bank", f"/v1/bank/payouts/{retry.id}/executed", {"bank_reference": "PAY-3"})
    assert paid.status_code == 200, paid.text
    assert world.acct(AccountKind.PAYABLE) == 0


def test_another_banks_payout_answers_404_like_a_missing_one(api: Api) -> None:
    world = api.world
    payout = _settled(world)
    for who, payout_id in (("other_bank", payout.id), ("bank", "pay_missing")):
        path = f"/v1/bank/payouts/{payout_id}"
        executed = api.post(who, f"{path}/executed", {"bank_reference": "X-1"})
        failed = api.post(who, f"{path}/failed", {"bank_reference": "X-2", "reason": "no"})
        _problem(executed, 404, "not-found")
        _problem(failed, 404, "not-found")
    assert world.acct(AccountKind.PAYABLE) == 2 * LESSON
    assert world.get(Payout, payout.id).answered_seq is None


def test_a_payout_failure_needs_a_reason(api: Api) -> None:
    payout = _settled(api.world)
    response = api.post(
        "bank", f"/v1/bank/payouts/{payout.id}/failed", {"bank_reference": "RTN-1", "reason": ""}
    )
    _problem(response, 422, "validation-error")


# --- refunds ------------------------------------------------------------------------------------


def _approved_refund(world: World, **contract: Any) -> Refund:
    return world.approve(world.request_refund(world.paid_contract(**contract)))


def test_the_bank_lists_the_approved_refunds_it_must_pay(api: Api) -> None:
    world = api.world
    first = _approved_refund(world)
    second = _approved_refund(world, subject="music", lessons=10)
    world.request_refund(world.paid_contract(subject="chess"))  # asked, not approved: not listed
    page = api.get("bank", "/v1/bank/refunds", status="approved", limit=1)
    assert page.status_code == 200, page.text
    [item] = page.json()["items"]
    assert (item["id"], item["status"], item["amount_fen"]) == (first.id, "approved", PREPAYMENT)
    assert (item["institution_id"], item["kind"], item["overdue"]) == (
        world.school,
        "requested",
        False,
    )
    assert item["approved_seq"] == first.decided_seq
    rest = api.get("bank", "/v1/bank/refunds", cursor=page.json()["next_cursor"]).json()
    assert [r["id"] for r in rest["items"]] == [second.id]
    assert rest["next_cursor"] is None
    assert api.get("bank", "/v1/bank/refunds", status="paid").json()["items"] == []
    only = api.get("bank", "/v1/bank/refunds", institution_id=world.academy).json()
    assert only["items"] == []
    assert api.get("other_bank", "/v1/bank/refunds").json()["items"] == []
    _problem(api.get("bank", "/v1/bank/refunds", status="requested"), 422, "validation-error")


def test_a_refund_paid_leaves_escrow_once(api: Api) -> None:
    world = api.world
    refund = _approved_refund(world)
    assert world.escrow() == PREPAYMENT
    path = f"/v1/bank/refunds/{refund.id}"
    response = api.post("bank", f"{path}/paid", {"bank_reference": "RF-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["bank_reference"], body["amount_fen"]) == (
        "paid",
        "RF-1",
        PREPAYMENT,
    )
    assert body["receipt"]["seq"] == body["paid_seq"]
    _verify(api, body["receipt"])
    assert world.escrow() == 0
    assert world.acct(AccountKind.REFUND_PAYABLE) == 0
    assert api.get("bank", "/v1/bank/refunds").json()["items"] == []
    [paid] = api.get("bank", "/v1/bank/refunds", status="paid").json()["items"]
    assert paid["id"] == refund.id
    _problem(api.post("bank", f"{path}/paid", {"bank_reference": "RF-2"}), 409, "refund-not-open")
    failed = {"bank_reference": "RF-3", "reason": "late"}
    _problem(api.post("bank", f"{path}/failed", failed), 409, "refund-not-open")


def test_a_failed_refund_payment_is_recorded_and_the_refund_stays_payable(api: Api) -> None:
    world = api.world
    refund = _approved_refund(world)
    path = f"/v1/bank/refunds/{refund.id}"
    failure = {"bank_reference": "RF-F1", "reason": "card cancelled"}
    response = api.post("bank", f"{path}/failed", failure)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["failure_bank_reference"], body["failure_reason"]) == (
        "approved",
        "RF-F1",
        "card cancelled",
    )
    assert body["bank_reference"] is None
    assert body["receipt"]["seq"] == body["failure_seq"]
    _verify(api, body["receipt"])
    # no money moved; the refund is still owed and still listed
    assert world.escrow() == PREPAYMENT
    assert world.acct(AccountKind.REFUND_PAYABLE) == PREPAYMENT
    assert world.get(Refund, refund.id).status is RefundStatus.APPROVED
    assert [r["id"] for r in api.get("bank", "/v1/bank/refunds").json()["items"]] == [refund.id]
    [entry] = _entries(world, "refund.payment_failed")
    assert entry["actor"] == f"bank:{world.bank}"
    assert entry["payload"] == {
        "refund": refund.id,
        "contract": refund.contract_id,
        "institution": world.school,
        "amount": PREPAYMENT,
        "bank_reference": "RF-F1",
        "reason": "card cancelled",
    }
    # it may fail again, and is then paid
    again = {"bank_reference": "RF-F2", "reason": "still cancelled"}
    assert api.post("bank", f"{path}/failed", again).status_code == 200
    paid = api.post("bank", f"{path}/paid", {"bank_reference": "RF-P1"})
    assert paid.status_code == 200, paid.text
    assert world.escrow() == 0


def test_another_banks_refund_answers_404_like_a_missing_one(api: Api) -> None:
    world = api.world
    refund = _approved_refund(world)
    for who, refund_id in (("other_bank", refund.id), ("bank", "rfd_missing")):
        path = f"/v1/bank/refunds/{refund_id}"
        _problem(api.post(who, f"{path}/paid", {"bank_reference": "X-1"}), 404, "not-found")
        failed = {"bank_reference": "X-2", "reason": "no"}
        _problem(api.post(who, f"{path}/failed", failed), 404, "not-found")
    assert world.escrow() == PREPAYMENT
    assert _entries(world, "refund.payment_failed") == []


def test_a_refund_not_yet_approved_is_neither_paid_nor_failed(api: Api) -> None:
    world = api.world
    requested = world.request_refund(world.paid_contract())
    path = f"/v1/bank/refunds/{requested.id}"
    _problem(api.post("bank", f"{path}/paid", {"bank_reference": "X-1"}), 409, "refund-not-open")
    failed = {"bank_reference": "X-2", "reason": "no"}
    _problem(api.post("bank", f"{path}/failed", failed), 409, "refund-not-open")


def test_the_refund_payment_failed_service_checks_its_inputs(world: World) -> None:
    refund = world.approve(world.request_refund(world.paid_contract()))

    def fail(**kwargs: Any) -> refunds.RefundPaymentFailure:
        args = {
            "bank_id": world.bank,
            "refund_id": refund.id,
            "bank_reference": "RF-1",
            "reason": "closed",
            **kwargs,
        }
        return world.do(refunds.refund_payment_failed, **args)

    with pytest.raises(NotFound):
        fail(bank_id=world.other_bank)
    with pytest.raises(InvalidRequest, match="bank reference"):
        fail(bank_reference="no spaces")
    with pytest.raises(InvalidRequest, match="failure reason"):
        fail(reason="   ")
    outcome = fail()
    assert (outcome.bank_reference, outcome.reason, outcome.refund.status) == (
        "RF-1",
        "closed",
        RefundStatus.APPROVED,
    )
    world.do(refunds.pay_refund, bank_id=world.bank, refund_id=refund.id, bank_reference="RF-2")
    with pytest.raises(RefundNotOpen):
        fail(bank_reference="RF-3")


# --- escrow balances ----------------------------------------------------------------------------


def test_the_bank_sees_the_escrow_balances_of_its_institutions_only(api: Api) -> None:
    world = api.world
    contract_id = world.paid_contract()
    world.report(contract_id, 2)
    foreign = world.institution("national", bank=world.other_bank)
    first = api.get("bank", "/v1/bank/institutions", limit=3)
    assert first.status_code == 200, first.text
    rest = api.get("bank", "/v1/bank/institutions", cursor=first.json()["next_cursor"]).json()
    ids = [i["id"] for i in first.json()["items"] + rest["items"]]
    assert ids == [world.school, world.academy, world.beijing, world.advance]
    assert rest["next_cursor"] is None
    school = first.json()["items"][0]
    assert school == api.get("bank", f"/v1/bank/institutions/{world.school}").json()
    assert (school["escrow_fen"], school["liability_fen"], school["pending_fen"]) == (
        PREPAYMENT,
        PREPAYMENT - 2 * LESSON,
        2 * LESSON,
    )
    assert (school["escrow_account"], school["status"], school["payable_fen"]) == (
        "ESC-national",
        "active",
        0,
    )
    [other] = api.get("other_bank", "/v1/bank/institutions").json()["items"]
    assert other["id"] == foreign
    for who, institution_id in (
        ("other_bank", world.school),
        ("bank", foreign),
        ("bank", "ins_missing"),
    ):
        _problem(api.get(who, f"/v1/bank/institutions/{institution_id}"), 404, "not-found")
    _problem(api.get("regulator", "/v1/bank/institutions"), 403, "forbidden")


def test_balances_follow_a_risk_deposit_and_an_approved_refund(api: Api) -> None:
    world = api.world
    deposit = {"institution_id": world.school, "amount_fen": 50_000, "bank_reference": "DEP-9"}
    assert api.post("bank", "/v1/bank/risk-deposits", deposit).status_code == 201
    _approved_refund(world)
    body = api.get("bank", f"/v1/bank/institutions/{world.school}").json()
    assert (
        body["escrow_fen"],
        body["risk_deposit_fen"],
        body["refund_payable_fen"],
        body["liability_fen"],
    ) == (PREPAYMENT + 50_000, 50_000, PREPAYMENT, 0)

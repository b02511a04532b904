"""The institution's endpoints: lesson reports, withdrawals, contracts, refunds, money, settlements."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from api.routers.institutions import InstitutionAccounts
from api.writes import receipt_message
from ledger.accounts import AccountKind
from ledger.entities import Contract, Institution, Lesson
from ledger.escrow import lessons
from ledger.escrow.queries import INSTITUTION_KINDS
from ledger.log import format_time
from ledger.models import LogEntry
from tests.api.conftest import Api
from tests.escrow.world import LESSON, World, shanghai

LESSONS = "/v1/institution/lessons"
MISSING = "les_0000000000000000"


def _log_size(world: World) -> int:
    with world.read() as session:
        return world.ledger.log.head(session).size


def _report(contract_id: str, ref: str, world: World, **changes: Any) -> dict[str, Any]:
    body = {
        "contract_id": contract_id,
        "ref": ref,
        "delivered_at": format_time(world.now() - timedelta(minutes=30)),
        "teacher_id": "T-1",
    }
    body.update(changes)
    return body


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"].endswith(f"/problems/{code}"), body
    return body


def _check_receipt(api: Api, receipt: dict[str, Any], seq: int) -> None:
    """The receipt is for ``seq``, carries that entry's hash and verifies with the public key."""
    assert receipt["seq"] == seq
    key = api.client.get("/v1/audit/public-key").json()
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"]))
    with api.world.read() as session:
        entry = session.get(LogEntry, seq)
        assert entry is not None
        assert receipt["hash"] == entry.hash.hex()
    public.verify(
        base64.b64decode(receipt["signature"]),
        receipt_message(receipt["origin"], receipt["seq"], receipt["hash"]),
    )


def _all_pages(api: Api, who: str, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = dict(params)
        if cursor is not None:
            query["cursor"] = cursor
        page = _ok(api.get(who, path, **query))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


# --- reporting ------------------------------------------------------------------------------------


def test_a_reported_lesson_comes_back_with_its_price_and_a_verifiable_receipt(api: Api) -> None:
    world = api.world
    contract = world.paid_contract()
    body = _ok(api.post("institution", LESSONS, _report(contract, "R-1", world)), 201)
    lesson = body["lesson"]
    assert body["created"] is True
    assert (lesson["ref"], lesson["contract_id"], lesson["status"], lesson["price_fen"]) == (
        "R-1",
        contract,
        "reported",
        LESSON,
    )
    assert lesson["confirm_by"] > format_time(world.now())
    _check_receipt(api, body["receipt"], lesson["reported_seq"])
    assert world.acct(AccountKind.PENDING) == LESSON
    assert world.owed(contract) == 19 * LESSON


def test_reporting_the_same_ref_again_records_nothing_and_returns_the_same_lesson(
    api: Api,
) -> None:
    world = api.world
    contract = world.paid_contract()
    report = _report(contract, "R-1", world)
    first = _ok(api.post("institution", LESSONS, report), 201)
    size = _log_size(world)
    again = _ok(api.post("institution", LESSONS, report), 201)  # a new Idempotency-Key
    assert again["lesson"]["id"] == first["lesson"]["id"]
    assert again["created"] is False
    assert _log_size(world) == size
    # the receipt of a repeat is for the entry that recorded the lesson the first time
    _check_receipt(api, again["receipt"], first["lesson"]["reported_seq"])
    assert world.get(Contract, contract).lessons_delivered == 1
    batch = _ok(api.post("institution", f"{LESSONS}/batch", {"lessons": [report]}), 201)
    assert ([x["id"] for x in batch["lessons"]], batch["created"]) == ([first["lesson"]["id"]], 0)
    assert _log_size(world) == size


def test_the_same_ref_for_another_lesson_is_a_conflict(api: Api) -> None:
    world = api.world
    contract = world.paid_contract()
    _ok(api.post("institution", LESSONS, _report(contract, "R-1", world)), 201)
    other = _report(contract, "R-1", world, teacher_id="T-2")
    _problem(api.post("institution", LESSONS, other), 409, "lesson-ref-conflict")


def test_a_batch_of_1000_lessons_is_recorded_and_1001_is_a_validation_error(api: Api) -> None:
    world = api.world
    # 17 subjects of 60 lessons at ¥1: within the per-subject and balance limits of the profile
    contracts = [world.paid_contract(lessons=60, unit=100, subject=f"s{i}") for i in range(17)]
    reports = [_report(contracts[i // 60], f"B-{i}", world) for i in range(1_001)]
    size = _log_size(world)

    refused = _problem(
        api.post("institution", f"{LESSONS}/batch", {"lessons": reports}), 422, "validation-error"
    )
    assert [e["field"] for e in refused["errors"]] == ["body.lessons"]
    assert "1000" in refused["errors"][0]["message"]
    assert _log_size(world) == size

    body = _ok(api.post("institution", f"{LESSONS}/batch", {"lessons": reports[:1_000]}), 201)
    assert body["created"] == 1_000
    assert [x["ref"] for x in body["lessons"]] == [f"B-{i}" for i in range(1_000)]
    assert len({x["id"] for x in body["lessons"]}) == 1_000
    assert _log_size(world) == size + 1_000
    _check_receipt(api, body["receipt"], size + 999)
    assert world.acct(AccountKind.PENDING) == 1_000 * 100


def test_a_batch_is_all_or_none(api: Api) -> None:
    world = api.world
    contract = world.paid_contract()
    size = _log_size(world)
    future = format_time(world.now() + timedelta(hours=1))
    batch = [_report(contract, "A-1", world), _report(contract, "A-2", world, delivered_at=future)]
    _problem(
        api.post("institution", f"{LESSONS}/batch", {"lessons": batch}), 422, "lesson-in-future"
    )
    assert _log_size(world) == size
    assert _ok(api.get("institution", LESSONS))["items"] == []


def test_a_lesson_in_the_future_is_refused(api: Api) -> None:
    world = api.world
    contract = world.paid_contract()
    future = format_time(world.now() + timedelta(hours=1))
    problem = _problem(
        api.post("institution", LESSONS, _report(contract, "F-1", world, delivered_at=future)),
        422,
        "lesson-in-future",
    )
    assert "after now" in problem["detail"]
    assert world.get(Contract, contract).lessons_delivered == 0


def test_a_time_without_a_zone_or_a_bad_ref_is_a_validation_error(api: Api) -> None:
    world = api.world
    contract = world.paid_contract()
    naive = _report(contract, "N-1", world, delivered_at="2026-09-01T08:00:00")
    problem = _problem(api.post("institution", LESSONS, naive), 422, "validation-error")
    assert [e["field"] for e in problem["errors"]] == ["body.delivered_at"]
    bad = _report(contract, "no spaces", world, extra="x")
    fields = {
        e["field"]
        for e in _problem(api.post("institution", LESSONS, bad), 422, "validation-error")["errors"]
    }
    assert fields == {"body.ref", "body.extra"}


def test_a_frozen_institution_may_not_report(api: Api) -> None:
    world = api.world
    contract = world.paid_contract()
    world.freeze(world.school)
    _problem(
        api.post("institution", LESSONS, _report(contract, "Z-1", world)),
        409,
        "institution-not-active",
    )
    assert world.acct(AccountKind.PENDING) == 0


def test_another_institutions_contract_is_not_found(api: Api) -> None:
    world = api.world
    contract = world.paid_contract()
    _problem(
        api.post("other_institution", LESSONS, _report(contract, "X-1", world)), 404, "not-found"
    )


def test_other_roles_may_not_report(api: Api) -> None:
    world = api.world
    contract = world.paid_contract()
    for who in ("parent", "bank", "regulator", "admin"):
        _problem(api.post(who, LESSONS, _report(contract, "P-1", world)), 403, "forbidden")
    assert api.client.get(LESSONS).status_code == 401


# --- listing and withdrawing lessons --------------------------------------------------------------


def test_lessons_are_listed_page_by_page_and_filtered(api: Api) -> None:
    world = api.world
    first = world.paid_contract()
    second = world.paid_contract(parent=world.other_parent, student=world.other_student)
    reported = world.report(first, 3) + world.report(second, 2)
    world.confirm(reported[1].id)

    listed = _all_pages(api, "institution", LESSONS, limit=2)
    assert [x["id"] for x in listed] == [lesson.id for lesson in reported]
    confirmed = _ok(api.get("institution", LESSONS, status="confirmed"))["items"]
    assert [(x["id"], x["confirmed_by"]) for x in confirmed] == [(reported[1].id, "parent")]
    of_second = _all_pages(api, "institution", LESSONS, contract_id=second)
    assert [x["id"] for x in of_second] == [lesson.id for lesson in reported[3:]]
    both = _ok(api.get("institution", LESSONS, status="reported", contract_id=first))["items"]
    assert [x["id"] for x in both] == [reported[0].id, reported[2].id]

    assert _ok(api.get("other_institution", LESSONS))["items"] == []
    _problem(api.get("institution", LESSONS, status="lost"), 422, "validation-error")
    _problem(api.get("institution", LESSONS, cursor="garbage"), 422, "invalid-request")


def test_a_disputed_lesson_is_withdrawn_and_its_money_returns_to_the_contract(api: Api) -> None:
    world = api.world
    contract = world.paid_contract()
    [lesson] = world.report(contract)
    world.do(lessons.dispute_lesson, parent_id=world.parent, lesson_id=lesson.id, reason="absent")
    assert world.owed(contract) == 19 * LESSON

    body = _ok(api.post("institution", f"{LESSONS}/{lesson.id}/withdraw"))
    assert (body["lesson"]["id"], body["lesson"]["status"]) == (lesson.id, "voided")
    _check_receipt(api, body["receipt"], body["lesson"]["decided_seq"])
    assert world.owed(contract) == 20 * LESSON
    assert world.acct(AccountKind.PENDING) == 0
    again = api.post("institution", f"{LESSONS}/{lesson.id}/withdraw")
    _problem(again, 409, "lesson-not-open")


def test_only_a_disputed_lesson_of_ones_own_can_be_withdrawn(api: Api) -> None:
    world = api.world
    contract = world.paid_contract()
    [lesson] = world.report(contract)
    _problem(api.post("institution", f"{LESSONS}/{lesson.id}/withdraw"), 409, "lesson-not-open")
    world.do(lessons.dispute_lesson, parent_id=world.parent, lesson_id=lesson.id, reason="absent")
    foreign = _problem(
        api.post("other_institution", f"{LESSONS}/{lesson.id}/withdraw"), 404, "not-found"
    )
    missing = _problem(
        api.post("other_institution", f"{LESSONS}/{MISSING}/withdraw"), 404, "not-found"
    )
    assert foreign["detail"].replace(lesson.id, MISSING) == missing["detail"]
    assert world.get(Lesson, lesson.id).status.value == "disputed"
    _problem(api.post("institution", f"{LESSONS}/bad%20id/withdraw"), 422, "validation-error")


# --- contracts ------------------------------------------------------------------------------------


def test_contracts_show_what_remains_of_them(api: Api) -> None:
    world = api.world
    paid = world.paid_contract()
    unpaid = world.contract(parent=world.other_parent, student=world.other_student)
    world.report(paid, 3)
    world.paid_contract(world.academy, unit=4_000, class_size=8, subject="maths")

    listed = _all_pages(api, "institution", "/v1/institution/contracts", limit=1)
    assert [c["id"] for c in listed] == [paid, unpaid]
    first = listed[0]
    assert (first["status"], first["lessons_delivered"], first["lessons_remaining"]) == (
        "active",
        3,
        17,
    )
    assert (first["total_fen"], first["value_remaining_fen"]) == (20 * LESSON, 17 * LESSON)
    assert (listed[1]["status"], listed[1]["value_remaining_fen"]) == ("awaiting_payment", 0)
    active = _ok(api.get("institution", "/v1/institution/contracts", status="active"))["items"]
    assert [c["id"] for c in active] == [paid]
    others = _ok(api.get("other_institution", "/v1/institution/contracts"))["items"]
    assert paid not in [c["id"] for c in others]
    assert len(others) == 1


# --- refunds --------------------------------------------------------------------------------------


def test_refund_requests_are_listed_and_approved(api: Api) -> None:
    world = api.world
    contract = world.paid_contract()
    world.report(contract, 2)
    refund = world.request_refund(contract, 3)

    [listed] = _ok(api.get("institution", "/v1/institution/refunds", status="requested"))["items"]
    assert (listed["id"], listed["lessons"], listed["amount_fen"]) == (refund.id, 3, None)
    assert listed["answer_by"] is not None

    body = _ok(api.post("institution", f"/v1/institution/refunds/{refund.id}/approve"))
    assert (body["refund"]["status"], body["refund"]["amount_fen"]) == ("approved", 3 * LESSON)
    _check_receipt(api, body["receipt"], body["refund"]["decided_seq"])
    assert world.acct(AccountKind.REFUND_PAYABLE) == 3 * LESSON
    assert world.owed(contract) == 15 * LESSON
    assert _ok(api.get("institution", "/v1/institution/refunds", status="requested"))["items"] == []
    _problem(
        api.post("institution", f"/v1/institution/refunds/{refund.id}/approve"),
        409,
        "refund-not-open",
    )


def test_a_refund_request_is_rejected_with_a_reason(api: Api) -> None:
    world = api.world
    contract = world.paid_contract()
    refund = world.request_refund(contract, 2)
    assert world.get(Contract, contract).lessons_reserved == 2
    path = f"/v1/institution/refunds/{refund.id}/reject"

    _problem(api.post("institution", path, {}), 422, "validation-error")
    _problem(api.post("institution", path, {"answer": "   "}), 422, "invalid-request")
    body = _ok(api.post("institution", path, {"answer": "all taught"}))
    assert (body["refund"]["status"], body["refund"]["answer"]) == ("rejected", "all taught")
    assert body["receipt"]["seq"] == body["refund"]["decided_seq"]
    assert world.get(Contract, contract).lessons_reserved == 0
    [listed] = _all_pages(api, "institution", "/v1/institution/refunds")
    assert listed["status"] == "rejected"


def test_another_institutions_refund_is_not_found(api: Api) -> None:
    world = api.world
    refund = world.request_refund(world.paid_contract(), 1)
    for action, body in (("approve", None), ("reject", {"answer": "no"})):
        path = f"/v1/institution/refunds/{refund.id}/{action}"
        _problem(api.post("other_institution", path, body), 404, "not-found")
    assert _ok(api.get("other_institution", "/v1/institution/refunds"))["items"] == []
    assert world.get(Contract, refund.contract_id).lessons_reserved == 1


# --- liability, settlements, settlement account ---------------------------------------------------


def test_liability_is_the_undelivered_value_with_every_account(api: Api) -> None:
    world = api.world
    contract = world.paid_contract()
    [lesson, _] = world.report(contract, 2)
    world.confirm(lesson.id)

    body = _ok(api.get("institution", "/v1/institution/liability"))
    assert (body["institution_id"], body["status"], body["currency"]) == (
        world.school,
        "active",
        "CNY",
    )
    assert body["liability_fen"] == 18 * LESSON
    accounts = body["accounts"]
    assert (accounts["escrow_fen"], accounts["pending_fen"], accounts["releasable_fen"]) == (
        20 * LESSON,
        LESSON,
        LESSON,
    )
    assert accounts["payable_fen"] == accounts["advance_fen"] == 0
    other = _ok(api.get("other_institution", "/v1/institution/liability"))
    assert (other["liability_fen"], other["accounts"]["escrow_fen"]) == (0, 0)


def test_every_institution_account_is_shown() -> None:
    assert set(InstitutionAccounts.model_fields) == {f"{k.value}_fen" for k in INSTITUTION_KINDS}


def test_settlement_batches_appear_after_settlement_with_lessons_and_payouts(api: Api) -> None:
    world = api.world
    contract = world.paid_contract()
    reported = world.report(contract, 3)
    for lesson in reported[:2]:
        world.confirm(lesson.id)
    assert _ok(api.get("institution", "/v1/institution/settlements"))["items"] == []

    world.set_clock(shanghai(2026, 9, 2, 2))
    world.settle(institutions=[world.school])
    [batch] = _all_pages(api, "institution", "/v1/institution/settlements")
    assert (batch["business_date"], batch["lessons"], batch["gross_fen"], batch["payable_fen"]) == (
        "2026-09-01",
        2,
        2 * LESSON,
        2 * LESSON,
    )
    assert batch["payout_status"] == "instructed"

    detail = _ok(api.get("institution", f"/v1/institution/settlements/{batch['id']}", limit=1))
    assert detail["batch"] == batch
    [payout] = detail["payouts"]
    assert (payout["id"], payout["amount_fen"], payout["settlement_account"]) == (
        batch["payout_id"],
        2 * LESSON,
        "SET-national",
    )
    assert [x["id"] for x in detail["lessons"]["items"]] == [reported[0].id]
    rest = _ok(
        api.get(
            "institution",
            f"/v1/institution/settlements/{batch['id']}",
            cursor=detail["lessons"]["next_cursor"],
        )
    )
    assert [x["id"] for x in rest["lessons"]["items"]] == [reported[1].id]
    assert rest["lessons"]["items"][0]["batch_id"] == batch["id"]

    world.execute_payouts(world.school)
    [paid] = _ok(api.get("institution", "/v1/institution/settlements"))["items"]
    assert paid["payout_status"] == "executed"

    _problem(
        api.get("other_institution", f"/v1/institution/settlements/{batch['id']}"),
        404,
        "not-found",
    )
    _problem(
        api.get("institution", "/v1/institution/settlements/stl_0000000000000000"),
        404,
        "not-found",
    )
    assert _ok(api.get("other_institution", "/v1/institution/settlements"))["items"] == []


def test_the_settlement_account_is_changed_for_future_payouts(api: Api) -> None:
    world = api.world
    path = "/v1/institution/settlement-account"
    body = _ok(api.post("institution", path, {"account": "NEW-42"}))
    assert (body["institution_id"], body["settlement_account"]) == (world.school, "NEW-42")
    _check_receipt(api, body["receipt"], _log_size(world) - 1)
    assert world.get(Institution, world.school).settlement_account == "NEW-42"
    assert world.get(Institution, world.academy).settlement_account == "SET-ningbo"

    contract = world.paid_contract()
    [lesson] = world.report(contract)
    world.confirm(lesson.id)
    world.set_clock(shanghai(2026, 9, 2, 2))
    [payout] = world.settle(institutions=[world.school]).payouts
    assert payout.settlement_account == "NEW-42"

    _problem(api.post("institution", path, {"account": "has space"}), 422, "validation-error")
    _problem(api.post("parent", path, {"account": "NEW-43"}), 403, "forbidden")
    assert world.get(Institution, world.school).settlement_account == "NEW-42"


def test_a_refund_cannot_be_rejected_after_its_answer_window(api: Api) -> None:
    from ledger.entities import Refund

    world = api.world
    contract = world.paid_contract(lessons=10)
    refund = world.request_refund(contract, 2)
    answer_by = world.get(Refund, refund.id).answer_by
    assert answer_by is not None
    world.set_clock(answer_by)
    late = api.post(
        "institution", f"/v1/institution/refunds/{refund.id}/reject", {"answer": "too late"}
    )
    assert late.status_code == 409
    assert late.json()["type"].endswith("/answer-window-closed")
    assert world.get(Refund, refund.id).status.value == "requested"

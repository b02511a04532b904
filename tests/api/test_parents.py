"""The parents' API: students, contracts, lessons, refunds and receipts, seen by one family only."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from api.writes import receipt_message
from ledger.accounts import AccountKind
from ledger.entities import Contract, Lesson, LessonStatus, PayerType, Refund
from ledger.escrow import contracts, supervision
from ledger.models import LogEntry
from tests.api.conftest import Api
from tests.escrow.world import LESSON, START

PROBLEM = "application/problem+json"


def new_contract(api: Api, **changes: Any) -> dict[str, Any]:
    """A legal contract body for the world's parent at the national-profile school."""
    body: dict[str, Any] = {
        "institution_id": api.world.school,
        "student_id": api.world.student,
        "subject": "Art",
        "course_name": "Watercolour",
        "lessons": 10,
        "unit_price_fen": LESSON,
        "start_date": START.isoformat(),
        "end_date": (START + timedelta(days=60)).isoformat(),
    }
    body.update(changes)
    return body


def verify_receipt(api: Api, receipt: dict[str, Any]) -> None:
    """The receipt's signature verifies with the published key, over the hash the log holds."""
    key = api.get(None, "/v1/audit/public-key").json()
    assert (receipt["origin"], receipt["key_id"]) == (key["origin"], key["key_id"])
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"]))
    signature = base64.b64decode(receipt["signature"])
    message = receipt_message(receipt["origin"], receipt["seq"], receipt["hash"])
    public.verify(signature, message)
    assert api.world.get(LogEntry, receipt["seq"]).hash.hex() == receipt["hash"]
    with pytest.raises(InvalidSignature):  # the signature binds the seq
        public.verify(
            signature, receipt_message(receipt["origin"], receipt["seq"] + 1, receipt["hash"])
        )


def all_pages(api: Api, who: str, path: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        query = (
            dict(params, limit=limit)
            if cursor is None
            else dict(params, limit=limit, cursor=cursor)
        )
        page = api.get(who, path, **query)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= limit
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


# --- students ----------------------------------------------------------------------------------


def test_a_parent_lists_their_students_with_names_and_registers_another(api: Api) -> None:
    listed = api.get("parent", "/v1/parent/students").json()
    assert listed["items"] == [
        {
            "id": api.world.student,
            "name": "李明",
            "registered_seq": listed["items"][0]["registered_seq"],
        }
    ]
    assert listed["next_cursor"] is None

    created = api.post("parent", "/v1/parent/students", {"name": " 李华 "})
    assert created.status_code == 201, created.text
    student = created.json()
    assert student["id"].startswith("stu_")
    assert student["name"] == "李华"
    verify_receipt(api, student["receipt"])
    entry = api.world.get(LogEntry, student["registered_seq"])
    assert entry.type == "student.registered"
    assert entry.actor == f"parent:{api.world.parent}"
    assert "李华".encode() not in entry.body  # only a commitment reaches the log

    names = [s["name"] for s in api.get("parent", "/v1/parent/students").json()["items"]]
    assert names == ["李明", "李华"]
    others = api.get("other_parent", "/v1/parent/students").json()["items"]
    assert [s["id"] for s in others] == [api.world.other_student]


def test_a_student_name_is_validated(api: Api) -> None:
    response = api.post("parent", "/v1/parent/students", {"name": "x" * 201})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.name"
    assert api.post("parent", "/v1/parent/students", {"name": "a", "age": 9}).status_code == 422


# --- contracts ---------------------------------------------------------------------------------


def test_creating_a_contract_answers_it_with_a_receipt_and_lists_it(api: Api) -> None:
    response = api.post("parent", "/v1/parent/contracts", new_contract(api))
    assert response.status_code == 201, response.text
    contract = response.json()
    assert contract["id"].startswith("ctr_")
    assert contract["status"] == "awaiting_payment"
    assert contract["subject"] == "art"  # normalised by the service
    assert (contract["lessons"], contract["total_fen"]) == (10, 10 * LESSON)
    assert (contract["lessons_remaining"], contract["value_remaining_fen"]) == (10, 0)
    assert contract["institution_name"] == "national institution"
    verify_receipt(api, contract["receipt"])
    assert contract["receipt"]["seq"] == contract["created_seq"]
    stored = api.world.get(Contract, contract["id"])
    assert (stored.parent_id, stored.student_id) == (api.world.parent, api.world.student)

    listed = api.get("parent", "/v1/parent/contracts").json()["items"]
    assert [c["id"] for c in listed] == [contract["id"]]
    assert api.get("other_parent", "/v1/parent/contracts").json()["items"] == []


def test_contracts_show_the_lessons_and_value_that_remain(api: Api) -> None:
    world = api.world
    paid = world.paid_contract(lessons=10, unit=LESSON)
    world.report(paid, 3)
    second = world.do(contracts.create_contract, parent_id=world.parent, terms=_terms(world))
    other = world.paid_contract(parent=world.other_parent, student=world.other_student)

    items = api.get("parent", "/v1/parent/contracts").json()["items"]
    assert [c["id"] for c in items] == [paid, second.id]
    first = items[0]
    assert first["status"] == "active"
    assert (first["lessons_delivered"], first["lessons_remaining"]) == (3, 7)
    assert first["value_remaining_fen"] == 7 * LESSON == world.owed(paid)
    assert other not in {c["id"] for c in items}

    mine = api.get("parent", "/v1/parent/contracts", student_id=world.student).json()["items"]
    assert len(mine) == 2
    assert api.get("parent", "/v1/parent/contracts", student_id="stu_nobody").status_code == 404
    refused = api.get("parent", "/v1/parent/contracts", student_id=world.other_student)
    assert refused.status_code == 404


def _terms(world: Any) -> contracts.Terms:
    return contracts.Terms(
        institution_id=world.beijing,
        student_id=world.student,
        subject="music",
        course_name="Piano",
        lessons=4,
        unit_price_fen=LESSON,
        start_date=START,
        end_date=START + timedelta(days=30),
    )


def test_contract_detail_shows_every_lesson_and_refund(api: Api) -> None:
    world = api.world
    contract_id = world.paid_contract(lessons=10)
    reported = world.report(contract_id, 3)
    world.confirm(reported[0].id)
    refund = world.request_refund(contract_id, 2)

    response = api.get("parent", f"/v1/parent/contracts/{contract_id}")
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["contract"]["id"] == contract_id
    assert detail["contract"]["lessons_reserved"] == 2
    assert [x["id"] for x in detail["lessons"]] == [x.id for x in reported]
    assert [x["status"] for x in detail["lessons"]] == ["confirmed", "reported", "reported"]
    assert detail["lessons"][0]["confirmed_by"] == "parent"
    assert all(x["price_fen"] == LESSON for x in detail["lessons"])
    assert [(r["id"], r["status"], r["lessons"]) for r in detail["refunds"]] == [
        (refund.id, "requested", 2)
    ]


def test_a_regulation_refusal_is_a_problem_naming_the_limit_and_the_value(api: Api) -> None:
    response = api.post("parent", "/v1/parent/contracts", new_contract(api, lessons=72))
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"].endswith("/problems/rules/max-lessons")
    assert (problem["limit"], problem["value"], problem["profile"]) == (60, 72, "national")
    assert "72" in problem["detail"]
    assert "60" in problem["detail"]
    assert api.get("parent", "/v1/parent/contracts").json()["items"] == []


def test_a_contract_replayed_with_its_key_is_created_once(api: Api) -> None:
    body = new_contract(api)
    first = api.post("parent", "/v1/parent/contracts", body, key="contract-1")
    again = api.post("parent", "/v1/parent/contracts", body, key="contract-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    listed = api.get("parent", "/v1/parent/contracts").json()["items"]
    assert [c["id"] for c in listed] == [first.json()["id"]]

    reused = api.post(
        "parent", "/v1/parent/contracts", new_contract(api, lessons=9), key="contract-1"
    )
    assert reused.status_code == 409
    assert reused.headers["content-type"] == PROBLEM
    assert reused.json()["type"].endswith("/problems/idempotency-key-reused")
    assert len(api.get("parent", "/v1/parent/contracts").json()["items"]) == 1


def test_contract_pages_return_every_contract_exactly_once(api: Api) -> None:
    world = api.world
    created = [
        world.contract(institution, lessons=4, subject=subject)
        for institution in (world.school, world.beijing)
        for subject in ("art", "chess", "dance")
    ]
    world.contract(parent=world.other_parent, student=world.other_student)
    items = all_pages(api, "parent", "/v1/parent/contracts", 2)
    assert [c["id"] for c in items] == created
    seqs = [c["created_seq"] for c in items]
    assert seqs == sorted(seqs)
    assert all_pages(api, "parent", "/v1/parent/contracts", 4, student_id=world.student) == items
    bad = api.get("parent", "/v1/parent/contracts", cursor="not-a-cursor")
    assert bad.status_code == 422
    assert bad.json()["type"].endswith("/invalid-request")


# --- lessons -----------------------------------------------------------------------------------


def test_confirming_a_lesson_releases_it_with_a_verifiable_receipt(api: Api) -> None:
    world = api.world
    contract_id = world.paid_contract(lessons=10)
    [lesson] = world.report(contract_id)
    response = api.post("parent", f"/v1/parent/lessons/{lesson.id}/confirm")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["status"], body["confirmed_by"]) == (lesson.id, "confirmed", "parent")
    assert body["receipt"]["seq"] == body["decided_seq"]
    assert world.get(LogEntry, body["decided_seq"]).type == "lesson.confirmed"
    verify_receipt(api, body["receipt"])
    assert world.acct(AccountKind.RELEASABLE) == LESSON
    assert world.acct(AccountKind.PENDING) == 0

    again = api.post("parent", f"/v1/parent/lessons/{lesson.id}/confirm")
    assert again.status_code == 409
    assert again.json()["type"].endswith("/problems/lesson-not-open")


def test_disputing_a_lesson_keeps_its_money_pending(api: Api) -> None:
    world = api.world
    contract_id = world.paid_contract(lessons=10)
    [lesson] = world.report(contract_id)
    path = f"/v1/parent/lessons/{lesson.id}/dispute"
    assert api.post("parent", path, {}).status_code == 422
    assert api.post("parent", path, {"reason": ""}).status_code == 422
    response = api.post("parent", path, {"reason": "nobody came"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["dispute_reason"]) == ("disputed", "nobody came")
    verify_receipt(api, body["receipt"])
    assert world.get(LogEntry, body["receipt"]["seq"]).type == "lesson.disputed"
    assert world.get(Lesson, lesson.id).status is LessonStatus.DISPUTED
    assert world.acct(AccountKind.PENDING) == LESSON
    assert world.acct(AccountKind.RELEASABLE) == 0


# --- refunds -----------------------------------------------------------------------------------


def test_a_parent_requests_a_refund_and_lists_it(api: Api) -> None:
    world = api.world
    contract_id = world.paid_contract(lessons=10)
    world.report(contract_id, 2)
    response = api.post(
        "parent",
        f"/v1/parent/contracts/{contract_id}/refunds",
        {"lessons": 3, "reason": "moving away"},
    )
    assert response.status_code == 201, response.text
    refund = response.json()
    assert (refund["kind"], refund["status"], refund["lessons"]) == ("requested", "requested", 3)
    assert (refund["reason"], refund["amount_fen"], refund["before_start"]) == (
        "moving away",
        None,
        False,
    )
    assert refund["answer_by"] is not None
    verify_receipt(api, refund["receipt"])
    assert world.get(Contract, contract_id).lessons_reserved == 3

    whole = api.post("parent", f"/v1/parent/contracts/{contract_id}/refunds")  # no body: all left
    assert whole.status_code == 201, whole.text
    assert whole.json()["lessons"] == 10 - 2 - 3

    too_many = api.post("parent", f"/v1/parent/contracts/{contract_id}/refunds", {"lessons": 1})
    assert too_many.status_code == 409
    assert too_many.json()["type"].endswith("/problems/no-lessons-left")

    listed = api.get("parent", "/v1/parent/refunds").json()
    assert [r["id"] for r in listed["items"]] == [refund["id"], whole.json()["id"]]
    assert "receipt" not in listed["items"][0]
    assert api.get("other_parent", "/v1/parent/refunds").json()["items"] == []


def test_refund_pages_return_every_refund_once(api: Api) -> None:
    world = api.world
    made = []
    for subject in ("art", "chess", "dance"):
        contract_id = world.paid_contract(lessons=4, subject=subject)
        made.append(world.request_refund(contract_id, 1).id)
    assert [r["id"] for r in all_pages(api, "parent", "/v1/parent/refunds", 2)] == made


def test_a_parent_declines_a_transfer_and_is_refunded(api: Api) -> None:
    world = api.world
    successor = world.institution("national", district="haishu")
    contract_id = world.paid_contract(lessons=10)
    world.report(contract_id, 3)
    world.do(
        supervision.approve_transfer,
        regulator_id=world.regulator,
        from_institution_id=world.school,
        to_institution_id=successor,
        reason="merger",
    )
    response = api.post("parent", f"/v1/parent/contracts/{contract_id}/decline-transfer")
    assert response.status_code == 201, response.text
    refund = response.json()
    assert (refund["kind"], refund["status"], refund["amount_fen"]) == (
        "transfer_declined",
        "approved",
        7 * LESSON,
    )
    assert refund["institution_id"] == successor
    verify_receipt(api, refund["receipt"])
    assert refund["receipt"]["seq"] == refund["decided_seq"]
    assert world.acct(AccountKind.REFUND_PAYABLE, successor) == 7 * LESSON

    again = api.post("parent", f"/v1/parent/contracts/{contract_id}/decline-transfer")
    assert again.status_code == 409
    assert again.json()["type"].endswith("/problems/transfer-window-closed")


def test_declining_a_contract_that_was_not_transferred_is_404(api: Api) -> None:
    contract_id = api.world.paid_contract()
    response = api.post("parent", f"/v1/parent/contracts/{contract_id}/decline-transfer")
    assert response.status_code == 404
    assert "was not transferred" in response.json()["detail"]


# --- receipts ----------------------------------------------------------------------------------


def test_receipts_list_the_bank_payments_with_signed_proofs(api: Api) -> None:
    world = api.world
    paid = [world.paid_contract(lessons=4, subject=s) for s in ("art", "chess", "dance")]
    world.contract(lessons=4, subject="go")  # unpaid: no receipt
    returned = world.contract(lessons=4, subject="judo")
    world.pay(returned, payer=PayerType.LENDER)
    world.paid_contract(parent=world.other_parent, student=world.other_student)

    items = all_pages(api, "parent", "/v1/parent/receipts", 2)
    assert [r["contract_id"] for r in items] == [*paid, returned]
    assert [r["status"] for r in items] == ["booked"] * 3 + ["returned"]
    assert items[0]["amount_fen"] == 4 * LESSON
    assert items[0]["bank_id"] == world.bank
    for item in items:
        assert item["proof"]["seq"] == item["seq"]
        verify_receipt(api, item["proof"])
    assert world.get(LogEntry, items[0]["seq"]).type == "receipt.booked"
    assert world.get(LogEntry, items[-1]["seq"]).type == "receipt.returned"
    assert api.get("other_parent", "/v1/parent/receipts").json()["items"][0]["contract_id"] not in (
        [*paid, returned]
    )


# --- tenancy and roles -------------------------------------------------------------------------


def _other_familys(api: Api) -> dict[str, str]:
    world = api.world
    contract_id = world.paid_contract(parent=world.other_parent, student=world.other_student)
    [lesson] = world.report(contract_id)
    return {"contract": contract_id, "lesson": lesson.id, "student": world.other_student}


MISSING = {"contract": "ctr_0000000000000000", "lesson": "les_0000000000000000", "student": "stu_0"}


def _calls(api: Api, ids: dict[str, str]) -> list[tuple[str, Any]]:
    """Every parent endpoint that names a contract, lesson or student."""
    c, les, s = ids["contract"], ids["lesson"], ids["student"]
    return [
        ("GET contract", lambda: api.get("parent", f"/v1/parent/contracts/{c}")),
        (
            "GET contracts by student",
            lambda: api.get("parent", "/v1/parent/contracts", student_id=s),
        ),
        (
            "POST contract",
            lambda: api.post("parent", "/v1/parent/contracts", new_contract(api, student_id=s)),
        ),
        (
            "POST refund",
            lambda: api.post("parent", f"/v1/parent/contracts/{c}/refunds", {"lessons": 1}),
        ),
        ("POST decline", lambda: api.post("parent", f"/v1/parent/contracts/{c}/decline-transfer")),
        ("POST confirm", lambda: api.post("parent", f"/v1/parent/lessons/{les}/confirm")),
        (
            "POST dispute",
            lambda: api.post("parent", f"/v1/parent/lessons/{les}/dispute", {"reason": "x"}),
        ),
    ]


def test_another_familys_resources_answer_exactly_like_missing_ones(api: Api) -> None:
    others = _other_familys(api)
    size = api.world.ledger.log.head
    with api.world.read() as session:
        before = size(session).size
    for (name, other_call), (_, missing_call) in zip(
        _calls(api, others), _calls(api, MISSING), strict=True
    ):
        other, missing = other_call(), missing_call()
        assert other.status_code == missing.status_code == 404, (name, other.text)
        assert other.headers["content-type"] == missing.headers["content-type"] == PROBLEM
        hidden, absent = other.json(), missing.json()
        assert set(hidden) == set(absent), name
        assert {k: hidden[k] for k in ("type", "title", "status")} == {
            k: absent[k] for k in ("type", "title", "status")
        }, name
        kind = next(k for k in ("contract", "lesson", "student") if others[k] in hidden["detail"])
        assert hidden["detail"].replace(others[kind], MISSING[kind]) == absent["detail"], name
    with api.world.read() as session:
        assert size(session).size == before  # nothing was written
    assert api.world.get(Lesson, others["lesson"]).status is LessonStatus.REPORTED
    with api.world.read() as session:
        assert session.query(Refund).count() == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/parent/students"),
        ("POST", "/v1/parent/students"),
        ("GET", "/v1/parent/contracts"),
        ("GET", "/v1/parent/contracts/ctr_1"),
        ("POST", "/v1/parent/contracts"),
        ("POST", "/v1/parent/contracts/ctr_1/refunds"),
        ("POST", "/v1/parent/contracts/ctr_1/decline-transfer"),
        ("POST", "/v1/parent/lessons/les_1/confirm"),
        ("POST", "/v1/parent/lessons/les_1/dispute"),
        ("GET", "/v1/parent/refunds"),
        ("GET", "/v1/parent/receipts"),
    ],
)
def test_only_parents_get_in(api: Api, method: str, path: str) -> None:
    def call(who: str | None) -> int:
        if method == "GET":
            return api.get(who, path).status_code
        return api.post(who, path, {}).status_code

    assert call(None) == 401
    for role in ("institution", "bank", "regulator", "admin"):
        assert call(role) == 403, role

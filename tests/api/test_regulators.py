"""Regulator endpoints: institutions of the jurisdiction, supervision actions, overdue refunds and
the event log, each with its effect on the ledger and with the district regulator's reach."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from api import log_view
from api.log_view import Resolver
from api.pagination import encode
from api.routers.regulators import InstitutionBalances
from ledger.accounts import AccountKind
from ledger.entities import (
    ConfirmedBy,
    Contract,
    ContractStatus,
    Institution,
    InstitutionStatus,
    Lesson,
    LessonStatus,
    Refund,
    RefundStatus,
)
from ledger.escrow import contracts as contract_ops
from ledger.escrow import lessons, queries
from ledger.escrow import refunds as refund_ops
from ledger.escrow.contracts import institution_account
from ledger.models import LogEntry
from settlement.sweeps import run_sweeps
from tests.api.conftest import Api
from tests.escrow.world import LESSON, World

BASE = "/v1/regulator"


def _academy_contract(world: World, lessons: int = 5) -> str:
    return world.paid_contract(world.academy, lessons=lessons, unit=4_000, class_size=20)


def _dispute(world: World, lesson_id: str, reason: str = "the teacher was absent") -> None:
    world.do(lessons.dispute_lesson, parent_id=world.parent, lesson_id=lesson_id, reason=reason)


def _walk(api: Api, who: str, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list, following next_cursor to the end."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10_000):
        query = dict(params) if cursor is None else {**params, "cursor": cursor}
        response = api.get(who, path, **query)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the cursor never ended")


def _events(api: Api, who: str, **params: Any) -> list[dict[str, Any]]:
    return _walk(api, who, f"{BASE}/events", **params)


def _log_size(world: World) -> int:
    with world.read() as session:
        return int(session.scalar(select(func.count()).select_from(LogEntry)) or 0)


# --- institutions ---------------------------------------------------------------------------


def test_the_balances_model_has_one_field_per_institution_account_kind() -> None:
    assert set(InstitutionBalances.model_fields) == {
        f"{kind.value}_fen" for kind in queries.INSTITUTION_KINDS
    }


def test_institutions_of_the_jurisdiction_with_balances_and_liability(api: Api) -> None:
    world = api.world
    contract = world.paid_contract(lessons=10, unit=LESSON)
    world.report(contract, 2)

    everything = _walk(api, "regulator", f"{BASE}/institutions")
    assert [i["id"] for i in everything] == [
        world.school,
        world.academy,
        world.beijing,
        world.advance,
    ]  # in registration order
    district = _walk(api, "district_regulator", f"{BASE}/institutions")
    assert [i["id"] for i in district] == [world.school, world.advance]

    school = api.get("district_regulator", f"{BASE}/institutions/{world.school}")
    assert school.status_code == 200
    body = school.json()
    assert body["district"] == "haishu"
    assert body["status"] == "active"
    assert body["licence"] == "non_academic"
    assert body["balances"]["escrow_fen"] == 10 * LESSON == world.escrow()
    assert body["balances"]["pending_fen"] == 2 * LESSON == world.acct(AccountKind.PENDING)
    assert body["liability_fen"] == 8 * LESSON
    assert body == everything[0]

    paged = [
        api.get("regulator", f"{BASE}/institutions", limit=1),
    ]
    while paged[-1].json()["next_cursor"] is not None:
        paged.append(
            api.get(
                "regulator", f"{BASE}/institutions", limit=1, cursor=paged[-1].json()["next_cursor"]
            )
        )
    assert [r.json()["items"][0]["id"] for r in paged] == [i["id"] for i in everything]


def test_institutions_filtered_by_status(api: Api) -> None:
    world = api.world
    world.freeze(world.school)
    world.freeze(world.academy)
    frozen = _walk(api, "regulator", f"{BASE}/institutions", status="frozen")
    assert {i["id"] for i in frozen} == {world.school, world.academy}
    assert all(i["status"] == "frozen" for i in frozen)
    district_frozen = _walk(api, "district_regulator", f"{BASE}/institutions", status="frozen")
    assert [i["id"] for i in district_frozen] == [world.school]
    active = _walk(api, "regulator", f"{BASE}/institutions", status="active")
    assert {i["id"] for i in active} == {world.beijing, world.advance}
    bad = api.get("regulator", f"{BASE}/institutions", status="sleeping")
    assert bad.status_code == 422


# --- actions --------------------------------------------------------------------------------


def test_freeze_and_unfreeze_change_the_status_and_are_logged(api: Api) -> None:
    world = api.world
    frozen = api.post(
        "district_regulator", f"{BASE}/institutions/{world.school}/freeze", {"reason": "audit"}
    )
    assert frozen.status_code == 200, frozen.text
    assert frozen.json()["institution"]["status"] == "frozen"
    assert world.get(Institution, world.school).status is InstitutionStatus.FROZEN
    receipt = frozen.json()["receipt"]
    entry = world.get(LogEntry, receipt["seq"])
    assert entry.type == "institution.frozen"
    assert entry.actor == f"regulator:{world.district_regulator}"
    assert json.loads(entry.body)["payload"]["reason"] == "audit"
    assert receipt["hash"] == entry.hash.hex()

    again = api.post("regulator", f"{BASE}/institutions/{world.school}/freeze", {"reason": "x"})
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")

    unfrozen = api.post(
        "regulator", f"{BASE}/institutions/{world.school}/unfreeze", {"reason": "audit passed"}
    )
    assert unfrozen.status_code == 200, unfrozen.text
    assert unfrozen.json()["institution"]["status"] == "active"
    assert world.get(Institution, world.school).status is InstitutionStatus.ACTIVE
    assert (
        api.post(
            "regulator", f"{BASE}/institutions/{world.school}/unfreeze", {"reason": "x"}
        ).status_code
        == 409
    )


def test_an_action_replayed_with_its_key_has_one_effect(api: Api) -> None:
    world = api.world
    path = f"{BASE}/institutions/{world.school}/freeze"
    first = api.post("regulator", path, {"reason": "audit"}, key="freeze-1")
    size = _log_size(world)
    replay = api.post("regulator", path, {"reason": "audit"}, key="freeze-1")
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert _log_size(world) == size
    assert api.post("regulator", path, {"reason": "other"}, key="freeze-1").status_code == 409


def test_a_wind_down_refunds_every_undelivered_lesson(api: Api) -> None:
    world = api.world
    contract = world.paid_contract(lessons=20, unit=LESSON)
    world.report(contract, 2)
    unpaid = world.contract(lessons=3, unit=5_000, subject="chess")
    response = api.post(
        "district_regulator",
        f"{BASE}/institutions/{world.school}/wind-down",
        {"reason": "licence revoked"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["institution"]["status"] == "winding_down"
    assert world.get(Institution, world.school).status is InstitutionStatus.WINDING_DOWN
    [refund] = body["refunds"]
    assert refund["contract_id"] == contract
    assert refund["kind"] == "wind_down"
    assert refund["status"] == "approved"
    assert refund["lessons"] == 18
    assert refund["amount_fen"] == 18 * LESSON == body["refunded_fen"]
    assert body["cancelled_contracts"] == [unpaid]
    assert world.get(Contract, unpaid).status is ContractStatus.CANCELLED
    assert world.acct(AccountKind.REFUND_PAYABLE) == 18 * LESSON
    assert body["institution"]["balances"]["refund_payable_fen"] == 18 * LESSON
    assert body["institution"]["liability_fen"] == 0
    assert body["receipt"] is not None
    again = api.post(
        "regulator", f"{BASE}/institutions/{world.school}/wind-down", {"reason": "again"}
    )
    assert again.status_code == 409


def test_a_transfer_moves_the_open_contracts_to_the_successor(api: Api) -> None:
    world = api.world
    contract = world.paid_contract(lessons=10, unit=LESSON)
    world.report(contract, 3)
    response = api.post(
        "district_regulator",
        f"{BASE}/transfers",
        {
            "from_institution_id": world.school,
            "to_institution_id": world.advance,
            "reason": "the operator retires",
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["from_institution_id"] == world.school
    assert body["to_institution_id"] == world.advance
    assert body["contracts"] == [{"contract_id": contract, "value_fen": 7 * LESSON}]
    assert body["value_fen"] == 7 * LESSON
    assert body["receipt"] is not None
    assert world.get(Contract, contract).institution_id == world.advance
    school = world.get(Institution, world.school)
    assert school.status is InstitutionStatus.CLOSED
    assert school.successor_id == world.advance
    assert world.escrow(world.advance) == 7 * LESSON
    assert world.escrow(world.school) == 3 * LESSON  # delivered lessons stay with the old escrow
    successor = api.get("district_regulator", f"{BASE}/institutions/{world.advance}").json()
    assert successor["liability_fen"] == 7 * LESSON
    same = api.post(
        "regulator",
        f"{BASE}/transfers",
        {"from_institution_id": world.advance, "to_institution_id": world.advance, "reason": "x"},
    )
    assert same.status_code == 409


def test_a_forced_refund_is_approved_at_once(api: Api) -> None:
    world = api.world
    contract = world.paid_contract(lessons=10, unit=LESSON)
    world.report(contract, 1)
    response = api.post(
        "district_regulator",
        f"{BASE}/contracts/{contract}/force-refund",
        {"lessons": 3, "reason": "lessons cancelled without notice"},
    )
    assert response.status_code == 201, response.text
    refund = response.json()["refund"]
    assert (refund["kind"], refund["status"], refund["lessons"]) == ("forced", "approved", 3)
    assert refund["amount_fen"] == 3 * LESSON
    assert response.json()["receipt"]["seq"] == refund["decided_seq"]
    stored = world.get(Refund, refund["id"])
    assert stored.status is RefundStatus.APPROVED
    assert world.acct(AccountKind.REFUND_PAYABLE) == 3 * LESSON
    assert world.owed(contract) == 6 * LESSON
    everything = api.post(
        "regulator", f"{BASE}/contracts/{contract}/force-refund", {"reason": "course closed"}
    )
    assert everything.status_code == 201
    assert everything.json()["refund"]["lessons"] == 6
    assert world.owed(contract) == 0
    nothing_left = api.post(
        "regulator", f"{BASE}/contracts/{contract}/force-refund", {"reason": "again"}
    )
    assert nothing_left.status_code == 409


def test_a_dispute_is_resolved_for_the_institution_or_for_the_parent(api: Api) -> None:
    world = api.world
    contract = world.paid_contract(lessons=10, unit=LESSON)
    kept, voided = world.report(contract, 2)
    _dispute(world, kept.id)
    _dispute(world, voided.id)

    for_institution = api.post(
        "district_regulator",
        f"{BASE}/lessons/{kept.id}/resolve",
        {"decision": "institution", "note": "attendance sheet signed"},
    )
    assert for_institution.status_code == 200, for_institution.text
    assert for_institution.json()["lesson"]["status"] == "confirmed"
    assert for_institution.json()["lesson"]["confirmed_by"] == "regulator"
    assert world.get(Lesson, kept.id).confirmed_by is ConfirmedBy.REGULATOR
    assert world.acct(AccountKind.RELEASABLE) == LESSON

    for_parent = api.post(
        "regulator",
        f"{BASE}/lessons/{voided.id}/resolve",
        {"decision": "parent", "note": "the teacher was absent"},
    )
    assert for_parent.status_code == 200, for_parent.text
    assert world.get(Lesson, voided.id).status is LessonStatus.VOIDED
    assert world.owed(contract) == 9 * LESSON  # the voided lesson's value is owed again
    assert for_parent.json()["receipt"]["seq"] == world.get(Lesson, voided.id).decided_seq

    twice = api.post(
        "regulator", f"{BASE}/lessons/{kept.id}/resolve", {"decision": "parent", "note": "x"}
    )
    assert twice.status_code == 409
    bad = api.post(
        "regulator", f"{BASE}/lessons/{kept.id}/resolve", {"decision": "maybe", "note": "x"}
    )
    assert bad.status_code == 422


# --- another district -----------------------------------------------------------------------


def test_the_district_regulator_gets_404_for_another_district_everywhere(api: Api) -> None:
    world = api.world
    academy_contract = _academy_contract(world)
    [academy_lesson] = world.report(academy_contract)
    _dispute(world, academy_lesson.id)
    size = _log_size(world)
    missing = api.get("district_regulator", f"{BASE}/institutions/ins_0000000000000000")
    assert missing.status_code == 404

    def same_as_missing(response: Any) -> None:
        assert response.status_code == 404, response.text
        assert response.json()["type"] == missing.json()["type"]
        assert response.json()["title"] == missing.json()["title"]

    who = "district_regulator"
    same_as_missing(api.get(who, f"{BASE}/institutions/{world.academy}"))
    same_as_missing(api.get(who, f"{BASE}/events", institution=world.academy))
    for action in ("freeze", "unfreeze", "wind-down"):
        same_as_missing(
            api.post(who, f"{BASE}/institutions/{world.academy}/{action}", {"reason": "x"})
        )
    for old, new in ((world.academy, world.school), (world.school, world.academy)):
        same_as_missing(
            api.post(
                who,
                f"{BASE}/transfers",
                {"from_institution_id": old, "to_institution_id": new, "reason": "x"},
            )
        )
    same_as_missing(
        api.post(who, f"{BASE}/contracts/{academy_contract}/force-refund", {"reason": "x"})
    )
    same_as_missing(
        api.post(
            who,
            f"{BASE}/lessons/{academy_lesson.id}/resolve",
            {"decision": "parent", "note": "x"},
        )
    )
    assert world.get(Institution, world.academy).status is InstitutionStatus.ACTIVE
    assert world.get(Institution, world.school).status is InstitutionStatus.ACTIVE
    assert world.get(Contract, academy_contract).institution_id == world.academy
    assert world.get(Lesson, academy_lesson.id).status is LessonStatus.DISPUTED
    assert _log_size(world) == size  # nothing was written
    listed = _walk(api, who, f"{BASE}/institutions")
    assert world.academy not in {i["id"] for i in listed}


def test_other_roles_are_refused_and_a_missing_token_is_401(api: Api) -> None:
    world = api.world
    assert api.get(None, f"{BASE}/institutions").status_code == 401
    for who in ("parent", "institution", "bank", "admin"):
        assert api.get(who, f"{BASE}/events").status_code == 403
        path = f"{BASE}/institutions/{world.school}/freeze"
        assert api.post(who, path, {"reason": "x"}).status_code == 403
    assert world.get(Institution, world.school).status is InstitutionStatus.ACTIVE


# --- overdue refunds ------------------------------------------------------------------------


def test_overdue_refunds_appear_after_the_deadline_sweep(api: Api) -> None:
    world = api.world
    contract = world.paid_contract(lessons=10, unit=LESSON)
    world.report(contract)
    refund = world.approve(world.request_refund(contract, 2))
    academy_contract = _academy_contract(world)
    academy_refund = world.do(
        refund_ops.force_refund,
        regulator_id=world.regulator,
        contract_id=academy_contract,
        lessons=None,
        reason="closed",
    )
    assert refund.pay_by is not None
    assert academy_refund.pay_by is not None
    world.set_clock(refund.pay_by - timedelta(seconds=1))
    run_sweeps(world.ledger.sessions, world.ctx)
    assert _walk(api, "regulator", f"{BASE}/refunds/overdue") == []

    world.set_clock(max(refund.pay_by, academy_refund.pay_by))
    assert run_sweeps(world.ledger.sessions, world.ctx).overdue == 2
    everything = _walk(api, "regulator", f"{BASE}/refunds/overdue")
    assert {r["id"] for r in everything} == {refund.id, academy_refund.id}
    assert all(r["status"] == "approved" and r["overdue_seq"] is not None for r in everything)
    district = _walk(api, "district_regulator", f"{BASE}/refunds/overdue")
    assert [r["id"] for r in district] == [refund.id]
    assert district[0]["amount_fen"] == 2 * LESSON
    one_by_one = _walk(api, "regulator", f"{BASE}/refunds/overdue", limit=1)
    assert [r["id"] for r in one_by_one] == [r["id"] for r in everything]
    flagged = _events(api, "district_regulator", type="refund.overdue")
    assert [e["payload"]["refund"] for e in flagged] == [refund.id]


# --- the event log --------------------------------------------------------------------------


def _busy_world(world: World) -> dict[str, str]:
    """Activity in haishu (school), yinzhou (academy) and haidian (beijing)."""
    school = world.paid_contract(lessons=10, unit=LESSON)
    reported = world.report(school, 3)
    world.confirm(reported[0].id)
    _dispute(world, reported[1].id)
    world.approve(world.request_refund(school, 1))
    academy = _academy_contract(world)
    [academy_lesson] = world.report(academy)
    _dispute(world, academy_lesson.id)
    rejected = world.do(
        refund_ops.request_refund,
        parent_id=world.parent,
        contract_id=academy,
        lessons=1,
    )
    world.do(
        refund_ops.reject_refund,
        institution_id=world.academy,
        refund_id=rejected.id,
        reason="the course continues",
    )
    world.contract(world.academy, lessons=5, unit=4_000, class_size=20, subject="maths")
    world.freeze(world.academy)
    world.paid_contract(world.beijing, lessons=5, unit=LESSON)
    return {"school": school, "academy": academy, "academy_lesson": academy_lesson.id}


def test_a_district_regulator_sees_exactly_the_entries_of_its_institutions(api: Api) -> None:
    world = api.world
    _busy_world(world)
    everything = _events(api, "regulator")
    assert [e["seq"] for e in everything] == list(range(_log_size(world)))
    assert everything[0]["type"] == "log.opened"
    assert everything[0]["institutions"] == []
    haishu = {world.school, world.advance}
    expected = [e for e in everything if e["institutions"] and set(e["institutions"]) <= haishu]
    district = _events(api, "district_regulator")
    assert district == expected
    assert {e["type"] for e in district} >= {
        "institution.registered",
        "contract.created",
        "receipt.booked",
        "lesson.reported",
        "lesson.confirmed",
        "lesson.disputed",
        "refund.requested",
        "refund.approved",
    }
    for entry in district:
        text = json.dumps(entry)
        assert world.academy not in text
        assert world.beijing not in text
    academy_types = {e["type"] for e in everything if world.academy in e["institutions"]}
    assert {"lesson.disputed", "refund.rejected", "contract.created"} <= academy_types
    # entries that name no institution resolve through what they refer to
    disputes = {e["payload"]["lesson"]: e for e in everything if e["type"] == "lesson.disputed"}
    academy_lesson = next(
        lesson for lesson in disputes if world.get(Lesson, lesson).institution_id == world.academy
    )
    assert disputes[academy_lesson]["institutions"] == [world.academy]
    [rejection] = [e for e in everything if e["type"] == "refund.rejected"]
    assert rejection["institutions"] == [world.academy]


def test_history_before_a_transfer_stays_with_the_old_district(api: Api) -> None:
    world = api.world
    academy = _academy_contract(world, lessons=6)
    [before] = world.report(academy)
    _dispute(world, before.id, "before the transfer")
    cancelled = world.contract(world.academy, lessons=5, unit=4_000, class_size=20, subject="x")
    world.do(
        contract_ops.cancel_contract,
        parent_id=world.parent,
        contract_id=cancelled,
    )
    moved = api.post(
        "regulator",
        f"{BASE}/transfers",
        {"from_institution_id": world.academy, "to_institution_id": world.school, "reason": "x"},
    )
    assert moved.status_code == 201, moved.text
    assert world.get(Contract, academy).institution_id == world.school
    [after] = world.report(academy)
    _dispute(world, after.id, "after the transfer")

    everything = _events(api, "regulator")
    disputes = {e["payload"]["reason"]: e for e in everything if e["type"] == "lesson.disputed"}
    assert disputes["before the transfer"]["institutions"] == [world.academy]
    assert disputes["after the transfer"]["institutions"] == [world.school]
    [cancel] = [e for e in everything if e["type"] == "contract.cancelled"]
    assert cancel["institutions"] == [world.academy]
    [transferred] = [e for e in everything if e["type"] == "contract.transferred"]
    assert set(transferred["institutions"]) == {world.academy, world.school}

    district = _events(api, "district_regulator")
    seen = {e["seq"] for e in district}
    assert disputes["after the transfer"]["seq"] in seen
    assert disputes["before the transfer"]["seq"] not in seen
    assert transferred["seq"] not in seen  # it names a yinzhou institution
    assert all(world.academy not in json.dumps(e) for e in district)
    school_only = _events(api, "district_regulator", institution=world.school)
    assert disputes["after the transfer"]["seq"] in {e["seq"] for e in school_only}


def test_events_filtered_by_type_institution_and_time(api: Api) -> None:
    world = api.world
    ids = _busy_world(world)
    everything = _events(api, "regulator")

    exact = _events(api, "regulator", type="lesson.disputed")
    assert exact == [e for e in everything if e["type"] == "lesson.disputed"]
    assert len(exact) == 2
    family = _events(api, "regulator", type="lesson.")
    assert family == [e for e in everything if e["type"].startswith("lesson.")]
    assert {e["type"] for e in family} == {"lesson.reported", "lesson.confirmed", "lesson.disputed"}
    assert _events(api, "regulator", type="lesso_.") == []  # _ is not a wildcard
    assert _events(api, "regulator", type="lesson") == []  # no dot: an exact type

    school = _events(api, "regulator", institution=world.school)
    assert school == [e for e in everything if world.school in e["institutions"]]
    assert {e["type"] for e in school} >= {"contract.created", "lesson.disputed"}
    academy_disputes = _events(api, "regulator", institution=world.academy, type="lesson.disputed")
    assert [e["payload"]["lesson"] for e in academy_disputes] == [ids["academy_lesson"]]
    district_school = _events(api, "district_regulator", institution=world.school, type="refund.")
    assert district_school == [e for e in school if e["type"].startswith("refund.")]
    assert len(district_school) == 2  # requested, approved

    start = world.now()
    world.advance_clock(hours=1)
    later = world.now()
    world.freeze(world.school)
    world.advance_clock(hours=1)
    end = world.now()
    world.freeze(world.beijing)
    since = _events(api, "regulator", since=later.isoformat())
    assert [e["type"] for e in since] == ["institution.frozen", "institution.frozen"]
    window = _events(api, "regulator", since=later.isoformat(), until=end.isoformat())
    assert [e["payload"]["institution"] for e in window] == [world.school]
    before = _events(api, "regulator", until=later.isoformat())
    assert [e["seq"] for e in before] == [e["seq"] for e in everything]
    assert all(e["time"] <= start.isoformat().replace("+00:00", "Z") for e in before)
    shanghai = (later + timedelta(hours=8)).isoformat().replace("+00:00", "+08:00")
    assert _events(api, "regulator", since=shanghai) == since

    for params in (
        {"since": end.isoformat(), "until": later.isoformat()},
        {"since": "2026-09-01T09:00:00"},  # no time zone
        {"since": "1900-01-01T00:00:00Z"},
        {"cursor": "not-a-cursor"},
        {"type": "Lesson."},
        {"institution": "../x"},
    ):
        response = api.get("regulator", f"{BASE}/events", **params)
        assert response.status_code == 422, (params, response.text)
    other_list = api.get("regulator", f"{BASE}/institutions", limit=1).json()["next_cursor"]
    assert api.get("regulator", f"{BASE}/events", cursor=other_list).status_code == 422


@pytest.mark.parametrize("path", ["/institutions", "/refunds/overdue", "/events"])
def test_a_forged_cursor_is_refused_not_a_500(api: Api, path: str) -> None:
    for forged in (encode(10**30, "log"), encode(-(10**30), "log"), "not base64!", "W10"):
        response = api.get("regulator", BASE + path, cursor=forged)
        assert response.status_code == 422, (forged, response.text)


def test_each_item_is_the_decoded_entry_with_its_hash(api: Api) -> None:
    world = api.world
    world.paid_contract(lessons=2, unit=LESSON)
    [booked] = _events(api, "regulator", type="receipt.booked")
    entry = world.get(LogEntry, booked["seq"])
    body = json.loads(entry.body)
    assert booked["payload"] == body["payload"]
    assert booked["postings"] == body["postings"]
    assert booked["hash"] == entry.hash.hex()
    assert (booked["type"], booked["actor"]) == (entry.type, entry.actor)
    assert {p["account"] for p in booked["postings"]} >= {
        institution_account(AccountKind.ESCROW, world.school)
    }


def test_paging_through_the_log_sees_every_entry_once_while_it_grows(api: Api) -> None:
    world = api.world
    contract = world.paid_contract(lessons=30, unit=LESSON)
    academy = _academy_contract(world, lessons=10)
    readers = ("regulator", "district_regulator")
    seen: dict[str, list[int]] = {who: [] for who in readers}
    cursor: dict[str, str | None] = dict.fromkeys(readers)
    at_end = dict.fromkeys(readers, False)
    appended = 0
    while appended < 8 or not all(at_end.values()):
        for who in readers:
            params: dict[str, Any] = {"limit": 4}
            if cursor[who] is not None:
                params["cursor"] = cursor[who]
            page = api.get(who, f"{BASE}/events", **params).json()
            seen[who] += [e["seq"] for e in page["items"]]
            at_end[who] = page["next_cursor"] is None
            # at the end, a reader polls again later from where it stopped
            cursor[who] = page["resume_cursor"] if at_end[who] else page["next_cursor"]
            if not at_end[who]:
                assert page["resume_cursor"] == page["next_cursor"]
        if appended < 8:  # the log grows between pages, in both districts
            world.report(contract)
            world.report(academy)
            appended += 1
    assert seen["regulator"] == list(range(_log_size(world)))
    district = _events(api, "district_regulator")
    assert seen["district_regulator"] == [e["seq"] for e in district]
    reported = [e for e in district if e["type"] == "lesson.reported"]
    assert len(reported) == 8
    assert all(e["institutions"] == [world.school] for e in reported)
    idle = api.get("regulator", f"{BASE}/events", cursor=cursor["regulator"]).json()
    assert idle["items"] == []
    assert idle["next_cursor"] is None
    assert idle["resume_cursor"] == cursor["regulator"]


def test_one_request_scans_a_bounded_part_of_the_log(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = api.world
    _busy_world(world)
    complete = _events(api, "district_regulator")
    monkeypatch.setattr(log_view, "SCAN_LIMIT", 4)
    monkeypatch.setattr(log_view, "CHUNK", 3)
    first = api.get("district_regulator", f"{BASE}/events").json()
    assert first["items"] == []  # seqs 0-3: the genesis, banks and regulators
    assert first["next_cursor"] is not None
    second = api.get("district_regulator", f"{BASE}/events", cursor=first["next_cursor"]).json()
    assert [e["seq"] for e in second["items"]] == [5]  # of 4-7, only the school's registration
    pages = 0
    cursor = None
    items: list[dict[str, Any]] = []
    while True:
        params = {} if cursor is None else {"cursor": cursor}
        page = api.get("district_regulator", f"{BASE}/events", **params).json()
        assert len(page["items"]) <= 4
        items += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert items == complete
    assert pages >= _log_size(world) // 4


def test_the_resolver_leaves_unknown_references_unresolved(api: Api) -> None:
    world = api.world
    with world.read() as session:
        rows = list(session.scalars(select(LogEntry).order_by(LogEntry.seq).limit(3)))
        decoded = Resolver(session).decode(rows)
    assert [e.institutions for e in decoded] == [frozenset()] * 3
    assert log_view.named_institutions(
        "institution.frozen", {"institution": "ins_a", "from": "active"}, []
    ) == {"ins_a"}
    assert log_view.named_institutions(
        "transfer.approved", {"from": "ins_a", "to": "ins_b"}, []
    ) == {"ins_a", "ins_b"}
    assert log_view.named_institutions(
        "institution.settlement_account_changed",
        {"institution": "ins_a", "from": "SET-1", "to": "SET-2"},
        [{"account": "contract:ctr_x", "amount": 1, "currency": "CNY"}],
    ) == {"ins_a"}

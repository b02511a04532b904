"""The authorization matrix: every operation of the OpenAPI document, called by every role.

For each operation: no token answers 401; each role it is not meant for answers 403; the role it
is meant for, pointed at another tenant's resource, answers 404 with the same document as a
missing one; and pointed at its own, passes authorization (2xx for reads). The operations are read
from the app's own document, so a new endpoint without an entry here fails the test instead of
going unchecked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ledger.entities import Contract, Institution, Lesson, Payout, Refund, SettlementBatch
from ledger.escrow import lessons, refunds
from settlement import reconcile
from tests.api.conftest import Api

PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/v1/audit/public-key")}
PUBLIC.add(("GET", "/v1/audit/checkpoints/latest"))
ROLES = ("parent", "institution", "bank", "regulator", "admin")
AUDIENCE = {
    "/v1/parent/": ("parent",),
    "/v1/institution/": ("institution",),
    "/v1/bank/": ("bank",),
    "/v1/regulator/": ("regulator",),
    "/v1/admin/": ("admin",),
    "/v1/audit/proofs/": ("regulator", "bank"),
    "/v1/audit/": ("regulator", "bank", "admin"),
    "/v1/witnesses": ("bank", "regulator", "admin"),  # registering: banks and regulators only
}
# Operations whose method narrows the audience of their path.
METHOD_AUDIENCE = {("POST", "/v1/audit/checkpoints"): ("regulator",)}
# Who, of the allowed role, is the outsider to the "foreign" resources built below.
OUTSIDER = {
    "parent": "parent",  # foreign = other_parent's
    "institution": "institution",  # foreign = the academy's; the caller is the school
    "bank": "other_bank",  # foreign = held by world.bank
    "regulator": "district_regulator",  # foreign = the academy's, in another district
    "admin": "admin",
}
SHANGHAI = ZoneInfo("Asia/Shanghai")
MATRIX_KEY = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="  # RFC 8032 test 1 Ed25519 public key
# The same key as a C2SP cosigner (0x04) verifier key, for the witness endpoints.
WITNESS_KEY = (
    "witness.bank-of-ningbo.example/w1+57862104+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"
)


@dataclass
class Ids:
    contract: str
    lesson: str
    refund: str
    batch: str
    payout: str
    institution: str
    student: str
    statement: str = ""
    break_id: str = ""


def _build(api: Api, institution: str, parent: str, student: str) -> Ids:
    """A paid contract with a settled lesson, a disputed lesson and an approved refund."""
    world = api.world
    contract = world.paid_contract(
        institution, lessons=10, unit=4_000, class_size=20, parent=parent, student=student
    )
    settled, disputed = world.report(contract, 2)
    world.confirm(settled.id, parent)
    world.do(lessons.dispute_lesson, parent_id=parent, lesson_id=disputed.id, reason="absent")
    refund = world.do(
        refunds.request_refund, parent_id=parent, contract_id=contract, lessons=2, reason="moving"
    )
    world.approve(refund)
    return Ids(contract, disputed.id, refund.id, "", "", institution, student)


@pytest.fixture
def scene(api: Api) -> dict[str, Ids]:
    world = api.world
    own = _build(api, world.school, world.parent, world.student)
    foreign = _build(api, world.academy, world.other_parent, world.other_student)
    world.set_clock(datetime(2026, 9, 2, 2, 0, tzinfo=SHANGHAI))
    world.settle()
    with world.read() as session:
        for ids in (own, foreign):
            batch = session.query(SettlementBatch).filter_by(institution_id=ids.institution).one()
            ids.batch = batch.id
            ids.payout = session.query(Payout).filter_by(batch_id=batch.id).one().id
            assert session.get(Lesson, ids.lesson) is not None
            assert session.get(Refund, ids.refund) is not None
    for ids in (own, foreign):  # a statement of 1 Sep with breaks, for each institution
        account = world.get(Institution, ids.institution).escrow_account
        csv = (
            "account,currency,booking_date,direction,amount,bank_reference,end_to_end_id,"
            f"remittance\n{account},CNY,2026-09-01,OPBD,0,,,\n"
            f"{account},CNY,2026-09-01,CRDT,1.00,M-S1,,\n{account},CNY,2026-09-01,CLBD,1.00,,,\n"
        )
        imported = world.do(reconcile.import_statement, bank_id=world.bank, data=csv.encode())
        ids.statement = imported.statement.id
        with world.read() as session:
            ids.break_id = reconcile.report(session, imported.statement).breaks[0].found.id
    return {"own": own, "foreign": foreign}


def _witness_id(api: Api) -> str:
    """world.bank's witness key (registered on first use): the bank's own, other_bank's foreign."""
    from sqlalchemy import select

    from ledger import witnesses

    world = api.world
    query = select(witnesses.WitnessKey.id).where(witnesses.WitnessKey.holder_id == world.bank)
    with world.read() as session:
        found = session.scalars(query).first()
    if found is None:
        world.do(
            witnesses.register_key,
            holder_role="bank",
            holder_id=world.bank,
            verifier_key=WITNESS_KEY,
            url="https://witness.matrix.example",
            actor="admin:tests",
        )
        with world.read() as session:
            found = session.scalars(query).one()
    return found


def _alert_id(api: Api, ids: Ids) -> str:
    """The tenant's risk alert for 1 September: both scenes refund a quarter of what they owe
    (refund_share + refund_surge: C for the school, D for the academic academy)."""
    from datetime import date

    from sqlalchemy import select

    from ledger.risk import RiskAlert, grade_all

    world = api.world
    grade_all(world.ledger.sessions, world.ctx, date(2026, 9, 1))
    with world.read() as session:
        found = session.scalars(
            select(RiskAlert.id).where(RiskAlert.institution_id == ids.institution)
        ).first()
    assert found is not None, "the scene no longer raises a risk alert: see ledger/policies"
    return found


def _path(template: str, ids: Ids, api: Api) -> str:
    values = {
        "contract_id": ids.contract,
        "lesson_id": ids.lesson,
        "refund_id": ids.refund,
        "batch_id": ids.batch,
        "payout_id": ids.payout,
        "institution_id": ids.institution,
        "token_id": "tok_0000000000000000",
        "statement_id": ids.statement,
        "break_id": ids.break_id,
    }

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "witness_id":
            return _witness_id(api)
        if name == "alert_id":
            return _alert_id(api, ids)
        if name == "seq":  # an entry of the family's own: the contract's creation
            return str(api.world.get(Contract, ids.contract).created_seq)
        assert name in values, f"no value for path parameter {name}: add it to the matrix"
        return values[name]

    return re.sub(r"\{([a-z_]+)\}", fill, template)


def _body(method: str, template: str, ids: Ids, api: Api) -> Any:
    """A body that passes validation, naming the tenant's resources where the body names any."""
    world = api.world
    bodies: dict[str, Any] = {
        "/v1/parent/students": {"name": "小明"},
        "/v1/parent/contracts": {
            "institution_id": ids.institution,
            "student_id": ids.student,
            "subject": "art",
            "course_name": "drawing",
            "lessons": 10,
            "unit_price_fen": 4_000,
            "start_date": "2026-09-01",
            "end_date": "2026-11-20",
            "class_size": 20,
            "lesson_minutes": 45,
        },
        "/v1/parent/contracts/{contract_id}/refunds": {"lessons": 1, "reason": "r"},
        "/v1/parent/lessons/{lesson_id}/dispute": {"reason": "not given"},
        "/v1/institution/lessons": {
            "contract_id": ids.contract,
            "ref": "M-1",
            "delivered_at": "2026-09-01T08:00:00+08:00",
            "teacher_id": "t1",
        },
        "/v1/institution/lessons/batch": {
            "lessons": [
                {
                    "contract_id": ids.contract,
                    "ref": "M-2",
                    "delivered_at": "2026-09-01T08:00:00+08:00",
                    "teacher_id": "t1",
                }
            ]
        },
        "/v1/institution/refunds/{refund_id}/reject": {"answer": "no"},
        "/v1/institution/keys": {"public_key": MATRIX_KEY},
        "/v1/institution/settlement-account": {"account": "SET-NEW"},
        "/v1/bank/receipts": {
            "contract_id": ids.contract,
            "amount_fen": 40_000,
            "bank_reference": "M-R1",
            "payer": "parent",
        },
        "/v1/bank/receipts/batch": {
            "receipts": [
                {
                    "contract_id": ids.contract,
                    "amount_fen": 40_000,
                    "bank_reference": "M-R2",
                    "payer": "parent",
                }
            ]
        },
        "/v1/bank/keys": {"public_key": MATRIX_KEY},
        "/v1/bank/risk-deposits": {
            "institution_id": ids.institution,
            "amount_fen": 100,
            "bank_reference": "M-D1",
        },
        "/v1/bank/payouts/{payout_id}/executed": {"bank_reference": "M-P1"},
        "/v1/bank/payouts/{payout_id}/failed": {"bank_reference": "M-P2", "reason": "closed"},
        "/v1/bank/refunds/{refund_id}/paid": {"bank_reference": "M-F1"},
        "/v1/bank/refunds/{refund_id}/failed": {"bank_reference": "M-F2", "reason": "closed"},
        "/v1/regulator/institutions/{institution_id}/freeze": {"reason": "audit"},
        "/v1/regulator/institutions/{institution_id}/unfreeze": {"reason": "audit"},
        "/v1/regulator/institutions/{institution_id}/wind-down": {"reason": "closing"},
        "/v1/regulator/transfers": {
            "from_institution_id": ids.institution,
            "to_institution_id": world.advance,
            "reason": "merger",
        },
        "/v1/regulator/contracts/{contract_id}/force-refund": {"reason": "complaint"},
        "/v1/regulator/lessons/{lesson_id}/resolve": {"decision": "parent", "note": "absent"},
        "/v1/regulator/alerts/{alert_id}/acknowledge": {"note": "inspection booked"},
        "/v1/admin/banks": {"name": "Matrix Bank"},
        "/v1/admin/regulators": {"name": "Matrix bureau", "jurisdiction": "beilun"},
        "/v1/admin/institutions": {
            "name": "Matrix school",
            "licence": "non_academic",
            "district": "beilun",
            "bank_id": world.bank,
            "escrow_account": "ESC-M",
            "settlement_account": "SET-M",
            "is_new": False,
        },
        "/v1/admin/parents": {"name": "陈"},
        "/v1/admin/tokens": {"role": "admin", "principal_id": "matrix"},
        "/v1/bank/breaks/{break_id}/resolve": {"note": "matrix"},
        "/v1/regulator/breaks/{break_id}/resolve": {"note": "matrix"},
        "/v1/witnesses": {"verifier_key": WITNESS_KEY, "url": "https://witness.matrix.example"},
    }
    if method == "GET":
        return None
    if template in bodies:
        return bodies[template]
    return None


def _query(template: str, ids: Ids) -> dict[str, str]:
    if template == "/v1/bank/payouts":
        return {"open": "true"}
    if template == "/v1/parent/contracts":
        return {"student_id": ids.student}
    if template == "/v1/audit/proofs/consistency":
        return {"old": "1", "new": "2"}
    if template == "/v1/audit/proofs/inclusion":
        return {"seq": "0", "size": "1"}
    return {}


def _operations(api: Api) -> list[tuple[str, str]]:
    document = api.client.get("/openapi.json").json()
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post")
    ]


def _call(
    api: Api, who: str | None, method: str, path: str, body: Any, query: dict[str, str]
) -> Any:
    if method == "GET":
        return api.client.get(path, headers=api.headers(who), params=query)
    return api.post(who, path, body)


def _audience(path: str) -> tuple[str, ...]:
    for prefix, roles in AUDIENCE.items():
        if path.startswith(prefix):
            return roles
    raise AssertionError(f"{path} belongs to no audience: add it to the matrix")


def test_every_operation_answers_401_without_a_token_and_403_to_other_roles(
    api: Api, scene: dict[str, Ids]
) -> None:
    checked = 0
    for method, template in _operations(api):
        if (method, template) in PUBLIC:
            continue
        ids = scene["own"]
        path = _path(template, ids, api)
        body = _body(method, template, ids, api)
        query = _query(template, ids)
        anonymous = _call(api, None, method, path, body, query)
        assert anonymous.status_code == 401, (method, template, anonymous.text)
        allowed = METHOD_AUDIENCE.get((method, template)) or _audience(template)
        for role in ROLES:
            if role in allowed:
                continue
            response = _call(api, role, method, path, body, query)
            assert response.status_code == 403, (method, template, role, response.text)
            assert response.headers["content-type"] == "application/problem+json"
        checked += 1
    assert checked >= 50


def _with_id_param(template: str, method: str) -> bool:
    return "{" in template or template in (
        "/v1/parent/contracts",
        "/v1/institution/lessons",
        "/v1/institution/lessons/batch",
        "/v1/bank/receipts",
        "/v1/bank/receipts/batch",
        "/v1/bank/risk-deposits",
        "/v1/regulator/transfers",
    )


def test_another_tenants_resources_answer_404_like_missing_ones(
    api: Api, scene: dict[str, Ids]
) -> None:
    checked = 0
    for method, template in _operations(api):
        if (method, template) in PUBLIC or not _with_id_param(template, method):
            continue
        if method == "GET" and template == "/v1/parent/contracts":
            pass  # the student filter names a student
        elif method == "GET" and "{" not in template:
            continue
        for role in _audience(template)[:1]:
            who = OUTSIDER[role]
            ids = scene["foreign"]
            response = _call(
                api,
                who,
                method,
                _path(template, ids, api),
                _body(method, template, ids, api),
                _query(template, ids),
            )
            assert response.status_code == 404, (method, template, who, response.text)
            assert response.json()["type"].endswith("/not-found")
            checked += 1
    assert checked >= 25


def test_the_right_role_on_its_own_resources_gets_through(api: Api, scene: dict[str, Ids]) -> None:
    """Reads answer 200. Writes pass authorization; the state may still refuse them (409/422),
    as the lesson and refund used here are in one state for every action."""
    for method, template in _operations(api):
        if (method, template) in PUBLIC:
            continue
        role = _audience(template)[0]
        if template.startswith("/v1/admin/tokens/"):
            continue  # revoking needs a real token id; tests/api/test_access.py does it
        ids = scene["own"]
        response = _call(
            api,
            role,
            method,
            _path(template, ids, api),
            _body(method, template, ids, api),
            _query(template, ids),
        )
        if method == "GET":
            assert response.status_code == 200, (method, template, response.text)
        elif template.endswith("/decline-transfer"):
            # The contract was never transferred: the transfer is what is missing.
            assert response.json()["detail"].endswith("was not transferred")
        else:
            assert response.status_code not in (401, 403, 404, 500), (
                method,
                template,
                response.text,
            )

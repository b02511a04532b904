"""The whole lifecycle through HTTP alone: onboarding, contract, receipt, lessons, confirmation,
settlement, payout, refund and verification, with every receipt checked against the public key.

Only the nightly settlement run is not an HTTP call: it is the worker's job (or `escrow settle`).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from api.writes import receipt_message
from tests.api.conftest import Api

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _ok(response: Any, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_family_a_school_and_a_bank_through_http(api: Api) -> None:
    public = Ed25519PublicKey.from_public_bytes(
        base64.b64decode(api.client.get("/v1/audit/public-key").json()["public_key"])
    )
    receipts: list[dict[str, Any]] = []

    def keep(body: dict[str, Any]) -> dict[str, Any]:
        receipts.append(body["receipt"])
        return body

    # Onboarding by the operator's administrator: a bank, a school, a family, and their tokens.
    bank = _ok(api.post("admin", "/v1/admin/banks", {"name": "Ningbo Custody"}), 201)["id"]
    school = _ok(
        api.post(
            "admin",
            "/v1/admin/institutions",
            {
                "name": "星河艺术中心",
                "licence": "non_academic",
                "district": "haishu",
                "bank_id": bank,
                "escrow_account": "ESC-L1",
                "settlement_account": "SET-L1",
                "is_new": False,
            },
        ),
        201,
    )["id"]
    parent = _ok(api.post("admin", "/v1/admin/parents", {"name": "周敏"}), 201)["id"]
    for who, role, principal in (
        ("p", "parent", parent),
        ("s", "institution", school),
        ("b", "bank", bank),
    ):
        issued = _ok(
            api.post("admin", "/v1/admin/tokens", {"role": role, "principal_id": principal}), 201
        )
        api.tokens[who] = issued["token"]

    # The parent registers the child and signs a contract: 10 lessons at ¥150.
    student = _ok(api.post("p", "/v1/parent/students", {"name": "周小雨"}), 201)["id"]
    contract = _ok(
        api.post(
            "p",
            "/v1/parent/contracts",
            {
                "institution_id": school,
                "student_id": student,
                "subject": "piano",
                "course_name": "Piano for beginners",
                "lessons": 10,
                "unit_price_fen": 15_000,
                "start_date": "2026-09-01",
                "end_date": "2026-11-20",
                "lesson_minutes": 45,
            },
        ),
        201,
    )
    assert contract["total_fen"] == 150_000

    # The custody bank reports the payment into escrow.
    keep(
        _ok(
            api.post(
                "b",
                "/v1/bank/receipts",
                {
                    "contract_id": contract["id"],
                    "amount_fen": 150_000,
                    "bank_reference": "NB-0001",
                    "payer": "parent",
                },
            ),
            201,
        )
    )
    escrow = _ok(api.get("b", f"/v1/bank/institutions/{school}"))
    assert escrow["escrow_fen"] == 150_000

    # Two lessons on 1 September; the parent confirms one, disputes nothing, the other waits.
    reported = keep(
        _ok(
            api.post(
                "s",
                "/v1/institution/lessons/batch",
                {
                    "lessons": [
                        {
                            "contract_id": contract["id"],
                            "ref": ref,
                            "delivered_at": "2026-09-01T08:30:00+08:00",
                            "teacher_id": "t-zhao",
                        }
                        for ref in ("P-1", "P-2")
                    ]
                },
            ),
            201,
        )
    )
    first, second = (lesson["id"] for lesson in reported["lessons"])
    keep(_ok(api.post("p", f"/v1/parent/lessons/{first}/confirm")))
    keep(_ok(api.post("p", f"/v1/parent/lessons/{second}/confirm")))

    # The nightly run settles 1 September; the bank pays the instruction.
    api.world.set_clock(datetime(2026, 9, 2, 2, 0, tzinfo=SHANGHAI))
    api.world.settle()
    file = _ok(api.get("b", "/v1/bank/payouts", date="2026-09-02"))
    assert file["count"] == 1
    assert file["total_fen"] == 30_000
    payout = file["payouts"][0]["end_to_end_id"]
    keep(_ok(api.post("b", f"/v1/bank/payouts/{payout}/executed", {"bank_reference": "NB-P1"})))
    settlements = _ok(api.get("s", "/v1/institution/settlements"))["items"]
    assert [s["gross_fen"] for s in settlements] == [30_000]

    # The family moves away: a refund of the 8 remaining lessons, approved and paid.
    refund = keep(
        _ok(
            api.post("p", f"/v1/parent/contracts/{contract['id']}/refunds", {"reason": "moving"}),
            201,
        )
    )
    approved = keep(_ok(api.post("s", f"/v1/institution/refunds/{refund['id']}/approve")))
    assert approved["refund"]["amount_fen"] == 120_000
    keep(_ok(api.post("b", f"/v1/bank/refunds/{refund['id']}/paid", {"bank_reference": "NB-R1"})))

    # Everything that came in went out: 30,000 to the school, 120,000 back to the family.
    assert _ok(api.get("b", f"/v1/bank/institutions/{school}"))["escrow_fen"] == 0
    detail = _ok(api.get("p", f"/v1/parent/contracts/{contract['id']}"))
    assert {lesson["status"] for lesson in detail["lessons"]} == {"confirmed"}

    # The regulator verifies the whole chain, and every receipt verifies offline.
    report = _ok(api.get("regulator", "/v1/audit/verify"))
    assert report["ok"] is True
    assert len(receipts) == 8
    for receipt in receipts:
        message = receipt_message(receipt["origin"], receipt["seq"], receipt["hash"])
        public.verify(base64.b64decode(receipt["signature"]), message)
    assert [r["seq"] for r in receipts] == sorted(r["seq"] for r in receipts)

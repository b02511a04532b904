"""Tokens, roles, idempotency, receipts and errors: what every endpoint shares."""

from __future__ import annotations

import base64
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from typer.testing import CliRunner

from api.cli import app
from api.writes import receipt_message
from ledger.access import ApiToken, IdempotencyRecord, Role, create_token, token_hash
from ledger.entities import Bank
from ledger.models import LogEntry
from tests.api.conftest import Api
from tests.api.test_cli_settlement import _env

PROBLEM = "application/problem+json"


def _count(api: Api, model: type) -> int:
    with api.world.read() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_missing_bad_expired_and_revoked_tokens_answer_401(api: Api) -> None:
    assert api.get(None, "/v1/admin/tokens").status_code == 401
    bad = api.client.get("/v1/admin/tokens", headers={"Authorization": "Bearer esc_nope"})
    assert bad.status_code == 401
    assert bad.headers["content-type"] == PROBLEM
    assert bad.json()["type"].endswith("/unauthorized")
    assert bad.headers["www-authenticate"].startswith("Bearer")
    basic = api.client.get("/v1/admin/tokens", headers={"Authorization": "Basic YTpi"})
    assert basic.status_code == 401

    _, short = api.world.do(
        create_token,
        role="admin",
        principal_id="temp",
        actor="admin:tests",
        expires_in=timedelta(hours=1),
    )
    assert api.client.get(
        "/v1/admin/tokens", headers={"Authorization": f"Bearer {short}"}
    ).is_success
    api.world.advance_clock(hours=1)
    expired = api.client.get("/v1/admin/tokens", headers={"Authorization": f"Bearer {short}"})
    assert expired.status_code == 401

    listed = api.get("admin", "/v1/admin/tokens", limit=500).json()["items"]
    parent_token = next(t for t in listed if t["principal_id"] == api.world.parent)
    assert api.get("parent", "/v1/parent/contracts").status_code == 200
    revoked = api.post("admin", f"/v1/admin/tokens/{parent_token['id']}/revoke")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert api.get("parent", "/v1/parent/contracts").status_code == 401


def test_a_role_calling_another_roles_endpoint_gets_403(api: Api) -> None:
    response = api.get("parent", "/v1/admin/tokens")
    assert response.status_code == 403
    assert response.json()["type"].endswith("/forbidden")
    assert "admin" in response.json()["detail"]
    assert api.post("bank", "/v1/admin/banks", {"name": "x"}).status_code == 403


def test_tokens_are_stored_only_as_hashes_and_their_issue_is_logged(api: Api) -> None:
    issued = api.post(
        "admin",
        "/v1/admin/tokens",
        {"role": "bank", "principal_id": api.world.bank, "label": "treasury"},
        key="issue-1",
    )
    assert issued.status_code == 201
    secret = issued.json()["token"]
    assert secret.startswith("esc_")
    assert len(secret) == 47
    with api.world.read() as session:
        row = session.get(ApiToken, issued.json()["id"])
        assert row is not None
        assert row.token_hash == token_hash(secret)
        stored = [r.body for r in session.scalars(select(IdempotencyRecord))]
        types = list(session.scalars(select(LogEntry.type).where(LogEntry.seq == row.created_seq)))
    assert types == ["token.created"]
    assert all(secret.encode() not in body for body in stored)
    # A replay answers the same token metadata but never the secret again.
    replay = api.post(
        "admin",
        "/v1/admin/tokens",
        {"role": "bank", "principal_id": api.world.bank, "label": "treasury"},
        key="issue-1",
    )
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == issued.json()["id"]
    assert replay.json()["token"] is None
    works = api.client.get("/v1/bank/institutions", headers={"Authorization": f"Bearer {secret}"})
    assert works.status_code == 200


def test_tokens_for_unknown_parties_are_refused(api: Api) -> None:
    response = api.post(
        "admin", "/v1/admin/tokens", {"role": "parent", "principal_id": "par_0000000000000000"}
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    bad_role = api.post("admin", "/v1/admin/tokens", {"role": "king", "principal_id": "x"})
    assert bad_role.status_code == 422
    assert bad_role.json()["errors"][0]["field"] == "body.role"


def test_admin_registers_parties(api: Api) -> None:
    bank = api.post("admin", "/v1/admin/banks", {"name": "Bank of Haishu"})
    assert bank.status_code == 201
    regulator = api.post(
        "admin", "/v1/admin/regulators", {"name": "Beilun bureau", "jurisdiction": "beilun"}
    )
    assert regulator.status_code == 201
    institution = api.post(
        "admin",
        "/v1/admin/institutions",
        {
            "name": "海曙钢琴",
            "licence": "non_academic",
            "district": "beilun",
            "bank_id": bank.json()["id"],
            "escrow_account": "ESC-9",
            "settlement_account": "SET-9",
            "is_new": True,
        },
    )
    assert institution.status_code == 201, institution.text
    parent = api.post("admin", "/v1/admin/parents", {"name": "陈静", "phone": "13900000000"})
    assert parent.status_code == 201
    with api.world.read() as session:
        assert session.get(Bank, bank.json()["id"]) is not None
        entry = session.get(LogEntry, parent.json()["seq"])
        assert entry is not None
        assert entry.actor == "admin:ops"
        assert b"13900000000" not in entry.body  # personal data stays out of the log
    unknown_bank = api.post(
        "admin",
        "/v1/admin/institutions",
        {
            "name": "x",
            "licence": "non_academic",
            "district": "beilun",
            "bank_id": "bnk_0000000000000000",
            "escrow_account": "E",
            "settlement_account": "S",
            "is_new": False,
        },
    )
    assert unknown_bank.status_code == 404


def test_idempotency_same_key_same_body_replays_other_body_conflicts(api: Api) -> None:
    before = _count(api, Bank)
    first = api.post("admin", "/v1/admin/banks", {"name": "Replay Bank"}, key="k-1")
    again = api.post("admin", "/v1/admin/banks", {"name": "Replay Bank"}, key="k-1")
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert _count(api, Bank) == before + 1
    other = api.post("admin", "/v1/admin/banks", {"name": "Another Bank"}, key="k-1")
    assert other.status_code == 409
    assert other.json()["type"].endswith("/idempotency-key-reused")
    # The same key on another endpoint is another request too.
    elsewhere = api.post("admin", "/v1/admin/parents", {"name": "Replay Bank"}, key="k-1")
    assert elsewhere.status_code == 409
    # Keys are per principal: another admin's k-1 is its own.
    api.token("admin2", Role.ADMIN, "ops2")
    theirs = api.post("admin2", "/v1/admin/banks", {"name": "Another Bank"}, key="k-1")
    assert theirs.status_code == 201
    assert _count(api, Bank) == before + 2


def test_a_missing_or_malformed_idempotency_key_is_a_validation_error(api: Api) -> None:
    response = api.client.post(
        "/v1/admin/banks", headers=api.headers("admin"), json={"name": "No Key Bank"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "header.Idempotency-Key"
    spaced = api.client.post(
        "/v1/admin/banks", headers=api.headers("admin", "has space"), json={"name": "x"}
    )
    assert spaced.status_code == 422


def test_a_refused_request_stores_nothing_and_may_be_retried_with_its_key(api: Api) -> None:
    records = _count(api, IdempotencyRecord)
    body = {"name": "x", "jurisdiction": "bad district!"}
    refused = api.post("admin", "/v1/admin/regulators", body, key="r-1")
    assert refused.status_code == 422
    assert _count(api, IdempotencyRecord) == records
    fixed = api.post(
        "admin", "/v1/admin/regulators", {"name": "x", "jurisdiction": "beilun"}, key="r-1"
    )
    assert fixed.status_code == 201


def test_concurrent_duplicates_with_one_key_have_exactly_one_effect(api: Api) -> None:
    before = _count(api, Bank)
    key = str(uuid.uuid4())
    answers: list[tuple[int, str]] = []
    barrier = threading.Barrier(8)

    def call() -> None:
        barrier.wait()
        response = api.post("admin", "/v1/admin/banks", {"name": "Racing Bank"}, key=key)
        answers.append((response.status_code, response.json()["id"]))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 8
    assert {status for status, _ in answers} == {201}
    assert len({ident for _, ident in answers}) == 1
    assert _count(api, Bank) == before + 1


def test_receipts_verify_with_the_published_key(api: Api) -> None:
    contract = api.world.contract(lessons=10)
    from ledger.entities import Contract

    total = api.world.get(Contract, contract).total_fen
    response = api.post(
        "bank",
        "/v1/bank/receipts",
        {
            "contract_id": contract,
            "amount_fen": total,
            "bank_reference": "RCPT-1",
            "payer": "parent",
        },
    )
    assert response.status_code in (200, 201), response.text
    receipt = response.json()["receipt"]
    key = api.client.get("/v1/audit/public-key").json()
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"]))
    message = receipt_message(receipt["origin"], receipt["seq"], receipt["hash"])
    public.verify(base64.b64decode(receipt["signature"]), message)  # raises if forged
    assert receipt["key_id"] == key["key_id"]
    with api.world.read() as session:
        entry = session.get(LogEntry, receipt["seq"])
        assert entry is not None
        assert entry.hash.hex() == receipt["hash"]
        assert entry.type == "receipt.booked" or entry.type.startswith("receipt")


def test_unknown_routes_bad_methods_and_large_bodies_answer_problems(api: Api) -> None:
    missing = api.get("admin", "/v1/nowhere")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM
    wrong = api.client.put("/v1/admin/banks", headers=api.headers("admin"))
    assert wrong.status_code == 405
    assert wrong.headers["content-type"] == PROBLEM
    huge = api.client.post(
        "/v1/admin/banks",
        headers={**api.headers("admin", "big"), "content-type": "application/json"},
        content=b'{"name": "' + b"x" * 1_100_000 + b'"}',
    )
    assert huge.status_code == 413
    assert huge.json()["type"].endswith("/body-too-large")
    garbage = api.client.post(
        "/v1/admin/banks",
        headers={**api.headers("admin", "junk"), "content-type": "application/json"},
        content=b"{not json",
    )
    assert garbage.status_code == 422
    assert garbage.headers["content-type"] == PROBLEM


def test_verify_endpoint_for_regulators_and_banks(api: Api) -> None:
    api.world.paid_contract()
    report = api.get("regulator", "/v1/audit/verify")
    assert report.status_code == 200
    assert report.json()["ok"] is True
    assert report.json()["entries"] > 10
    assert api.get("bank", "/v1/audit/verify").status_code == 200
    assert api.get("parent", "/v1/audit/verify").status_code == 403
    assert api.get(None, "/v1/audit/verify").status_code == 401


def test_token_commands(api: Api) -> None:
    env = _env(api.world)
    runner = CliRunner()
    created = runner.invoke(
        app, ["token", "create", "--role", "parent", "--for", api.world.parent], env=env
    )
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("esc_")
    headers = {"Authorization": f"Bearer {secret}"}
    assert api.client.get("/v1/parent/contracts", headers=headers).status_code == 200
    with api.world.read() as session:
        token_id = session.scalars(
            select(ApiToken.id).where(ApiToken.token_hash == token_hash(secret))
        ).one()
    listed = runner.invoke(app, ["token", "list"], env=env)
    assert listed.exit_code == 0
    assert token_id in listed.stdout
    revoked = runner.invoke(app, ["token", "revoke", token_id], env=env)
    assert revoked.exit_code == 0, revoked.output
    assert api.client.get("/v1/parent/contracts", headers=headers).status_code == 401
    unknown = runner.invoke(
        app, ["token", "create", "--role", "bank", "--for", "bnk_0000000000000000"], env=env
    )
    assert unknown.exit_code == 1


def test_forged_cursors_answer_422_not_500(api: Api) -> None:
    import base64 as b64
    import json as js

    for ident in ("\ud800", "\u0000", "x" * 65, "a b"):
        raw = js.dumps([0, ident]).encode()
        cursor = b64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        for who, path in (
            ("parent", "/v1/parent/contracts"),
            ("bank", "/v1/bank/refunds"),
            ("admin", "/v1/admin/tokens"),
        ):
            response = api.get(who, path, cursor=cursor)
            assert response.status_code == 422, (ident, path, response.text)


def test_an_oversized_chunked_body_answers_413(api: Api) -> None:
    def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 65_536

    response = api.client.post(
        "/v1/admin/banks",
        headers={**api.headers("admin", "chunked"), "content-type": "application/json"},
        content=chunks(),
    )
    assert response.status_code == 413
    assert response.json()["type"].endswith("/body-too-large")


def test_replays_keep_no_personal_data(api: Api) -> None:
    first = api.post("parent", "/v1/parent/students", {"name": "林小雨"}, key="stu-1")
    assert first.status_code == 201
    assert first.json()["name"] == "林小雨"
    with api.world.read() as session:
        bodies = [r.body for r in session.scalars(select(IdempotencyRecord))]
    assert all("林小雨".encode() not in body for body in bodies)
    again = api.post("parent", "/v1/parent/students", {"name": "林小雨"}, key="stu-1")
    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["name"] is None


def test_verify_details_only_for_those_who_see_everything(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.routers import audit
    from ledger.verify import Problem, ProblemKind, Report

    broken = Report(entries=10, problems_total=1)
    broken.problems.append(
        Problem(ProblemKind.BALANCE_MISMATCH, None, "stored 1 != replayed 0", "escrow:ins_x")
    )
    monkeypatch.setattr(audit, "verify_database", lambda engine: broken)
    full = api.get("regulator", "/v1/audit/verify").json()
    assert full["ok"] is False
    assert full["problems"][0]["account"] == "escrow:ins_x"
    for who in ("bank", "district_regulator"):
        summary = api.get(who, "/v1/audit/verify").json()
        assert summary["ok"] is False
        assert summary["problems_total"] == 1
        assert summary["problems"] == []
        assert summary["first_problem"] is None

"""Party signatures over HTTP: keys registered by institutions and banks, signed lesson reports and
receipts, refusals, rotation, and verification of a stored signature from the log entry alone."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.entities import Contract
from ledger.log import format_time
from ledger.models import LogEntry
from ledger.party_keys import key_id, lesson_message, receipt_message
from tests.api.conftest import Api


def _public(private: Ed25519PrivateKey) -> str:
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw).decode()


def _register(api: Api, who: str, role: str, private: Ed25519PrivateKey) -> dict[str, Any]:
    response = api.post(who, f"/v1/{role}/keys", {"public_key": _public(private)})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _lesson(
    api: Api,
    contract: str,
    ref: str,
    key: tuple[Ed25519PrivateKey, str] | None = None,
    signed_as: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A lesson body; with (private key, key id), signed over the fields (or ``signed_as``)."""
    world = api.world
    when = world.now() - timedelta(hours=1)
    body: dict[str, Any] = {
        "contract_id": contract,
        "ref": ref,
        "delivered_at": when.isoformat(),
        "teacher_id": "T-1",
    }
    if key is not None:
        fields = {
            "institution": world.get(Contract, contract).institution_id,
            "contract": contract,
            "ref": ref,
            "delivered_at": when,
            "teacher": "T-1",
            **(signed_as or {}),
        }
        private, key_id = key
        signature = private.sign(lesson_message(**fields))
        body["signature"] = {
            "key_id": key_id,
            "signature": base64.b64encode(signature).decode(),
        }
    return body


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["type"].endswith(f"/{code}"), problem
    return problem


def _entry(api: Api, seq: int) -> dict[str, Any]:
    with api.world.read() as session:
        entry = session.get(LogEntry, seq)
    assert entry is not None
    assert hashlib.sha256(b"\x00" + entry.body).digest() == entry.hash
    decoded: dict[str, Any] = json.loads(entry.body)
    return decoded


def _log_size(api: Api) -> int:
    with api.world.read() as session:
        return api.world.ctx.log.head(session).size


def test_an_institution_registers_a_key_and_lists_its_keys(api: Api) -> None:
    private = Ed25519PrivateKey.generate()
    registered = _register(api, "institution", "institution", private)
    key = registered["key"]
    raw = base64.b64decode(_public(private))
    school = api.world.school
    assert key["key_id"] == hashlib.sha256(school.encode() + b"\n\x01" + raw).digest()[:4].hex()
    encoded = base64.b64encode(b"\x01" + raw).decode()
    assert key["verifier_key"] == f"{school}+{key['key_id']}+{encoded}"
    assert (key["active"], registered["replaced"], registered["created"]) == (True, None, True)
    assert registered["receipt"]["seq"] == key["registered_seq"]
    assert _entry(api, key["registered_seq"])["type"] == "party_key.registered"

    listed = api.get("institution", "/v1/institution/keys").json()
    assert [k["id"] for k in listed["items"]] == [key["id"]]
    assert api.get("other_institution", "/v1/institution/keys").json()["items"] == []
    assert api.get("bank", "/v1/bank/keys").json()["items"] == []


def test_no_request_names_the_party_a_key_is_for(api: Api) -> None:
    """The token is the party: a key cannot be registered for another institution."""
    response = api.post(
        "institution",
        "/v1/institution/keys",
        {"public_key": _public(Ed25519PrivateKey.generate()), "party_id": api.world.academy},
    )
    _problem(response, 422, "validation-error")
    assert api.get("other_institution", "/v1/institution/keys").json()["items"] == []


def test_malformed_keys_are_refused(api: Api) -> None:
    for value in ("", "AAAA", base64.b64encode(b"\x01" * 31).decode(), "!" * 43 + "="):
        response = api.post("institution", "/v1/institution/keys", {"public_key": value})
        assert response.status_code == 422, (value, response.text)


def test_signed_lessons_are_required_checked_and_stored(api: Api) -> None:
    world = api.world
    contract = world.paid_contract()
    private = Ed25519PrivateKey.generate()
    key_id = _register(api, "institution", "institution", private)["key"]["key_id"]

    _problem(
        api.post("institution", "/v1/institution/lessons", _lesson(api, contract, "H-1")),
        422,
        "signature-required",
    )
    forged = [
        _lesson(api, contract, "H-1", (Ed25519PrivateKey.generate(), key_id)),  # wrong key
        _lesson(api, contract, "H-1", (private, key_id), {"teacher": "T-2"}),  # tampered field
        _lesson(api, contract, "H-1", (private, key_id), {"ref": "H-0"}),  # another lesson's
        _lesson(api, contract, "H-1", (private, "00000000")),  # unknown key id
    ]
    for body in forged:
        response = api.post("institution", "/v1/institution/lessons", body)
        _problem(response, 422, "invalid-signature")
    assert world.get(Contract, contract).lessons_delivered == 0

    response = api.post(
        "institution", "/v1/institution/lessons", _lesson(api, contract, "H-1", (private, key_id))
    )
    assert response.status_code == 201, response.text
    seq = response.json()["lesson"]["reported_seq"]
    payload = _entry(api, seq)["payload"]
    assert payload["signature"]["key_id"] == key_id
    # Verifiable from the log alone: the message from the entry, the key from its registration.
    [registration] = [
        _entry(api, s)["payload"]
        for s in range(seq)
        if _entry(api, s)["type"] == "party_key.registered"
    ]
    assert registration["key_id"] == key_id
    message = lesson_message(
        institution=payload["institution"],
        contract=payload["contract"],
        ref=payload["ref"],
        delivered_at=payload["delivered_at"],
        teacher=payload["teacher"],
    )
    Ed25519PublicKey.from_public_bytes(base64.b64decode(registration["public_key"])).verify(
        base64.b64decode(payload["signature"]["signature"]), message
    )


def test_the_signature_field_is_validated_by_shape(api: Api) -> None:
    contract = api.world.paid_contract()
    body = _lesson(api, contract, "W-1")
    for signature in (
        {"key_id": "ABCDEF01", "signature": base64.b64encode(b"\x00" * 64).decode()},
        {"key_id": "abcdef01", "signature": base64.b64encode(b"\x00" * 63).decode()},
        {"key_id": "abcdef01"},
    ):
        response = api.post(
            "institution", "/v1/institution/lessons", {**body, "signature": signature}
        )
        _problem(response, 422, "validation-error")


def test_a_batch_with_one_bad_signature_is_refused_whole(api: Api) -> None:
    world = api.world
    contract = world.paid_contract()
    private = Ed25519PrivateKey.generate()
    key_id = _register(api, "institution", "institution", private)["key"]["key_id"]
    lessons = [_lesson(api, contract, f"BB-{i}", (private, key_id)) for i in range(4)]
    lessons[2] = _lesson(api, contract, "BB-2", (private, key_id), {"ref": "BB-1"})
    size = _log_size(api)
    response = api.post("institution", "/v1/institution/lessons/batch", {"lessons": lessons})
    problem = _problem(response, 422, "invalid-signature")
    assert "BB-2" in problem["detail"]
    assert _log_size(api) == size

    lessons[2] = _lesson(api, contract, "BB-2", (private, key_id))
    response = api.post("institution", "/v1/institution/lessons/batch", {"lessons": lessons})
    assert response.status_code == 201, response.text
    stored = [_entry(api, x["reported_seq"])["payload"] for x in response.json()["lessons"]]
    assert [p["ref"] for p in stored] == [f"BB-{i}" for i in range(4)]
    assert all(p["signature"]["key_id"] == key_id for p in stored)


def test_rotation_over_http(api: Api) -> None:
    contract = api.world.paid_contract()
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    first = _register(api, "institution", "institution", old)["key"]
    second = _register(api, "institution", "institution", new)
    assert second["replaced"]["id"] == first["id"]
    assert second["replaced"]["active"] is False
    assert second["replaced"]["revoked_seq"] < second["key"]["registered_seq"]

    body = _lesson(api, contract, "RO-1", (old, first["key_id"]))
    _problem(api.post("institution", "/v1/institution/lessons", body), 422, "invalid-signature")
    body = _lesson(api, contract, "RO-1", (new, second["key"]["key_id"]))
    assert api.post("institution", "/v1/institution/lessons", body).status_code == 201

    again = api.post("institution", "/v1/institution/keys", {"public_key": _public(new)})
    assert again.status_code == 201
    assert again.json()["created"] is False
    revoked = api.post("institution", "/v1/institution/keys", {"public_key": _public(old)})
    _problem(revoked, 409, "invalid-state")
    listed = api.get("institution", "/v1/institution/keys").json()["items"]
    assert [(k["id"], k["active"]) for k in listed] == [
        (first["id"], False),
        (second["key"]["id"], True),
    ]


def _receipt(
    api: Api,
    contract: str,
    reference: str,
    key: tuple[Ed25519PrivateKey, str] | None = None,
    signed_as: dict[str, Any] | None = None,
) -> dict[str, Any]:
    world = api.world
    body: dict[str, Any] = {
        "contract_id": contract,
        "amount_fen": world.get(Contract, contract).total_fen,
        "bank_reference": reference,
        "payer": "parent",
    }
    if key is not None:
        private, key_id = key
        fields = {
            "bank": world.bank,
            "contract": contract,
            "amount": body["amount_fen"],
            "bank_reference": reference,
            "payer": "parent",
            **(signed_as or {}),
        }
        body["signature"] = {
            "key_id": key_id,
            "signature": base64.b64encode(private.sign(receipt_message(**fields))).decode(),
        }
    return body


def test_a_banks_receipts_are_signed_once_it_has_a_key(api: Api) -> None:
    world = api.world
    private = Ed25519PrivateKey.generate()
    key_id = _register(api, "bank", "bank", private)["key"]["key_id"]
    first, second = world.contract(lessons=5), world.contract(lessons=5)

    _problem(
        api.post("bank", "/v1/bank/receipts", _receipt(api, first, "HB-1")),
        422,
        "signature-required",
    )
    tampered = _receipt(api, first, "HB-1", (private, key_id), {"amount": 1})
    _problem(api.post("bank", "/v1/bank/receipts", tampered), 422, "invalid-signature")
    batch = [
        _receipt(api, first, "HB-1", (private, key_id)),
        _receipt(api, second, "HB-2", (private, key_id), {"bank_reference": "HB-1"}),
    ]
    size = _log_size(api)
    problem = _problem(
        api.post("bank", "/v1/bank/receipts/batch", {"receipts": batch}), 422, "invalid-signature"
    )
    assert problem["index"] == 1
    assert _log_size(api) == size

    batch[1] = _receipt(api, second, "HB-2", (private, key_id))
    response = api.post("bank", "/v1/bank/receipts/batch", {"receipts": batch})
    assert response.status_code == 201, response.text
    for booking in response.json()["receipts"]:
        entry = _entry(api, booking["seq"])
        payload = entry["payload"]
        message = receipt_message(
            bank=entry["actor"].removeprefix("bank:"),
            contract=payload["contract"],
            amount=payload["amount"],
            bank_reference=payload["bank_reference"],
            payer=payload["payer"],
        )
        public = base64.b64decode(_public(private))
        Ed25519PublicKey.from_public_bytes(public).verify(
            base64.b64decode(payload["signature"]["signature"]), message
        )

    # The key is this bank's alone, and it keeps binding every later report.
    assert api.get("other_bank", "/v1/bank/keys").json()["items"] == []
    third = world.contract(lessons=5)
    _problem(
        api.post("bank", "/v1/bank/receipts", _receipt(api, third, "HB-3")),
        422,
        "signature-required",
    )


def test_the_documented_message_bytes(api: Api) -> None:
    """The exact bytes of docs/audit.md's examples: a client in another language must match."""
    world = api.world
    when = world.now()
    assert lesson_message(
        institution="ins_1", contract="ctr_2", ref="L-3", delivered_at=when, teacher="T-4"
    ) == (
        b"tuition-escrow/lesson-report/v1\n"
        b'{"contract":"ctr_2","delivered_at":"' + format_time(when).encode() + b'",'
        b'"institution":"ins_1","ref":"L-3","teacher":"T-4"}'
    )
    assert receipt_message(
        bank="bnk_1", contract="ctr_2", amount=300000, bank_reference="NB-9", payer="parent"
    ) == (
        b"tuition-escrow/receipt-report/v1\n"
        b'{"amount":300000,"bank":"bnk_1","bank_reference":"NB-9","contract":"ctr_2",'
        b'"payer":"parent"}'
    )


def test_the_example_of_docs_audit_md() -> None:
    """docs/audit.md's worked example, byte for byte (Ed25519 signatures are deterministic)."""
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    private = Ed25519PrivateKey.from_private_bytes(seed)
    assert _public(private) == "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    raw = base64.b64decode(_public(private))
    assert key_id("ins_0123456789abcdef", raw).hex() == "3155397f"
    assert key_id("bnk_0123456789abcdef", raw).hex() == "02f4ccab"
    lesson = lesson_message(
        institution="ins_0123456789abcdef",
        contract="ctr_9f86d081884c7d65",
        ref="2026-09-01-art-3B-0001",
        delivered_at=datetime(2026, 9, 1, 9, 0, tzinfo=timezone(timedelta(hours=8))),
        teacher="T-017",
    )
    assert lesson == (
        b"tuition-escrow/lesson-report/v1\n"
        b'{"contract":"ctr_9f86d081884c7d65","delivered_at":"2026-09-01T01:00:00.000000Z",'
        b'"institution":"ins_0123456789abcdef","ref":"2026-09-01-art-3B-0001","teacher":"T-017"}'
    )
    assert base64.b64encode(private.sign(lesson)).decode() == (
        "LSw+mn+JgKEXTj0hJB1dgigNnvgG75i4ZoJJw6EKTunqM30cNCALZrzhp9XrWHTYlmOXmedENwd8JXqANBv1DQ=="
    )
    receipt = receipt_message(
        bank="bnk_0123456789abcdef",
        contract="ctr_9f86d081884c7d65",
        amount=300_000,
        bank_reference="NB20260901000123",
        payer="parent",
    )
    assert base64.b64encode(private.sign(receipt)).decode() == (
        "LA26ONtTg5B1Mn3mT0vAUwye06rwiGNic0cCqQZHhlTFxMd3TCWATS7cIZFNQvPTHt0Ys9InMDNv3SvgsE86AA=="
    )

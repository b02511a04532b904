"""Party signatures: institutions sign their lesson reports and banks their receipts, once they
register a key; the signature is stored in the log entry and verifies from the entry alone."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select

from ledger.entities import Contract, Lesson, PayerType, ReceiptStatus
from ledger.errors import (
    InvalidRequest,
    InvalidSignature,
    InvalidState,
    NotFound,
    SignatureRequired,
)
from ledger.escrow import contracts, lessons
from ledger.escrow.lessons import LessonReport
from ledger.keys import key_id as c2sp_key_id
from ledger.models import LogEntry
from ledger.party_keys import (
    PartyKey,
    PartyKind,
    SignatureIn,
    active_key,
    lesson_message,
    receipt_message,
    register_key,
    revoke_key,
)
from tests.escrow.world import ADMIN, World


def _raw(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def _register(world: World, kind: str, party: str, private: Ed25519PrivateKey) -> PartyKey:
    done = world.do(
        register_key, kind=kind, party_id=party, public_key=_raw(private), actor=f"{kind}:{party}"
    )
    assert done.created
    return done.key


def _sign(private: Ed25519PrivateKey, party: str, message: bytes) -> SignatureIn:
    return SignatureIn(
        c2sp_key_id(party, _raw(private)).hex(),
        base64.b64encode(private.sign(message)).decode(),
    )


def _lesson(
    world: World,
    contract: str,
    ref: str,
    *,
    key: Ed25519PrivateKey | None = None,
    teacher: str = "teacher-1",
    signed_as: dict[str, Any] | None = None,
) -> LessonReport:
    """A report of ``ref``; with ``key``, signed (over ``signed_as`` fields if given)."""
    institution = world.get(Contract, contract).institution_id
    when = world.now() - timedelta(hours=1)
    fields = {
        "institution": institution,
        "contract": contract,
        "ref": ref,
        "delivered_at": when,
        "teacher": teacher,
        **(signed_as or {}),
    }
    signature = None if key is None else _sign(key, institution, lesson_message(**fields))
    return LessonReport(contract, ref, when, teacher, signature)


def _report(world: World, *reports: LessonReport) -> list[Lesson]:
    institution = world.get(Contract, reports[0].contract_id).institution_id
    return world.do(lessons.report_lessons, institution_id=institution, reports=list(reports))


def _entry(world: World, seq: int) -> dict[str, Any]:
    """A log entry decoded from its stored bytes, after checking the bytes against its hash."""
    with world.read() as session:
        entry = session.get(LogEntry, seq)
    assert entry is not None
    assert hashlib.sha256(b"\x00" + entry.body).digest() == entry.hash
    decoded: dict[str, Any] = json.loads(entry.body)
    return decoded


def _registered_key(world: World, kind: str, party: str, key_id: str) -> bytes:
    """The public key a party.registered entry announced for this party and key id."""
    with world.read() as session:
        bodies = session.scalars(
            select(LogEntry.body).where(LogEntry.type == "party_key.registered")
        ).all()
    for body in bodies:
        payload = json.loads(body)["payload"]
        if (payload["kind"], payload["party"], payload["key_id"]) == (kind, party, key_id):
            return base64.b64decode(payload["public_key"])
    raise AssertionError(f"no registration of {key_id} for {party}")


def _log_size(world: World) -> int:
    with world.read() as session:
        return session.scalar(select(func.count()).select_from(LogEntry)) or 0


# --- keys ---------------------------------------------------------------------------------------


def test_registering_a_key_records_it_with_its_c2sp_key_id(world: World) -> None:
    private = Ed25519PrivateKey.generate()
    key = _register(world, "institution", world.school, private)
    expected = hashlib.sha256(world.school.encode() + b"\n\x01" + _raw(private)).digest()[:4]
    assert key.key_id == expected
    entry = _entry(world, key.registered_seq)
    assert entry["type"] == "party_key.registered"
    assert entry["payload"] == {
        "key": key.id,
        "kind": "institution",
        "party": world.school,
        "institution": world.school,
        "key_id": expected.hex(),
        "public_key": base64.b64encode(_raw(private)).decode(),
    }
    with world.read() as session:
        found = active_key(session, PartyKind.INSTITUTION, world.school)
        assert found is not None
        assert found.id == key.id
        assert active_key(session, PartyKind.INSTITUTION, world.academy) is None


def test_registering_the_active_key_again_records_nothing(world: World) -> None:
    private = Ed25519PrivateKey.generate()
    key = _register(world, "bank", world.bank, private)
    size = _log_size(world)
    again = world.do(
        register_key, kind="bank", party_id=world.bank, public_key=_raw(private), actor=ADMIN
    )
    assert (again.created, again.key.id) == (False, key.id)
    assert _log_size(world) == size


def test_keys_are_refused_for_unknown_parties_and_malformed_keys(world: World) -> None:
    raw = _raw(Ed25519PrivateKey.generate())
    with pytest.raises(NotFound):
        world.do(register_key, kind="institution", party_id=world.bank, public_key=raw, actor=ADMIN)
    with pytest.raises(NotFound):
        world.do(register_key, kind="bank", party_id=world.school, public_key=raw, actor=ADMIN)
    with pytest.raises(InvalidRequest):
        world.do(register_key, kind="parent", party_id=world.parent, public_key=raw, actor=ADMIN)
    with pytest.raises(InvalidRequest):
        world.do(register_key, kind="bank", party_id=world.bank, public_key=raw[:31], actor=ADMIN)


# --- lesson reports -------------------------------------------------------------------------------


def test_without_a_key_reports_need_no_signature_and_a_signature_is_refused(world: World) -> None:
    contract = world.paid_contract()
    [lesson] = _report(world, _lesson(world, contract, "U-1"))
    assert "signature" not in _entry(world, lesson.reported_seq)["payload"]
    with pytest.raises(InvalidSignature, match="not the active key"):
        _report(world, _lesson(world, contract, "U-2", key=Ed25519PrivateKey.generate()))


def test_once_a_key_is_registered_unsigned_reports_are_refused(world: World) -> None:
    contract = world.paid_contract()
    _register(world, "institution", world.school, Ed25519PrivateKey.generate())
    size = _log_size(world)
    with pytest.raises(SignatureRequired, match="lesson S-1"):
        _report(world, _lesson(world, contract, "S-1"))
    assert _log_size(world) == size


def test_a_signed_lesson_is_stored_and_verifies_from_the_log_alone(world: World) -> None:
    contract = world.paid_contract()
    private = Ed25519PrivateKey.generate()
    key = _register(world, "institution", world.school, private)
    [lesson] = _report(world, _lesson(world, contract, "S-1", key=private))

    entry = _entry(world, lesson.reported_seq)
    payload = entry["payload"]
    assert entry["type"] == "lesson.reported"
    assert payload["signature"]["key_id"] == key.key_id.hex()
    # What an auditor does with an export: rebuild the message from the entry by hand, take the
    # key from the registration entry, verify. No table other than the log is read.
    message = b"tuition-escrow/lesson-report/v1\n" + rfc8785.dumps(
        {
            "institution": payload["institution"],
            "contract": payload["contract"],
            "ref": payload["ref"],
            "delivered_at": payload["delivered_at"],
            "teacher": payload["teacher"],
        }
    )
    public = _registered_key(world, "institution", payload["institution"], key.key_id.hex())
    Ed25519PublicKey.from_public_bytes(public).verify(
        base64.b64decode(payload["signature"]["signature"]), message
    )
    assert message == lesson_message(
        institution=world.school,
        contract=contract,
        ref="S-1",
        delivered_at=lesson.delivered_at,
        teacher="teacher-1",
    )
    assert message.endswith(b'"teacher":"teacher-1"}')  # canonical: keys sorted, no spaces


@pytest.mark.parametrize(
    "forgery",
    ["wrong key", "tampered teacher", "tampered time", "another lesson", "another institution"],
)
def test_forged_signatures_are_refused(world: World, forgery: str) -> None:
    contract = world.paid_contract()
    private = Ed25519PrivateKey.generate()
    _register(world, "institution", world.school, private)
    if forgery == "wrong key":
        # Signed by another key, under the active key's id.
        report = _lesson(world, contract, "F-1", key=private)
        other = _lesson(world, contract, "F-1", key=Ed25519PrivateKey.generate())
        assert report.signature is not None
        assert other.signature is not None
        report = LessonReport(
            contract,
            "F-1",
            report.delivered_at,
            "teacher-1",
            SignatureIn(report.signature.key_id, other.signature.signature),
        )
    elif forgery == "tampered teacher":
        report = _lesson(world, contract, "F-1", key=private, signed_as={"teacher": "teacher-2"})
    elif forgery == "tampered time":
        earlier = world.now() - timedelta(hours=2)
        report = _lesson(world, contract, "F-1", key=private, signed_as={"delivered_at": earlier})
    elif forgery == "another lesson":
        report = _lesson(world, contract, "F-1", key=private, signed_as={"ref": "F-0"})
    else:
        report = _lesson(
            world, contract, "F-1", key=private, signed_as={"institution": world.academy}
        )
    size = _log_size(world)
    with pytest.raises(InvalidSignature, match="lesson F-1"):
        _report(world, report)
    assert _log_size(world) == size


def test_malformed_signatures_are_refused(world: World) -> None:
    contract = world.paid_contract()
    private = Ed25519PrivateKey.generate()
    _register(world, "institution", world.school, private)
    good = _lesson(world, contract, "M-1", key=private)
    assert good.signature is not None
    for signature in (
        SignatureIn(good.signature.key_id.upper(), good.signature.signature),
        SignatureIn(good.signature.key_id, "not base64!"),
        SignatureIn(good.signature.key_id, base64.b64encode(b"\x00" * 63).decode()),
    ):
        with pytest.raises(InvalidSignature):
            _report(world, LessonReport(contract, "M-1", good.delivered_at, "teacher-1", signature))


def test_a_batch_with_one_bad_signature_records_nothing(world: World) -> None:
    contract = world.paid_contract()
    private = Ed25519PrivateKey.generate()
    _register(world, "institution", world.school, private)
    batch = [_lesson(world, contract, f"B-{i}", key=private) for i in range(5)]
    batch[3] = _lesson(world, contract, "B-3", key=private, signed_as={"ref": "B-2"})
    size = _log_size(world)
    with pytest.raises(InvalidSignature, match="lesson B-3"):
        _report(world, *batch)
    assert _log_size(world) == size
    assert world.get(Contract, contract).lessons_delivered == 0

    batch[3] = _lesson(world, contract, "B-3", key=private)
    recorded = _report(world, *batch)
    # Each entry carries its own signature: one lesson is provable without the rest.
    signatures = {
        _entry(world, x.reported_seq)["payload"]["signature"]["signature"] for x in recorded
    }
    assert len(signatures) == 5


def test_a_repeat_of_a_recorded_lesson_is_answered_as_before(world: World) -> None:
    contract = world.paid_contract()
    [unsigned] = _report(world, _lesson(world, contract, "R-1"))
    _register(world, "institution", world.school, Ed25519PrivateKey.generate())
    [again] = _report(
        world, LessonReport(contract, "R-1", unsigned.delivered_at, "teacher-1", None)
    )
    assert again.id == unsigned.id


def test_rotation_refuses_the_old_keys_signatures(world: World) -> None:
    contract = world.paid_contract()
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    first = _register(world, "institution", world.school, old)
    _report(world, _lesson(world, contract, "K-1", key=old))
    done = world.do(
        register_key,
        kind="institution",
        party_id=world.school,
        public_key=_raw(new),
        actor="institution:" + world.school,
    )
    assert done.replaced is not None
    assert done.replaced.id == first.id
    revoked = world.get(PartyKey, first.id)
    assert revoked.revoked_seq is not None
    assert revoked.revoked_seq < done.key.registered_seq
    entry = _entry(world, revoked.revoked_seq)
    assert entry["type"] == "party_key.revoked"
    assert entry["payload"]["key_id"] == first.key_id.hex()
    assert entry["payload"]["reason"] == "replaced"

    with pytest.raises(InvalidSignature, match="not the active key"):
        _report(world, _lesson(world, contract, "K-2", key=old))
    [lesson] = _report(world, _lesson(world, contract, "K-2", key=new))
    assert _entry(world, lesson.reported_seq)["payload"]["signature"]["key_id"] == (
        done.key.key_id.hex()
    )
    with pytest.raises(InvalidState, match="revoked"):
        world.do(
            register_key,
            kind="institution",
            party_id=world.school,
            public_key=_raw(old),
            actor=ADMIN,
        )


def test_revoking_the_key_lets_unsigned_reports_through_again(world: World) -> None:
    contract = world.paid_contract()
    key = _register(world, "institution", world.school, Ed25519PrivateKey.generate())
    revoked = world.do(revoke_key, kind="institution", party_id=world.school, actor=ADMIN)
    assert revoked.id == key.id
    assert _entry(world, world.get(PartyKey, key.id).revoked_seq or 0)["payload"]["reason"] == (
        "revoked"
    )
    _report(world, _lesson(world, contract, "V-1"))
    with pytest.raises(InvalidState):
        world.do(revoke_key, kind="institution", party_id=world.school, actor=ADMIN)


def test_a_key_binds_only_its_own_party(world: World) -> None:
    mine = world.paid_contract()
    theirs = world.paid_contract(world.academy, lessons=10, unit=4_000, class_size=20)
    academy_key = Ed25519PrivateKey.generate()
    _register(world, "institution", world.academy, academy_key)
    _report(world, _lesson(world, mine, "O-1"))  # the school has no key: unsigned is fine
    with pytest.raises(SignatureRequired):
        _report(world, _lesson(world, theirs, "O-2"))
    # The academy's key signing the school's lesson: not the school's key.
    school_lesson = _lesson(world, mine, "O-3")
    message = lesson_message(
        institution=world.school,
        contract=mine,
        ref="O-3",
        delivered_at=school_lesson.delivered_at,
        teacher="teacher-1",
    )
    forged = _sign(academy_key, world.academy, message)
    with pytest.raises(InvalidSignature):
        _report(
            world,
            LessonReport(mine, "O-3", school_lesson.delivered_at, "teacher-1", forged),
        )


# --- receipts -----------------------------------------------------------------------------------


def _pay(
    world: World,
    contract_id: str,
    reference: str,
    *,
    key: Ed25519PrivateKey | None = None,
    payer: PayerType = PayerType.PARENT,
    signed_amount: int | None = None,
) -> contracts.ReceiptOutcome:
    amount = world.get(Contract, contract_id).total_fen
    signature = None
    if key is not None:
        message = receipt_message(
            bank=world.bank,
            contract=contract_id,
            amount=signed_amount if signed_amount is not None else amount,
            bank_reference=reference,
            payer=payer.value,
        )
        signature = _sign(key, world.bank, message)
    return world.do(
        contracts.book_receipt,
        bank_id=world.bank,
        contract_id=contract_id,
        amount_fen=amount,
        bank_reference=reference,
        payer=payer,
        signature=signature,
    )


def test_a_banks_receipts_are_signed_once_it_has_a_key(world: World) -> None:
    private = Ed25519PrivateKey.generate()
    key = _register(world, "bank", world.bank, private)
    contract = world.contract()
    with pytest.raises(SignatureRequired, match="payment P-1"):
        _pay(world, contract, "P-1")
    with pytest.raises(InvalidSignature):
        _pay(world, contract, "P-1", key=private, signed_amount=1)
    with pytest.raises(InvalidSignature):
        _pay(world, contract, "P-1", key=Ed25519PrivateKey.generate())
    outcome = _pay(world, contract, "P-1", key=private)
    assert outcome.booked

    entry = _entry(world, outcome.entry.seq)
    payload = entry["payload"]
    assert entry["type"] == "receipt.booked"
    bank = entry["actor"].removeprefix("bank:")
    message = b"tuition-escrow/receipt-report/v1\n" + rfc8785.dumps(
        {
            "bank": bank,
            "contract": payload["contract"],
            "amount": payload["amount"],
            "bank_reference": payload["bank_reference"],
            "payer": payload["payer"],
        }
    )
    public = _registered_key(world, "bank", bank, payload["signature"]["key_id"])
    assert payload["signature"]["key_id"] == key.key_id.hex()
    Ed25519PublicKey.from_public_bytes(public).verify(
        base64.b64decode(payload["signature"]["signature"]), message
    )


def test_a_returned_lender_payment_carries_the_signature_too(world: World) -> None:
    private = Ed25519PrivateKey.generate()
    _register(world, "bank", world.bank, private)
    outcome = _pay(world, world.contract(), "P-L", key=private, payer=PayerType.LENDER)
    assert outcome.receipt.status is ReceiptStatus.RETURNED
    assert "signature" in _entry(world, outcome.entry.seq)["payload"]


def test_another_banks_key_does_not_bind_this_bank(world: World) -> None:
    _register(world, "bank", world.other_bank, Ed25519PrivateKey.generate())
    assert _pay(world, world.contract(), "P-2").booked

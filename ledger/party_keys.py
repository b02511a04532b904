"""Party signing keys: institutions and banks sign what they report, so the log proves who said it.

The operator writes every log entry, so an entry alone proves only that the operator recorded a
claim. A party that registers an Ed25519 key closes that gap for its own reports: while its key is
active, every lesson an institution reports and every receipt a bank reports must carry the
party's signature over a fixed message (``lesson_message`` / ``receipt_message``), and the log
entry stores it. Anyone holding the log export can then check, without trusting the operator, that
the institution itself claimed the lesson (or the bank reported the payment): the message is
rebuilt from the entry's payload, the key comes from the ``party_key.registered`` entry.

A party has at most one active key. Registering a new one revokes the previous one in the same
transaction; both changes are log entries, so a verifier knows which key was valid at each seq.
Key ids follow C2SP signed notes (``ledger.keys.key_id``) with the party id as the name.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature as _BadSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import BigInteger, Index, LargeBinary, String, bindparam, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ledger import canonical
from ledger.entities import ID, Bank, Institution, string_enum
from ledger.errors import (
    InvalidRequest,
    InvalidSignature,
    InvalidState,
    NotFound,
    SignatureRequired,
)
from ledger.escrow import inputs
from ledger.escrow.context import Context
from ledger.escrow.parties import new_id
from ledger.keys import key_id as c2sp_key_id
from ledger.log import format_time
from ledger.models import Base

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
LESSON_CONTEXT = b"tuition-escrow/lesson-report/v1\n"
RECEIPT_CONTEXT = b"tuition-escrow/receipt-report/v1\n"
_KEY_ID = re.compile(r"^[0-9a-f]{8}$")


class PartyKind(StrEnum):
    """The parties whose reports can be signed."""

    INSTITUTION = "institution"
    BANK = "bank"


_PARTY = {PartyKind.INSTITUTION: Institution, PartyKind.BANK: Bank}


class PartyKey(Base):
    """An Ed25519 public key a party signs its reports with; active while ``revoked_seq`` is null."""

    __tablename__ = "party_keys"
    __table_args__ = (Index("ix_party_keys_party", "party_kind", "party_id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    party_kind: Mapped[PartyKind] = mapped_column(string_enum(PartyKind, "party_kind"))
    party_id: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(PUBLIC_KEY_BYTES))
    """The raw 32-byte Ed25519 public key."""
    key_id: Mapped[bytes] = mapped_column(LargeBinary(4))
    """First 4 bytes of SHA-256(party id || 0x0A || 0x01 || public key), as C2SP signed notes."""
    registered_seq: Mapped[int] = mapped_column(BigInteger)
    revoked_seq: Mapped[int | None] = mapped_column(BigInteger)
    """The entry that revoked the key (directly or by registering its successor)."""

    @property
    def active(self) -> bool:
        return self.revoked_seq is None


@dataclass(frozen=True, slots=True)
class SignatureIn:
    """A party's signature as it arrives with a report: key id in hex, signature in base64."""

    key_id: str
    signature: str


# --- the signed messages ----------------------------------------------------------------------


def _canonical(context: bytes, fields: dict[str, Any]) -> bytes:
    try:
        return context + canonical.dumps(fields)
    except rfc8785.CanonicalizationError as error:
        raise InvalidRequest(f"the report cannot be signed: {error}") from error


def lesson_message(
    *, institution: str, contract: str, ref: str, delivered_at: datetime | str, teacher: str
) -> bytes:
    """The exact bytes an institution signs for one lesson report (see docs/audit.md).

    ``delivered_at`` is an aware datetime, or the text the log stores (``format_time``), so a
    verifier can rebuild the message straight from a ``lesson.reported`` payload.
    """
    when = delivered_at if isinstance(delivered_at, str) else format_time(delivered_at)
    return _canonical(
        LESSON_CONTEXT,
        {
            "institution": institution,
            "contract": contract,
            "ref": ref,
            "delivered_at": when,
            "teacher": teacher,
        },
    )


def receipt_message(
    *, bank: str, contract: str, amount: int, bank_reference: str, payer: str
) -> bytes:
    """The exact bytes a bank signs for one reported payment (see docs/audit.md)."""
    return _canonical(
        RECEIPT_CONTEXT,
        {
            "bank": bank,
            "contract": contract,
            "amount": amount,
            "bank_reference": bank_reference,
            "payer": str(payer),
        },
    )


# --- keys --------------------------------------------------------------------------------------


def key_id(party_id: str, public_key: bytes) -> bytes:
    """The 4-byte key id of a party's key: C2SP signed-note key id with the party id as name."""
    return c2sp_key_id(party_id, public_key)


def _party(session: Session, kind: object, party_id: object) -> tuple[PartyKind, str]:
    checked = inputs.choice(kind, PartyKind, "party kind")
    party = inputs.code(party_id, f"{checked.value} id")
    if session.get(_PARTY[checked], party) is None:
        raise NotFound(f"no {checked.value} {party}")
    return checked, party


def _facts(key: PartyKey) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "key": key.id,
        "kind": key.party_kind.value,
        "party": key.party_id,
        "key_id": key.key_id.hex(),
    }
    # Naming the institution lets a district regulator's view of the log include its key changes.
    if key.party_kind is PartyKind.INSTITUTION:
        facts["institution"] = key.party_id
    return facts


def active_key(session: Session, kind: PartyKind, party_id: str) -> PartyKey | None:
    """The party's active key, if it has one."""
    return session.scalars(_ACTIVE_KEY, {"kind": kind, "party": party_id}).first()


# Built once: checked on every signed-or-not report (issue 8: rebuilding it cost more than the query).
_ACTIVE_KEY = select(PartyKey).where(
    PartyKey.party_kind == bindparam("kind"),
    PartyKey.party_id == bindparam("party"),
    PartyKey.revoked_seq.is_(None),
)


def _revoke(session: Session, ctx: Context, key: PartyKey, actor: str, reason: str) -> None:
    key.revoked_seq = ctx.record(
        session, "party_key.revoked", actor, {**_facts(key), "reason": reason}
    ).seq


@dataclass(frozen=True, slots=True)
class Registered:
    """A registered key, and the key it replaced (None if the party had none)."""

    key: PartyKey
    replaced: PartyKey | None
    created: bool
    """False when this key was already the party's active key: nothing was recorded."""


def register_key(
    session: Session, ctx: Context, *, kind: str, party_id: str, public_key: bytes, actor: str
) -> Registered:
    """Make ``public_key`` the party's signing key, revoking the one it replaces.

    Registering the active key again changes nothing (a retry). A key the party once revoked is
    refused: a revoked key may be in someone else's hands, and bringing it back would make old
    stolen signatures look current.
    """
    ctx.lock(session)
    party_kind, party = _party(session, kind, party_id)
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        raise InvalidRequest(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes")
    try:
        Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError as error:
        raise InvalidRequest(f"not an Ed25519 public key: {error}") from error
    current = active_key(session, party_kind, party)
    if current is not None and current.public_key == public_key:
        return Registered(current, None, created=False)
    if session.scalars(
        select(PartyKey.id).where(
            PartyKey.party_kind == party_kind,
            PartyKey.party_id == party,
            PartyKey.public_key == public_key,
        )
    ).first():
        raise InvalidState("this key was revoked; generate a new key pair", party=party)
    if current is not None:
        _revoke(session, ctx, current, actor, "replaced")
    key = PartyKey(
        id=new_id("pky"),
        party_kind=party_kind,
        party_id=party,
        public_key=public_key,
        key_id=key_id(party, public_key),
        registered_seq=-1,
    )
    key.registered_seq = ctx.record(
        session,
        "party_key.registered",
        actor,
        {**_facts(key), "public_key": base64.b64encode(public_key).decode()},
    ).seq
    session.add(key)
    session.flush()
    return Registered(key, current, created=True)


def revoke_key(session: Session, ctx: Context, *, kind: str, party_id: str, actor: str) -> PartyKey:
    """Revoke the party's active key: its reports are accepted unsigned again until a new key.

    For a party that stops signing (or whose key leaked and that has no new one yet); a party that
    rotates simply registers the new key.
    """
    ctx.lock(session)
    party_kind, party = _party(session, kind, party_id)
    current = active_key(session, party_kind, party)
    if current is None:
        raise InvalidState(f"{party} has no active key", party=party)
    _revoke(session, ctx, current, actor, "revoked")
    session.flush()
    return current


# --- checking signatures -----------------------------------------------------------------------


def _decode(signature: SignatureIn, what: str) -> tuple[bytes, bytes]:
    if not isinstance(signature.key_id, str) or not _KEY_ID.match(signature.key_id):
        raise InvalidSignature(f"{what}: key_id must be 8 lowercase hex digits")
    try:
        raw = base64.b64decode(signature.signature, validate=True)
    except (binascii.Error, ValueError, TypeError) as error:
        raise InvalidSignature(f"{what}: signature must be base64") from error
    if len(raw) != SIGNATURE_BYTES:
        raise InvalidSignature(
            f"{what}: an Ed25519 signature is {SIGNATURE_BYTES} bytes, got {len(raw)}"
        )
    return bytes.fromhex(signature.key_id), raw


@dataclass(frozen=True, slots=True)
class Signatures:
    """Checks one party's signatures against its active key (looked up once, e.g. per batch)."""

    kind: PartyKind
    party_id: str
    key: PartyKey | None

    def check(
        self, message: bytes, signature: SignatureIn | None, *, what: str = "report"
    ) -> dict[str, str] | None:
        """What to store in the entry payload, or None for an unsigned report of a party with no
        key; a party with a key must sign, with that key, exactly ``message``. ``what`` names the
        report in the error (e.g. ``lesson L-17``), so a refused batch says which item failed."""
        if signature is None:
            if self.key is None:
                return None
            raise SignatureRequired(
                f"{what}: {self.kind.value} {self.party_id} has a signing key "
                f"({self.key.key_id.hex()}); its reports must be signed",
                key_id=self.key.key_id.hex(),
            )
        wanted, raw = _decode(signature, what)
        if self.key is None or wanted != self.key.key_id:
            raise InvalidSignature(
                f"{what}: key {signature.key_id} is not the active key of {self.kind.value} "
                f"{self.party_id}",
                key_id=signature.key_id,
            )
        try:
            Ed25519PublicKey.from_public_bytes(self.key.public_key).verify(raw, message)
        except _BadSignature as error:
            raise InvalidSignature(
                f"{what}: the signature does not verify under key {signature.key_id} "
                "(signed message differs, or another key signed it)",
                key_id=signature.key_id,
            ) from error
        return {"key_id": wanted.hex(), "signature": base64.b64encode(raw).decode()}


def signatures(session: Session, kind: PartyKind, party_id: str) -> Signatures:
    """A checker for the party's signatures; call it under the log lock."""
    return Signatures(kind, party_id, active_key(session, kind, party_id))


def check_signature(
    session: Session,
    kind: PartyKind,
    party_id: str,
    message: bytes,
    signature: SignatureIn | None,
    *,
    what: str = "report",
) -> dict[str, str] | None:
    """Check one report's signature (see ``Signatures.check``)."""
    return signatures(session, kind, party_id).check(message, signature, what=what)

"""Party signing keys over HTTP: the request and response shapes institutions and banks share.

An institution or a bank registers an Ed25519 public key (``POST /v1/<role>/keys``); from then
on each lesson it reports, or each payment it reports, carries a ``signature`` made with the
private key over the message ``ledger.party_keys`` defines (docs/audit.md, "Party signatures").
The endpoints live in the two roles' routers; what they share is here, so both speak one format.
A token registers keys only for its own party: no request names the party.
"""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.pagination import Page, paginate
from api.writes import Receipt, Tx
from ledger import party_keys
from ledger.access import Principal
from ledger.keys import verifier_key
from ledger.party_keys import PartyKey, PartyKind, SignatureIn

KEY_ID_PATTERN = r"^[0-9a-f]{8}$"
PUBLIC_KEY_PATTERN = r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$"
"""Standard base64 of exactly 32 bytes (44 characters, one ``=`` of padding)."""
SIGNATURE_PATTERN = r"^[A-Za-z0-9+/]{85}[AQgw]==$"
"""Standard base64 of exactly 64 bytes (88 characters, two ``=`` of padding)."""


class PartySignatureIn(BaseModel):
    """The party's Ed25519 signature over one report's message (see docs/audit.md).

    Required on every lesson (institution) or payment (bank) while the party has an active key;
    refused (422 invalid-signature) if the party has none.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "key_id": "5a1f3c2b",
                    "signature": base64.b64encode(bytes(range(64))).decode(),
                }
            ]
        },
    )

    key_id: str = Field(
        pattern=KEY_ID_PATTERN,
        min_length=8,
        max_length=8,
        description="The key id the registration answered (8 lowercase hex digits)",
    )
    signature: str = Field(
        pattern=SIGNATURE_PATTERN,
        min_length=88,
        max_length=88,
        description="The 64-byte Ed25519 signature, standard base64",
    )

    def to_signature(self) -> SignatureIn:
        return SignatureIn(self.key_id, self.signature)


def signature_of(body: PartySignatureIn | None) -> SignatureIn | None:
    return None if body is None else body.to_signature()


class PartyKeyIn(BaseModel):
    """A new signing key for the caller's own party; it replaces (revokes) the active one."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"public_key": "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="}]
        },
    )

    public_key: str = Field(
        pattern=PUBLIC_KEY_PATTERN,
        min_length=44,
        max_length=44,
        description="The raw 32-byte Ed25519 public key, standard base64",
    )

    @field_validator("public_key")
    @classmethod
    def _decodes(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except binascii.Error as error:
            raise ValueError("public_key must be standard base64 of 32 bytes") from error
        return value

    def raw(self) -> bytes:
        return base64.b64decode(self.public_key, validate=True)


class PartyKeyOut(BaseModel):
    """A signing key of the caller's party, active or revoked."""

    id: str = Field(examples=["pky_3f2a1b0c9d8e7f60"])
    key_id: str = Field(description="What signatures name (8 hex digits)", examples=["5a1f3c2b"])
    public_key: str = Field(description="The Ed25519 public key, base64")
    verifier_key: str = Field(
        description="The key in C2SP verifier-key form <party>+<key id>+<base64(0x01||key)>, "
        "for signed-note tools"
    )
    active: bool = Field(description="False once revoked or replaced")
    registered_seq: int = Field(description="The log entry that registered it")
    revoked_seq: int | None = Field(description="The log entry that revoked or replaced it")

    @classmethod
    def of(cls, key: PartyKey) -> PartyKeyOut:
        return cls(
            id=key.id,
            key_id=key.key_id.hex(),
            public_key=base64.b64encode(key.public_key).decode(),
            verifier_key=verifier_key(key.party_id, key.public_key),
            active=key.active,
            registered_seq=key.registered_seq,
            revoked_seq=key.revoked_seq,
        )


class PartyKeyRegistered(BaseModel):
    """The registered key, the key it replaced, and the signed receipt of the log entry."""

    key: PartyKeyOut
    replaced: PartyKeyOut | None = Field(description="The previously active key, now revoked")
    created: bool = Field(description="False when this key was already active: nothing new")
    receipt: Receipt | None


def register(tx: Tx, kind: PartyKind, principal: Principal, body: PartyKeyIn) -> PartyKeyRegistered:
    """Register the key for the principal's own party (the service checks the key)."""
    done = party_keys.register_key(
        tx.session,
        tx.ctx,
        kind=kind.value,
        party_id=principal.id,
        public_key=body.raw(),
        actor=principal.actor,
    )
    return PartyKeyRegistered(
        key=PartyKeyOut.of(done.key),
        replaced=None if done.replaced is None else PartyKeyOut.of(done.replaced),
        created=done.created,
        receipt=tx.receipt(done.key.registered_seq),
    )


def list_keys(
    session: Session, kind: PartyKind, party_id: str, cursor: str | None, limit: int
) -> Page[PartyKeyOut]:
    """The party's keys, oldest registration first."""
    query = select(PartyKey).where(PartyKey.party_kind == kind, PartyKey.party_id == party_id)
    return paginate(
        session, query, PartyKey.registered_seq, PartyKey.id, cursor, limit, PartyKeyOut.of
    )

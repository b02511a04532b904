"""Witness keys over HTTP: banks and regulators register the witness they run.

A witness (``escrow witness serve``, run by the bank or regulator itself) cosigns each checkpoint
only if it extends the last one it cosigned; the log collects those cosignatures and serves them
with the checkpoint. Registering tells the log where the witness listens and which key its
cosignatures carry. The list is the witness policy every verifier needs, so every bank, regulator
and the operator may read all of it; each holder changes only its own keys.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from api.auth import AuditPrincipal, require
from api.deps import ReadSession
from api.ids import ID_PATTERN
from api.pagination import Cursor, Limit, Page, paginate
from api.problems import responses
from api.writes import Receipt, Tx, WriterDep
from ledger import witnesses
from ledger.access import Principal, Role
from ledger.witnesses import MAX_URL, WitnessKey

router = APIRouter(prefix="/v1/witnesses", tags=["witnesses"])

HolderPrincipal = Annotated[Principal, Depends(require(Role.BANK, Role.REGULATOR))]
WitnessId = Annotated[str, Path(pattern=ID_PATTERN, max_length=64, examples=["wit_1f"])]
EXAMPLE_KEY = (
    "witness.bank-of-ningbo.example/w1+57862104+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"
)


class WitnessKeyIn(BaseModel):
    """The caller's witness: the verifier key ``escrow witness init`` printed, and its URL."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"verifier_key": EXAMPLE_KEY, "url": "https://witness.bank-of-ningbo.example"}
            ]
        },
    )

    verifier_key: str = Field(
        min_length=55,
        max_length=182,
        pattern=r"^[\x21-\x2a\x2c-\x7e]{1,128}\+[0-9a-f]{8}\+B[A-Za-z0-9+/]{43}$",
        description="C2SP cosigner verifier key name+keyid+base64(0x04 || Ed25519 key)",
    )
    url: str = Field(
        min_length=8,
        max_length=MAX_URL,
        pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$",
        description="Base URL of the witness; the log posts to <url>/add-checkpoint",
    )


class WitnessKeyOut(BaseModel):
    """A registered witness key, active or revoked."""

    id: str = Field(examples=["wit_3f2a1b0c9d8e7f60"])
    holder: str = Field(description="bank:<id> or regulator:<id>", examples=["bank:bnk_1"])
    name: str = Field(description="The name its cosignature lines carry")
    key_id: str = Field(description="C2SP key id, 8 hex digits")
    verifier_key: str = Field(description="C2SP verifier key name+keyid+base64(0x04||key)")
    url: str
    active: bool
    registered_seq: int = Field(description="The log entry that registered it")
    revoked_seq: int | None = Field(description="The log entry that revoked or replaced it")

    @classmethod
    def of(cls, key: WitnessKey) -> WitnessKeyOut:
        return cls(
            id=key.id,
            holder=key.holder,
            name=key.name,
            key_id=key.key_id.hex(),
            verifier_key=key.verifier_key.encode(),
            url=key.url,
            active=key.active,
            registered_seq=key.registered_seq,
            revoked_seq=key.revoked_seq,
        )


class WitnessKeyRegistered(BaseModel):
    """The registered key, the holder's previous key it replaced, and the signed receipt."""

    key: WitnessKeyOut
    replaced: WitnessKeyOut | None = Field(description="The holder's previous key, now revoked")
    created: bool = Field(description="False when the key was already active (a retry or a move)")
    receipt: Receipt | None


class WitnessKeyRevoked(BaseModel):
    key: WitnessKeyOut
    receipt: Receipt | None


@router.post(
    "",
    status_code=201,
    response_model=WitnessKeyRegistered,
    summary="Register the caller's witness",
    responses=responses(400, 401, 403, 409, 413, 422),
)
def register_witness(holder: HolderPrincipal, body: WitnessKeyIn, writer: WriterDep) -> object:
    """A bank or regulator registers the witness it runs (`escrow witness init` prints the key).
    From the next checkpoint on, the log submits every checkpoint to `<url>/add-checkpoint` and
    keeps the cosignature; a checkpoint is witnessed once `ESCROW_WITNESS_QUORUM` distinct holders
    cosigned it. One active witness per holder: a new key replaces the previous one. The same key
    again changes nothing, or moves it to a new URL; a revoked key, a key or name another holder
    uses, or a non-cosigner key are refused.
    """

    def work(tx: Tx) -> WitnessKeyRegistered:
        done = witnesses.register_key(
            tx.session,
            tx.ctx,
            holder_role=holder.role.value,
            holder_id=holder.id,
            verifier_key=body.verifier_key,
            url=body.url,
            actor=holder.actor,
        )
        return WitnessKeyRegistered(
            key=WitnessKeyOut.of(done.key),
            replaced=None if done.replaced is None else WitnessKeyOut.of(done.replaced),
            created=done.created,
            receipt=tx.receipt(done.key.registered_seq),
        )

    return writer.run(holder, body, work, status=201)


@router.get(
    "",
    response_model=Page[WitnessKeyOut],
    summary="Every registered witness key",
    responses=responses(400, 401, 403, 422),
)
def list_witnesses(
    caller: AuditPrincipal, session: ReadSession, cursor: Cursor = None, limit: Limit = 100
) -> Page[WitnessKeyOut]:
    """All witness keys, active and revoked, oldest first: the witness policy a verifier checks
    cosignatures against, and for each holder a way to see that no witness was registered in its
    name."""
    return paginate(
        session,
        select(WitnessKey),
        WitnessKey.registered_seq,
        WitnessKey.id,
        cursor,
        limit,
        WitnessKeyOut.of,
    )


@router.post(
    "/{witness_id}/revoke",
    response_model=WitnessKeyRevoked,
    summary="Revoke one of the caller's witness keys",
    responses=responses(401, 403, 404, 409, 422),
)
def revoke_witness(holder: HolderPrincipal, witness_id: WitnessId, writer: WriterDep) -> object:
    """The holder stops its witness (or its key leaked): the log submits nothing more to it, and
    cosignatures it makes from now on do not count. Another holder's key answers 404."""

    def work(tx: Tx) -> WitnessKeyRevoked:
        key = witnesses.revoke_key(
            tx.session,
            tx.ctx,
            witness_id=witness_id,
            holder_role=holder.role.value,
            holder_id=holder.id,
            actor=holder.actor,
        )
        return WitnessKeyRevoked(key=WitnessKeyOut.of(key), receipt=tx.receipt(key.revoked_seq))

    return writer.run(holder, None, work)

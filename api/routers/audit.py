"""Audit endpoints: what a bank or regulator needs to check the log without trusting the operator."""

from __future__ import annotations

import base64

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import LedgerDep

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class PublicKey(BaseModel):
    """The log's Ed25519 public key in the forms verifiers expect."""

    origin: str = Field(description="The log's name; first line of every checkpoint")
    algorithm: str = Field(examples=["Ed25519"])
    key_id: str = Field(description="C2SP signed-note key id: 4 bytes, hex")
    public_key: str = Field(description="Raw 32-byte public key, base64")
    verifier_key: str = Field(description="C2SP verifier key: name+keyid+base64(0x01||key)")
    pem: str = Field(description="SubjectPublicKeyInfo PEM")


@router.get("/public-key", response_model=PublicKey, summary="The log's signing public key")
def public_key(ledger: LedgerDep) -> PublicKey:
    key = ledger.key
    return PublicKey(
        origin=key.name,
        algorithm="Ed25519",
        key_id=key.key_id.hex(),
        public_key=base64.b64encode(key.public_bytes).decode(),
        verifier_key=key.verifier_key,
        pem=key.public_pem(),
    )

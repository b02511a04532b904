"""Audit endpoints: what a bank or regulator needs to check the log without trusting the operator."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.auth import AuditPrincipal
from api.deps import LedgerDep
from api.problems import responses
from ledger.access import Principal, Role
from ledger.entities import Regulator
from ledger.escrow.parties import ALL_DISTRICTS
from ledger.runtime import Ledger
from ledger.verify import verify_database

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


class VerifyProblem(BaseModel):
    """One thing the replay found wrong, at the first seq it concerns."""

    kind: str
    seq: int | None = None
    account: str | None = None
    detail: str


class VerifySummary(BaseModel):
    """The outcome of replaying the whole log: every hash, link, posting, balance and invariant."""

    ok: bool
    entries: int
    postings: int
    accounts: int
    seconds: float
    problems_total: int
    first_problem: VerifyProblem | None
    problems: list[VerifyProblem] = Field(
        description="At most the first 100, in seq order; only for admins and regulators of "
        "every district (others see ok and problems_total)"
    )


@router.get(
    "/verify",
    response_model=VerifySummary,
    summary="Replay and verify the whole log now",
    responses=responses(401, 403),
)
def verify(ledger: LedgerDep, caller: AuditPrincipal) -> Any:
    """For regulators (and banks, and the operator): the same check as `escrow verify`, over one
    consistent snapshot. It reads every entry, so it takes about a second per 40,000 entries;
    an offline verifier over an export (issue 6) needs no trust in this service at all."""
    report = verify_database(ledger.engine).to_json()
    if not _sees_everything(ledger, caller):
        # Problem details name accounts and institutions of every tenant; a bank or a district
        # regulator learns whether the chain holds and how many problems there are.
        report["first_problem"] = None
        report["problems"] = []
    return report


def _sees_everything(ledger: Ledger, caller: Principal) -> bool:
    if caller.role is Role.ADMIN:
        return True
    if caller.role is not Role.REGULATOR:
        return False
    with ledger.readers() as session:
        regulator = session.get(Regulator, caller.id)
        return regulator is not None and regulator.jurisdiction == ALL_DISTRICTS

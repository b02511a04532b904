"""Audit endpoints: what a bank or regulator needs to check the log without trusting the operator."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api import pagination, proofs
from api.auth import AuditPrincipal, RegulatorPrincipal, require
from api.deps import LedgerDep, ReadSession
from api.pagination import Cursor, Limit, Page
from api.problems import responses
from api.proofs import CheckpointView, b64
from api.writes import Tx, WriterDep
from ledger import checkpoints
from ledger.access import Principal, Role
from ledger.checkpoints import SignedCheckpoint
from ledger.entities import Regulator
from ledger.errors import InvalidRequest, NotFound
from ledger.escrow.parties import ALL_DISTRICTS
from ledger.merkle_store import StoredTree
from ledger.money import JSON_SAFE_MAX
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


# --- checkpoints and proofs ---------------------------------------------------------------------

ProofPrincipal = Annotated[Principal, Depends(require(Role.REGULATOR, Role.BANK))]
Size = Annotated[int, Query(ge=0, le=JSON_SAFE_MAX)]
_CURSOR_TAG = "checkpoint"


@router.get(
    "/checkpoints",
    response_model=Page[CheckpointView],
    summary="Every signed checkpoint, oldest first, with its cosignatures",
    responses=responses(401, 403, 422),
)
def list_checkpoints(
    ledger: LedgerDep,
    caller: AuditPrincipal,
    session: ReadSession,
    cursor: Cursor = None,
    limit: Limit = pagination.DEFAULT_LIMIT,
) -> Any:
    """For banks, regulators and the operator: every checkpoint ever issued (none is deleted), in
    issue order. Keep the ones you fetch; `GET /v1/audit/proofs/consistency` then proves that each
    later one extends them, which is how a rewritten or forked history is caught. `witnessed` says
    whether the policy's quorum of witnesses cosigned it; the cosignatures are in `note`."""
    query = select(SignedCheckpoint).order_by(SignedCheckpoint.id)
    if cursor is not None:
        after, tag = pagination.decode(cursor)
        if tag != _CURSOR_TAG:
            raise InvalidRequest("the cursor is not one this service issued", field="cursor")
        query = query.where(SignedCheckpoint.id > after)
    rows = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page[CheckpointView](
        items=[proofs.view(session, ledger, row) for row in rows],
        next_cursor=pagination.encode(rows[-1].id, _CURSOR_TAG) if more else None,
    )


@router.get(
    "/checkpoints/latest",
    response_model=CheckpointView,
    summary="The latest signed checkpoint (public)",
    responses={
        **responses(404, 422),
        200: {
            "description": "The checkpoint as JSON, or (format=note) its signed note as text",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
    },
)
def latest_checkpoint(
    ledger: LedgerDep,
    session: ReadSession,
    fmt: Annotated[
        Literal["json", "note"],
        Query(alias="format", description="json (default) or note (the C2SP signed note text)"),
    ] = "json",
) -> Any:
    """Public, no token: anyone holding a receipt or a proof needs the log's latest signed tree
    head to check it against, and a checkpoint reveals nothing but a size and a hash. `format=note`
    answers the signed note itself (`text/plain`), ready for any C2SP signed-note tool."""
    latest = checkpoints.latest(session)
    if latest is None:
        raise NotFound("no checkpoint has been issued yet")
    found = proofs.view(session, ledger, latest)
    if fmt == "note":
        return PlainTextResponse(found.note, media_type="text/plain; charset=utf-8")
    return found


@router.post(
    "/checkpoints",
    response_model=CheckpointView,
    status_code=201,
    summary="Sign a checkpoint of the log as it is now",
    responses=responses(401, 403, 409, 422),
)
def request_checkpoint(regulator: RegulatorPrincipal, writer: WriterDep) -> Any:
    """For regulators: a fresh checkpoint with its own time, even if the log has not grown since
    the last one (the schedule and every settlement run issue them too). Fixing the tree now means
    anything the operator shows later must extend exactly this history."""

    def work(tx: Tx) -> CheckpointView:
        signed = checkpoints.issue(tx.session, tx.ctx.log, tx.key, reason="request", force=True)
        return proofs.view(tx.session, writer.ledger, signed)

    return writer.run(regulator, None, work, status=201)


class ConsistencyProof(BaseModel):
    """RFC 9162 consistency proof: the tree of `old_size` is a prefix of the tree of `new_size`."""

    old_size: int
    new_size: int
    old_root: str = Field(description="Root of the first old_size entries, base64")
    new_root: str = Field(description="Root of the first new_size entries, base64")
    proof: list[str] = Field(description="The proof's hashes, base64, in RFC 9162 order")
    old_checkpoint: str | None = Field(
        description="The signed note of the latest checkpoint of old_size, if one was issued"
    )
    new_checkpoint: str | None = Field(
        description="The signed note of the latest checkpoint of new_size, if one was issued"
    )


def _note_of_size(session: Session, size: int) -> str | None:
    row = session.scalars(
        select(SignedCheckpoint)
        .where(SignedCheckpoint.size == size)
        .order_by(SignedCheckpoint.id.desc())
        .limit(1)
    ).first()
    return None if row is None else proofs.served_note(session, row)


@router.get(
    "/proofs/consistency",
    response_model=ConsistencyProof,
    summary="Prove that one tree size extends another",
    responses=responses(401, 403, 422),
)
def consistency_proof(
    ledger: LedgerDep,
    caller: ProofPrincipal,
    session: ReadSession,
    old: Annotated[Size, Query(description="The smaller tree size (e.g. a checkpoint you hold)")],
    new: Annotated[Size, Query(description="The larger tree size, at most the log's size")],
) -> Any:
    """For banks and regulators: check `verify_consistency(old, new, old_root, new_root, proof)`
    (RFC 9162 2.1.4.2) with the roots of checkpoints you already hold, never only with the roots
    returned here. A log that rewrote or dropped anything below `old` cannot produce a valid one."""
    size = proofs.latest_size(session)
    if not 0 <= old <= new <= size:
        raise InvalidRequest(
            f"need 0 <= old <= new <= {size} (the log's size); got old={old}, new={new}",
            field="new" if old <= new else "old",
        )
    tree = StoredTree(session)
    return ConsistencyProof(
        old_size=old,
        new_size=new,
        old_root=b64(tree.root(old)),
        new_root=b64(tree.root(new)),
        proof=[b64(p) for p in tree.consistency_proof(old, new)],
        old_checkpoint=_note_of_size(session, old),
        new_checkpoint=_note_of_size(session, new),
    )


class InclusionProof(BaseModel):
    """RFC 9162 inclusion proof of one entry (by its leaf hash) in the tree of `tree_size`."""

    seq: int = Field(description="The entry's leaf index")
    tree_size: int
    leaf_hash: str = Field(description="The entry's hash, SHA-256(0x00 || body), hex")
    root: str = Field(description="Root of the tree of tree_size, base64")
    audit_path: list[str] = Field(description="The proof's hashes, base64")
    checkpoint: str | None = Field(
        description="The signed note of the latest checkpoint of tree_size, if one was issued"
    )


@router.get(
    "/proofs/inclusion",
    response_model=InclusionProof,
    summary="Prove that an entry is in the log",
    responses=responses(401, 403, 422),
)
def inclusion_proof(
    ledger: LedgerDep,
    caller: ProofPrincipal,
    session: ReadSession,
    seq: Annotated[Size, Query(description="The entry's seq (leaf index)")],
    size: Annotated[
        int | None,
        Query(
            ge=1,
            le=JSON_SAFE_MAX,
            description="Tree size; default the latest checkpoint's if it covers seq, else the "
            "log's size",
        ),
    ] = None,
) -> Any:
    """For banks and regulators, for any entry: the audit path from its leaf hash to the root of
    a tree size (best one a signed checkpoint covers), to check with `verify_inclusion` (RFC 9162
    2.1.3.2). The entry's body is not included: it may concern other tenants; the hash is enough
    to check an entry you hold, such as one named by a receipt."""
    log_size = proofs.latest_size(session)
    if size is None:
        latest = checkpoints.latest(session)
        size = latest.size if latest is not None and latest.size > seq else log_size
    if not 0 <= seq < size <= log_size:
        raise InvalidRequest(
            f"need 0 <= seq < size <= {log_size} (the log's size); got seq={seq}, size={size}",
            field="seq" if seq >= log_size else "size",
        )
    tree = StoredTree(session)
    return InclusionProof(
        seq=seq,
        tree_size=size,
        leaf_hash=tree([(0, seq)])[(0, seq)].hex(),
        root=b64(tree.root(size)),
        audit_path=[b64(p) for p in tree.inclusion_proof(seq, size)],
        checkpoint=_note_of_size(session, size),
    )

"""Proofs as the API serves them: checkpoints with their cosignatures, and inclusion bundles.

An inclusion bundle is one self-contained JSON file a parent can keep and check years later with
nothing but ``ledger.verifier`` (``escrow verify --proof FILE``)::

    {"format": "tuition-escrow/inclusion-proof/v1",
     "entry": {"seq": n, "body": "<canonical entry text>", "hash": "<hex leaf hash>"},
     "tree_size": N, "audit_path": ["<base64>", ...],
     "checkpoint": "<signed note: log signature(s), then witness cosignatures>",
     "log_keys": ["<verifier key>"], "witness_keys": ["<verifier key>"], "witness_quorum": q}

SHA-256(0x00 || body) is the hash; the audit path places it at leaf ``seq`` of the tree of size
``tree_size``, whose root the checkpoint signs. The keys in the file are a convenience: a careful
verifier pins the log key it got elsewhere (``escrow verify --proof FILE --log-key VKEY``).
"""

from __future__ import annotations

import base64
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ledger import checkpoints, rotation, verifier, witnesses
from ledger.checkpoints import SignedCheckpoint
from ledger.entities import Contract, Lesson, Parent, Refund, Student, TransferredContract
from ledger.entities import Receipt as BankReceipt
from ledger.errors import NotFound
from ledger.merkle_store import StoredTree
from ledger.models import LogEntry
from ledger.runtime import Ledger

BUNDLE_FORMAT = "tuition-escrow/inclusion-proof/v1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class CheckpointView(BaseModel):
    """A signed checkpoint of the log, as handed out (with every valid witness cosignature)."""

    id: int = Field(description="Issue order; checkpoints are never deleted")
    size: int = Field(description="Tree size: the checkpoint covers entries 0 .. size-1")
    root: str = Field(description="Merkle root of the first `size` entries, base64")
    issued_at: datetime
    reason: str = Field(examples=["schedule", "settlement", "request"])
    note: str = Field(
        description="The C2SP signed note: origin, size and root lines, a blank line, the log's "
        "signature line(s), then witness cosignature lines",
        examples=[
            "escrow.example/log\n5\nq0Zl...=\n\n\u2014 escrow.example/log Az3g...\n",
        ],
    )
    cosignatures: int = Field(description="Valid witness cosignatures in the note")
    witnessed: bool = Field(
        description="Whether at least the policy's quorum of distinct witnesses cosigned it"
    )


def served_note(session: Session, checkpoint: SignedCheckpoint) -> str:
    """The note with the log's signature line(s) and every valid stored cosignature."""
    return witnesses.served_note(session, checkpoint)


def view(session: Session, ledger: Ledger, checkpoint: SignedCheckpoint) -> CheckpointView:
    cosigned = witnesses.valid_cosignatures(session, checkpoint)
    holders = {c.key.holder for c in cosigned}
    return CheckpointView(
        id=checkpoint.id,
        size=checkpoint.size,
        root=b64(checkpoint.root),
        issued_at=checkpoint.issued_at,
        reason=checkpoint.reason,
        note=served_note(session, checkpoint),
        cosignatures=len(cosigned),
        witnessed=len(holders) >= witnesses.quorum(ledger.settings),
    )


class BundleEntry(BaseModel):
    seq: int = Field(description="The entry's position in the log: its Merkle leaf index")
    body: str = Field(description="The canonical (RFC 8785) entry text, exactly as hashed")
    hash: str = Field(description="SHA-256(0x00 || body), hex")


class InclusionBundle(BaseModel):
    """Everything needed to prove offline that one entry is in the log the checkpoint signs."""

    format: str = Field(examples=[BUNDLE_FORMAT])
    entry: BundleEntry
    tree_size: int
    audit_path: list[str] = Field(description="RFC 9162 inclusion proof, base64 hashes")
    checkpoint: str = Field(description="Signed note of a checkpoint of size `tree_size`")
    log_keys: list[str] = Field(description="C2SP verifier keys of the log that signed it")
    witness_keys: list[str] = Field(description="C2SP verifier keys of the active witnesses")
    witness_quorum: int = Field(description="Cosignatures needed for 'witnessed'")


def covering(ledger: Ledger, seq: int) -> int:
    """The id of the latest checkpoint, issuing a new one first if it does not cover ``seq``."""
    with ledger.readers() as session:
        last = checkpoints.latest(session)
        if last is not None and last.size > seq:
            return last.id
    with ledger.sessions.begin() as session:
        return checkpoints.issue(session, ledger.log, ledger.key, reason="request").id


def signing_log_keys(session: Session, ledger: Ledger, note: verifier.Note) -> list[str]:
    """The log's verifier keys that signed ``note``: the keys this process holds, else the
    rotation chain's (a checkpoint signed before a restart that loaded a newer key)."""
    held = [ledger.key, *(old for old, _ in ledger.key.retiring)]
    found = [
        k.verifier_key for k in held if note.signed_by(verifier.VerifierKey.parse(k.verifier_key))
    ]
    if found:
        return found
    chain = rotation.chain(session)
    if chain is None:
        return []
    return [p.key.encode() for p in chain.periods if note.signed_by(p.key)]


def inclusion_bundle(ledger: Ledger, seq: int) -> InclusionBundle:
    """The bundle for entry ``seq`` against the latest checkpoint (issued now if none covers it)."""
    checkpoint_id = covering(ledger, seq)
    with ledger.readers() as session:
        entry = session.get(LogEntry, seq)
        checkpoint = session.get(SignedCheckpoint, checkpoint_id)
        if entry is None or checkpoint is None:
            raise NotFound(f"no log entry {seq}", seq=seq)
        note_text = served_note(session, checkpoint)
        note = verifier.Note.parse(note_text)
        path = StoredTree(session).inclusion_proof(seq, checkpoint.size)
        return InclusionBundle(
            format=BUNDLE_FORMAT,
            entry=BundleEntry(
                seq=seq, body=bytes(entry.body).decode(), hash=bytes(entry.hash).hex()
            ),
            tree_size=checkpoint.size,
            audit_path=[b64(p) for p in path],
            checkpoint=note_text,
            log_keys=signing_log_keys(session, ledger, note),
            witness_keys=_witness_keys(session, checkpoint),
            witness_quorum=witnesses.quorum(ledger.settings),
        )


def _witness_keys(session: Session, checkpoint: SignedCheckpoint) -> list[str]:
    """The keys of the cosignatures in the note, then the other witness keys active now."""
    found = [c.key.verifier_key.encode() for c in witnesses.valid_cosignatures(session, checkpoint)]
    for period in witnesses.active_keys(session):
        if period.verifier_key.encode() not in found:
            found.append(period.verifier_key.encode())
    return found


def concerns_parent(session: Session, parent_id: str, seq: int) -> bool:
    """Whether entry ``seq`` is one of the parent's own: their registration, their students',
    their contracts' creation and payment, their lessons' report and decision, their refunds'
    steps, the bank receipts of their contracts, or their decline of a transfer."""
    mine = select(Contract.id).where(Contract.parent_id == parent_id)
    probes = [
        select(Parent.id).where(Parent.id == parent_id, Parent.registered_seq == seq),
        select(Student.id).where(Student.parent_id == parent_id, Student.registered_seq == seq),
        select(Contract.id).where(
            Contract.parent_id == parent_id,
            or_(Contract.created_seq == seq, Contract.paid_seq == seq),
        ),
        select(Lesson.id).where(
            Lesson.contract_id.in_(mine), or_(Lesson.reported_seq == seq, Lesson.decided_seq == seq)
        ),
        select(Refund.id).where(
            Refund.contract_id.in_(mine),
            or_(
                Refund.requested_seq == seq,
                Refund.decided_seq == seq,
                Refund.paid_seq == seq,
                Refund.overdue_seq == seq,
            ),
        ),
        select(BankReceipt.id).where(BankReceipt.contract_id.in_(mine), BankReceipt.seq == seq),
        select(TransferredContract.contract_id).where(
            TransferredContract.contract_id.in_(mine), TransferredContract.declined_seq == seq
        ),
    ]
    return any(session.execute(probe.limit(1)).first() is not None for probe in probes)


def latest_size(session: Session) -> int:
    """The log's size now (entries 0 .. size-1)."""
    last = session.execute(select(LogEntry.seq).order_by(LogEntry.seq.desc()).limit(1)).scalar()
    return 0 if last is None else last + 1

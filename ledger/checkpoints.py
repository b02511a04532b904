"""Signed checkpoints of the log: the tree size and root hash, signed by the log key.

A checkpoint is a C2SP tlog-checkpoint: a signed note whose body is the origin (the log's name),
the tree size in decimal and the base64 root hash. Once a bank or regulator holds one, the operator
can no longer rewrite or drop any entry below that size without the next consistency proof
failing. Checkpoints are issued on a schedule, at the end of every settlement run and on a
regulator's request; all are kept. The signing key is the log key (``ledger.keys``), whose C2SP
verifier key is published at ``/v1/audit/public-key``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import BigInteger, LargeBinary, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ledger import verifier
from ledger.keys import LogKey
from ledger.log import EventLog
from ledger.merkle_store import StoredTree
from ledger.models import Base, BigIntPK, UTCDateTime


class SignedCheckpoint(Base):
    """A checkpoint as issued: size, root and the signed note text (with every signature)."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, index=True)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    """The C2SP signed note: body, blank line, one signature line per log key."""
    reason: Mapped[str] = mapped_column(String(32))
    """Why it was issued: ``schedule``, ``settlement`` or ``request``."""
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @property
    def body(self) -> str:
        return verifier.Note.parse(self.note).body


REASONS = ("schedule", "settlement", "request")


def sign(key: LogKey | Sequence[LogKey], size: int, root: bytes) -> str:
    """The signed note of a checkpoint: the body and one signature line per log key given.

    Several keys sign during a key rotation's overlap (``ledger.rotation``): the new key first,
    then the retiring one, so verifiers that know either accept the checkpoint.
    """
    signers = [key] if isinstance(key, LogKey) else list(key)
    if not signers or len({k.name for k in signers}) != 1:
        raise ValueError("a checkpoint is signed by one or more keys of the same log")
    body = verifier.Checkpoint(signers[0].name, size, root).body()
    lines = tuple(verifier.NoteSignature(k.name, k.key_id, k.sign(body.encode())) for k in signers)
    return verifier.Note(body, lines).text()


def latest(session: Session) -> SignedCheckpoint | None:
    return session.scalars(
        select(SignedCheckpoint).order_by(SignedCheckpoint.id.desc()).limit(1)
    ).first()


def issue(
    session: Session, log: EventLog, key: LogKey, *, reason: str, force: bool = False
) -> SignedCheckpoint:
    """Sign the tree as it is now, under the log lock (so the size is a committed prefix).

    A scheduled or settlement checkpoint of a size already signed returns the existing one: a
    quiet log does not pile up identical checkpoints. A regulator's request (``force``) always
    gets a fresh one, with its own time.
    """
    if reason not in REASONS:
        raise ValueError(f"unknown checkpoint reason {reason!r}")
    head = log.lock(session)
    previous = latest(session)
    if previous is not None and previous.size == head.size and not force:
        return previous
    root = StoredTree(session).root(head.size)
    checkpoint = SignedCheckpoint(
        size=head.size,
        root=root,
        note=sign(key.signing_keys(log.clock.now()), head.size, root),
        reason=reason,
        issued_at=log.clock.now(),
    )
    session.add(checkpoint)
    session.flush()
    return checkpoint
